"""Lua scripts by EVALSHA (EVAL after NOSCRIPT), and batches that never fail silently."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import pytest

import flue_models as fm
from flue_models.errors import ConfigurationError
from flue_models.model.codec import EPOCH, codec_for, epoch_score
from flue_models.model.spec import format_score
from flue_models.slots import slot_of
from tests.integration.roundtrips import on_cluster

LUA = Path(__file__).parent / "lua"


async def test_script_runs_by_evalsha_and_survives_script_flush(db: fm.Database) -> None:
    db.scripts.add_directory(LUA)
    counter = db.keys.absolute("counter")
    assert await db.scripts.call("bump", keys=[counter], args=[2]) == 2
    script = db.scripts.get("bump")
    if not on_cluster(db):  # (on a cluster, EVAL caches it on the key's node alone)
        assert await db.client.script_exists(script.sha) == [True]

    await db.client.script_flush()
    assert await db.client.script_exists(script.sha) == [False]
    assert await db.scripts.call("bump", keys=[counter], args=[3]) == 5  # sent with EVAL
    if not on_cluster(db):
        assert await db.client.script_exists(script.sha) == [True]
    assert await db.scripts.call("bump", keys=[counter], args=[1]) == 6


async def test_script_is_registered_once_per_database(db: fm.Database) -> None:
    db.scripts.add_directory(LUA)
    assert db.scripts.get("bump") is db.scripts.get("bump")


async def test_unknown_script_names_the_folders(db: fm.Database) -> None:
    with pytest.raises(ConfigurationError, match="no_such_script"):
        db.scripts.get("no_such_script")


async def test_batch_returns_every_reply_in_order(db: fm.Database) -> None:
    key = db.keys.absolute("n")
    replies = await db.run_batch([("SET", key, "1"), ("INCR", key), ("GET", key)])
    assert replies == [True, 2, b"2"]


@pytest.mark.parametrize("atomic", [False, True])
async def test_batch_raises_on_the_first_error_naming_position_and_command(
    db: fm.Database, atomic: bool
) -> None:
    key = db.keys.absolute("{s}")  # one hash tag: a MULTI may touch one slot only
    with pytest.raises(fm.errors.BatchCommandError, match=r"Command 1 .*INCR") as caught:
        await db.run_batch(
            [("SET", key, "text"), ("INCR", key), ("SET", f"{key}2", "after")], atomic=atomic
        )
    error = caught.value
    assert error.position == 1
    assert error.command == "INCR"
    assert len(error.results) == 3
    assert isinstance(error.results[1], Exception)
    # The commands around the failure were sent: the caller is told, not left guessing.
    assert await db.client.get(f"{key}2") == b"after"


async def test_the_slot_check_refuses_a_cross_slot_multi_or_script_before_sending(
    db: fm.Database,
) -> None:
    assert db.scripts.check_slots  # the suite runs with FLUE_CHECK_SLOTS=1
    a, b = db.keys.absolute("{a}"), db.keys.absolute("{b}")
    assert slot_of(a) != slot_of(b)
    with pytest.raises(fm.ConfigurationError, match="MULTI") as caught:
        await db.run_batch([("SET", a, "1"), ("DEL", "x", b)], atomic=True)
    assert all(key in str(caught.value) for key in (a, "x", b))  # each key, named
    with pytest.raises(fm.ConfigurationError, match="'lock_release'"):
        await db.scripts.call("lock_release", keys=[a, b], args=["owner"])
    assert await db.client.exists(a, b) == 0  # nothing was sent
    # Keys of one tag pass; a batch that is not atomic is not one call on a cluster.
    assert await db.run_batch([("SET", a, "1"), ("GET", f"{a}:2")], atomic=True) == [True, None]
    assert await db.run_batch([("SET", b, "2"), ("GET", a)]) == [True, b"1"]


async def test_a_script_without_flags_is_refused_naming_the_file(
    db: fm.Database, tmp_path: Path
) -> None:
    (tmp_path / "bare.lua").write_text("return 1\n")
    db.scripts.add_directory(tmp_path)
    with pytest.raises(ConfigurationError, match="#!lua"):
        await db.scripts.call("bare")


async def test_every_script_of_the_package_declares_its_flags() -> None:
    from flue_models.scripts import SCRIPTS_DIR, read_script

    for path in sorted(SCRIPTS_DIR.glob("*.lua")):
        if path.name.startswith("_"):
            continue  # the shared check-phase helpers, inserted into write scripts
        text = read_script(path)
        first = text.splitlines()[0]
        assert first in ("#!lua", "#!lua flags=no-writes"), path.name
        assert "allow-oom" not in first
        if first == "#!lua":
            body = path.read_text().partition("\n")[2]
            assert re.search(r"flue_(expect|wrong)\(", body), path.name  # has a check phase


async def test_each_script_gets_exactly_the_helpers_it_calls() -> None:
    from flue_models.scripts import SCRIPTS_DIR, check_helpers, helpers_for, read_script

    helpers = check_helpers()
    assert list(helpers) == ["flue_integer", "flue_wrong", "flue_expect", "flue_at", "flue_now"]
    assert re.findall(r"local function (flue_\w+)", helpers_for("flue_now()")) == [
        "flue_at",
        "flue_now",
    ]  # with what it calls, defined before it
    assert helpers_for("return 1") == ""
    for path in sorted(SCRIPTS_DIR.glob("*.lua")):
        if path.name.startswith("_"):
            continue
        text = read_script(path)
        defined = re.findall(r"^local function (flue_\w+)", text, re.MULTILINE)
        calls = re.sub(r"local function flue_\w+\(", "", text)
        called = set(re.findall(r"\b(flue_\w+)\(", calls))
        assert set(defined) == called, path.name  # nothing missing, nothing unused
        assert len(defined) == len(set(defined)), path.name


async def test_the_scripts_clock_writes_a_time_as_python_encodes_it(db: fm.Database) -> None:
    """flue_at (the scripts' clock) gives a time's ISO text, score and _owned text exactly
    as the Python side encodes that datetime: at the edges of days, months, leap years
    and centuries, at each number of trailing zeros, and at times drawn over 1970-2200."""
    from flue_models.scripts import helpers_for

    body = "local out = {}\nfor i = 1, #ARGV do\n"
    body += "  local micros, iso, score, shown = flue_at(tonumber(ARGV[i]))\n"
    body += "  out[#out + 1] = {string.format('%d', micros), iso, score, shown}\nend\nreturn out\n"
    script = "#!lua flags=no-writes\n" + helpers_for(body) + body
    day = 86_400_000_000
    edges = [0, 1, 999_999, 1_000_000, day - 1, day, 951_782_400_000_000]  # 2000-02-29
    edges += [4_107_542_400_000_000 - 1, 4_107_542_400_000_000]  # 2100-03-01 (not leap)
    edges += [1_796_684_431_032_000 + frac for frac in (0, 5, 50, 500, 120, 7, 953, 100)]
    rng = random.Random(20261207)
    drawn = [rng.randrange(0, 7_258_118_400_000_000) for _ in range(2_000)]  # to 2200
    micros = edges + drawn
    replies = await db.client.execute_command("EVAL", script, 0, *micros)
    encode = codec_for("updated_at", dt.datetime).encode
    for value, (back, iso, score, shown) in zip(micros, replies, strict=True):
        when = EPOCH + dt.timedelta(microseconds=value)
        assert (int(back), iso) == (value, encode(when)), value
        assert float(score) == epoch_score(when), value
        assert shown.decode() == format_score(epoch_score(when)), value
