"""Migrations against a real server: scenario folders, refusals, locking, resuming."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import flue_models as fm
from flue_models.errors import (
    ForeignSchemaError,
    MigrationFailedError,
    MigrationFileError,
    MigrationLockError,
    SchemaLayoutError,
    SchemaTooNewError,
)
from flue_models.schema import (
    LAYOUT_VERSION,
    MigrationSet,
    migrate,
    new_migration_file,
    runner,
    schema_status,
)
from tests.command_line import run_cli
from tests.conftest import BUILTIN_MIGRATIONS
from tests.integration.models import Ticket

SCENARIOS = Path(__file__).parent / "scenarios"
ROOT = Path(__file__).parents[2]
#: The library's own migration (one file: the layout), as labels, and its version.
BUILTIN = BUILTIN_MIGRATIONS
LATEST = LAYOUT_VERSION


def scenario(name: str, set_name: str = "app") -> MigrationSet:
    return MigrationSet(set_name, SCENARIOS / name)


@pytest.fixture
async def bare(redis_url: str, protocol: int, key_prefix: str) -> AsyncIterator[fm.Database]:
    """A database whose prefix has not been migrated (nor its schema checked)."""
    db = await fm.connect(
        redis_url, key_prefix=key_prefix, protocol=protocol, migrate=False, check_schema=False
    )
    try:
        yield db
    finally:
        keys = [k async for k in db.client.scan_iter(match=db.keys.pattern())]
        if keys:
            await db.client.delete(*keys)
        await db.close()


async def dump(db: fm.Database) -> dict[bytes, tuple[bytes, object, bool]]:
    """Every key under the prefix with its type and content, to compare before and after.

    (Not DUMP: a hash table's serialized field order can change when a read makes Redis
    rehash, without any write.)
    """
    snapshot: dict[bytes, tuple[bytes, object, bool]] = {}
    async for key in db.client.scan_iter(match=db.keys.pattern()):
        kind = await db.client.type(key)
        content: object
        if kind == b"hash":
            content = sorted((await db.client.hgetall(key)).items())
        elif kind == b"zset":
            content = await db.client.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            content = await db.client.lrange(key, 0, -1)
        elif kind == b"set":
            content = sorted(await db.client.smembers(key))
        else:
            content = await db.client.get(key)
        snapshot[key] = (kind, content, await db.client.pttl(key) > 0)
    return snapshot


async def changes_since_save(db: fm.Database) -> int:
    """The server's count of writes since its last RDB save (it never saves here)."""
    info = await db.client.info("persistence")
    return int(info["rdb_changes_since_last_save"])


async def steps(db: fm.Database) -> list[str]:
    return [s.decode() for s in await db.client.lrange(db.keys.absolute("steps"), 0, -1)]


async def test_a_clean_chain_applies_in_order_and_records_each_file(bare: fm.Database) -> None:
    applied = await migrate(bare, [scenario("clean_chain")])
    assert [s.file.label for s in applied] == [
        *BUILTIN,
        "app/0001_first",
        "app/0002_second",
        "app/0003_third",
    ]
    assert await steps(bare) == ["1", "2", "3"]
    record = {
        k.decode(): v.decode() for k, v in (await bare.client.hgetall(bare.keys.meta)).items()
    }
    assert record["schema_version"] == str(LATEST)
    assert record["schema_version:app"] == "3"
    entry = json.loads(record["applied:app:0002"])
    assert entry["name"] == "second"
    assert len(entry["checksum"]) == 64
    assert entry["at"].endswith("+00:00")


async def test_a_second_run_on_an_up_to_date_store_writes_nothing(bare: fm.Database) -> None:
    await migrate(bare, [scenario("clean_chain")])
    before = await dump(bare)
    changes = await changes_since_save(bare)
    assert await migrate(bare, [scenario("clean_chain")]) == []
    assert await changes_since_save(bare) == changes  # the server counted no write at all
    assert await dump(bare) == before


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gap", "no file numbered 0002 before 0003_third.py"),
        ("duplicate", r"0001: \['0001_again.py', '0001_first.py'\]"),
        ("bad_name", "2_second.py"),
        ("no_up", "0002_forgot.py has no `async def up"),
    ],
)
async def test_malformed_folders_are_refused_naming_the_files(
    bare: fm.Database, name: str, message: str
) -> None:
    with pytest.raises(MigrationFileError, match=message):
        await migrate(bare, [scenario(name)])
    assert await dump(bare) == {}  # refused before anything was written


async def test_a_failing_step_stops_at_the_last_completed_file_and_a_rerun_resumes(
    bare: fm.Database,
) -> None:
    await migrate(bare)  # built-in set only: the store is versioned
    await Ticket.using(bare).save_many(
        [Ticket(id=f"t{i}", status="open", priority=i) for i in range(7)]
    )
    with pytest.raises(MigrationFailedError, match=r"app/0002_flaky failed.*stays at 1") as caught:
        await migrate(bare, [scenario("failing")])
    assert isinstance(caught.value.__cause__, RuntimeError)
    statuses = await schema_status(bare, [scenario("failing")])
    assert statuses[1].stored == 1
    assert [f.label for f in statuses[1].pending] == ["app/0002_flaky", "app/0003_third"]
    assert await bare.client.lrange(bare.keys.absolute("visited"), 0, -1) == [b"t0", b"t1", b"t2"]

    await bare.client.set(bare.keys.absolute("fixed"), "1")
    applied = await migrate(bare, [scenario("failing")])
    assert [s.file.label for s in applied] == ["app/0002_flaky", "app/0003_third"]
    visited = [v.decode() for v in await bare.client.lrange(bare.keys.absolute("visited"), 0, -1)]
    # The first batch ran twice (it failed before its position was kept); then the rest.
    assert visited == ["t0", "t1", "t2", "t0", "t1", "t2", "t3", "t4", "t5", "t6"]
    record = await bare.client.hkeys(bare.keys.meta)
    assert not [f for f in record if f.startswith(b"cursor:")]  # cleared once complete


async def test_an_application_set_runs_after_the_builtin_set_under_its_own_version(
    redis_url: str, key_prefix: str
) -> None:
    billing = scenario("app_set", "billing")
    async with fm.connect(redis_url, key_prefix=key_prefix, migrations=[billing]) as db:
        assert await steps(db) == ["billing-1"]
        statuses = await schema_status(db, [billing])
        assert [(s.name, s.stored, s.newest) for s in statuses] == [
            ("flue", LATEST, LATEST),
            ("billing", 1, 1),
        ]
        assert billing.files()[0].description == "create the billing marker"
        await db.client.delete(*[k async for k in db.client.scan_iter(match=db.keys.pattern())])


async def test_the_builtin_set_name_is_reserved(bare: fm.Database) -> None:
    with pytest.raises(fm.ConfigurationError, match="belongs to flue-models"):
        await migrate(bare, [MigrationSet("flue", SCENARIOS / "clean_chain")])


async def test_a_newer_schema_is_refused_and_every_key_is_left_untouched(bare: fm.Database) -> None:
    await migrate(bare, [scenario("clean_chain")])
    await bare.client.hset(bare.keys.meta, "schema_version", str(LATEST + 1))
    before = await dump(bare)
    too_new = rf"version {LATEST + 1}.*only up to {LATEST}.*upgrade flue-models"
    with pytest.raises(SchemaTooNewError, match=too_new):
        await migrate(bare, [scenario("clean_chain")])
    assert await dump(bare) == before
    with pytest.raises(SchemaTooNewError):
        await fm.connect(bare.url.url, key_prefix=bare.keys.prefix)


async def test_an_application_set_ahead_of_its_files_is_refused(bare: fm.Database) -> None:
    await migrate(bare, [scenario("clean_chain")])
    with pytest.raises(SchemaTooNewError, match=r"version 3 of migration set 'app'.*only up to 1"):
        await migrate(bare, [scenario("app_set")])


async def test_unversioned_data_is_refused_writing_nothing(bare: fm.Database) -> None:
    await bare.client.set(bare.keys.absolute("somebody-else"), "data")
    before = await dump(bare)
    with pytest.raises(ForeignSchemaError, match="somebody-else"):
        await migrate(bare)
    assert await dump(bare) == before


async def test_the_unversioned_check_escapes_glob_characters(
    redis_url: str, key_prefix: str
) -> None:
    tricky = f"{key_prefix}[x]*"
    async with fm.connect(
        redis_url, key_prefix=key_prefix + "x", migrate=False, check_schema=False
    ) as other:
        await other.client.set(other.keys.absolute("data"), "1")  # an unescaped glob matches
        async with fm.connect(redis_url, key_prefix=tricky) as db:
            assert await db.client.exists(db.keys.meta)
            await db.client.delete(db.keys.meta)
        await other.client.delete(other.keys.absolute("data"))


async def test_five_concurrent_migrators_run_each_step_exactly_once(
    redis_url: str, key_prefix: str
) -> None:
    databases = [
        await fm.connect(redis_url, key_prefix=key_prefix, migrate=False, check_schema=False)
        for _ in range(5)
    ]
    try:
        results = await asyncio.gather(*(migrate(db, [scenario("counting")]) for db in databases))
        assert sum(len(r) for r in results) == len(BUILTIN) + 2  # the flue file, app/0001, app/0002
        client = databases[0].client
        keys = databases[0].keys
        assert await client.get(keys.absolute("ups:1")) == b"1"
        assert await client.get(keys.absolute("ups:2")) == b"1"
        assert not await client.exists(keys.migration_lock)  # released
    finally:
        keys = [k async for k in databases[0].client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await databases[0].client.delete(*keys)
        for db in databases:
            await db.close()


async def test_a_held_lock_makes_others_wait_then_fail_naming_the_key(bare: fm.Database) -> None:
    lock_key = f"{bare.keys.meta}:lock"
    await bare.client.set(lock_key, "someone-else", px=60_000)
    with pytest.raises(MigrationLockError, match=lock_key):
        await migrate(bare, lock_wait=0.3)
    assert await bare.client.get(lock_key) == b"someone-else"  # not ours to release


async def test_a_changed_applied_file_is_reported_and_refused_unless_forced(
    bare: fm.Database, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_first.py").write_text((SCENARIOS / "clean_chain" / "0001_first.py").read_text())
    app = MigrationSet("app", folder)
    await migrate(bare, [app])
    (folder / "0001_first.py").write_text(
        (SCENARIOS / "clean_chain" / "0001_first.py").read_text() + "\n# edited\n"
    )
    statuses = await schema_status(bare, [app])
    assert statuses[1].drift == ["app/0001_first"]
    with pytest.raises(MigrationFileError, match="app/0001_first"):
        await migrate(bare, [app])
    assert await migrate(bare, [app], force=True) == []


def test_a_file_is_loaded_once_and_again_when_its_text_changes(tmp_path: Path) -> None:
    """Every connect() lists a set's files; a file's text runs once per process, kept by
    its digest, so an edited file (a new digest) is loaded again, never served stale."""
    folder = tmp_path / "m"
    folder.mkdir()
    body = "async def up(ctx):\n    return None\n"
    path = folder / "0001_first.py"
    path.write_text(f'DESCRIPTION = "one"\n{body}')
    app = MigrationSet("app", folder)
    (first,) = app.files()
    (again,) = app.files()
    assert again.module is first.module  # not run again
    path.write_text(f'DESCRIPTION = "two"\n{body}')
    (edited,) = app.files()
    assert edited.description == "two"
    assert edited.module is not first.module
    assert edited.checksum != first.checksum


async def test_dry_run_reports_and_writes_nothing(bare: fm.Database) -> None:
    planned = await migrate(bare, [scenario("clean_chain")], dry_run=True)
    assert len(planned) == len(BUILTIN) + 3
    assert await dump(bare) == {}


async def test_migrating_down_runs_the_downs_newest_first(bare: fm.Database) -> None:
    await migrate(bare, [scenario("clean_chain")])
    reverted = await migrate(bare, [scenario("clean_chain")], to=1)
    assert [(s.direction, s.file.number) for s in reverted] == [("down", 3), ("down", 2)]
    assert await steps(bare) == ["1"]
    statuses = await schema_status(bare, [scenario("clean_chain")])
    assert statuses[1].stored == 1
    assert not await bare.client.hexists(bare.keys.meta, "applied:app:0002")


async def test_rebuild_indexes_restores_exact_indexes(bare: fm.Database, tmp_path: Path) -> None:
    await migrate(bare)
    tickets = Ticket.using(bare)
    await tickets.save_many([Ticket(status="open", priority=i, email=f"{i}@x") for i in range(20)])
    pattern = bare.keys.collection_pattern("it_ticket")
    await bare.client.delete(
        *[k async for k in bare.client.scan_iter(match=pattern) if b":idx:" in k]
    )
    await bare.client.zadd(bare.keys.index("it_ticket", "status", b"gone"), {"ghost": 1})
    assert not (await fm.verify_collection(Ticket, db=bare)).ok
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_rebuild.py").write_text(
        "from tests.integration.models import Ticket\n\n\n"
        "async def up(ctx):\n    await ctx.rebuild_indexes(Ticket)\n"
    )
    await migrate(bare, [MigrationSet("app", folder)])
    report = await fm.verify_collection(Ticket, db=bare)
    assert report.ok, report.drift
    assert report.records == 20


def test_cli_new_then_migrate_then_noop_then_an_older_install_is_refused(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    created = run_cli("migrations", "new", "add_priority", "--dir", str(folder))
    assert created.returncode == 0, created.stderr
    assert (folder / "0001_add_priority.py").is_file()
    second = new_migration_file(folder, "backfill")
    assert second.name == "0002_backfill.py"

    common = ["--url", redis_url, "--prefix", key_prefix]
    first = run_cli("migrate", *common, "--dir", str(folder))
    assert first.returncode == 0, first.stderr
    assert "applied app/0001_add_priority" in first.stdout
    assert "applied app/0002_backfill" in first.stdout
    again = run_cli("migrate", *common, "--dir", str(folder))
    assert again.returncode == 0
    assert again.stdout.strip() == f"up to date: flue at {LATEST}, app at 2"

    second.unlink()  # an install that knows fewer migrations
    older = run_cli("migrate", *common, "--dir", str(folder))
    assert older.returncode == 1  # a runtime error
    assert "version 2" in older.stderr
    assert "upgrade flue-models" in older.stderr
    status = run_cli("migrations", "status", *common, "--dir", str(folder))
    assert "app: stored version 2, newest file 1" in status.stdout
    assert status.returncode == 1
    assert "upgrade flue-models" in status.stderr


def test_cli_dry_run_and_bad_names(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    dry = run_cli("migrate", "--url", redis_url, "--prefix", key_prefix, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would apply flue/{LATEST:04d}_layout" in dry.stdout
    bad = run_cli("migrations", "new", "Add-Priority", "--dir", str(tmp_path))
    assert bad.returncode == 2  # a usage error, reported by the argument parser
    assert "lowercase" in bad.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_builtin_migrations_and_the_dashboard_ship_in_the_wheel(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("flue_models-*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    for name in ("web/templates/run.html", "web/static/live.js", "web/static/dashboard.css"):
        assert f"flue_models/{name}" in shipped  # the dashboard's files are in the wheel

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    # The dependencies come from the test environment, not from the network.
    site = next((venv / "lib").glob("python3.*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(ours) + "\n")

    elsewhere = tmp_path / "elsewhere"  # no migrations/ folder around
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run(
        [str(venv / "bin" / "flue-models"), "migrate", "--url", redis_url, "--prefix", key_prefix],
        capture_output=True, text=True, timeout=120, check=False, cwd=elsewhere, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"applied flue/{LATEST:04d}_layout" in result.stdout
    located = subprocess.run(
        [str(python), "-c", "from flue_models.schema import builtin_directory as b; print(b())"],
        capture_output=True, text=True, timeout=60, check=True, cwd=elsewhere, env=env,
    )  # fmt: skip
    assert str(venv) in located.stdout


@pytest.mark.parametrize(
    ("field", "value", "error", "named"),
    [
        ("schema_version", "two", fm.errors.ForeignSchemaError, "'two'"),
        ("schema_version", "-1", fm.errors.ForeignSchemaError, "'-1'"),
        ("format_version", "1", fm.errors.ForeignSchemaError, "format_version"),  # the TS adapter's
    ],
    ids=["not-a-number", "negative", "foreign-stamp"],
)
async def test_a_stamp_this_library_did_not_write_is_refused_untouched(
    bare: fm.Database, field: str, value: str, error: type[fm.SchemaError], named: str
) -> None:
    await bare.client.hset(bare.keys.meta, field, value)
    await bare.client.set(bare.keys.absolute("session:abc"), "their data")
    before = await dump(bare)
    for attempt in (
        lambda: migrate(bare),
        lambda: migrate(bare, dry_run=True),
        lambda: schema_status(bare),
        lambda: fm.connect(bare.url.url, key_prefix=bare.keys.prefix),
        lambda: fm.connect(bare.url.url, key_prefix=bare.keys.prefix, migrate=False),
    ):
        with pytest.raises(error) as caught:
            await attempt()
        assert bare.keys.meta in str(caught.value)
        assert named in str(caught.value)
    assert await dump(bare) == before


async def test_a_schema_record_of_the_wrong_type_is_foreign(bare: fm.Database) -> None:
    await bare.client.set(bare.keys.meta, "v1")
    with pytest.raises(fm.errors.ForeignSchemaError, match="a string"):
        await migrate(bare)


async def test_connect_without_migrating_still_checks_the_record(bare: fm.Database) -> None:
    url, prefix = bare.url.url, bare.keys.prefix
    with pytest.raises(fm.errors.SchemaMissingError, match="run `flue-models migrate`"):
        await fm.connect(url, key_prefix=prefix, migrate=False)
    assert [k async for k in bare.client.scan_iter(match=bare.keys.pattern())] == []
    await migrate(bare)
    async with fm.connect(url, key_prefix=prefix, migrate=False) as db:  # stamped: fine
        assert await db.client.hget(db.keys.meta, "schema_version") == str(LATEST).encode()
    await bare.client.hset(bare.keys.meta, "schema_version", str(LATEST + 1))
    with pytest.raises(SchemaTooNewError):
        await fm.connect(url, key_prefix=prefix, migrate=False)


async def test_the_unversioned_check_is_decided_under_the_lock(
    bare: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process stamps the prefix and writes data right after our first read of
    the record: we must then see its record, not refuse its data as unversioned (the
    check used to read EXISTS meta, then SCAN, outside the lock)."""
    read_record = runner.read_record
    raced = False

    async def then_another_process(db: fm.Database) -> dict[str, str]:
        nonlocal raced
        record = await read_record(db)
        if not raced:
            raced = True
            async with fm.connect(db.url.url, key_prefix=db.keys.prefix) as other:
                await other.client.set(db.keys.absolute("{session:0}:written-by-other"), "x")
        return record

    monkeypatch.setattr(runner, "read_record", then_another_process)
    assert await migrate(bare) == []  # the other process applied everything meanwhile
    assert raced


def test_the_builtin_set_is_one_file_numbered_by_the_layout_version() -> None:
    files = MigrationSet.builtin().files()
    assert [(f.number, f.name) for f in files] == [(LAYOUT_VERSION, "layout")]
    assert [f"flue/{LAYOUT_VERSION:04d}_layout"] == BUILTIN


@pytest.mark.parametrize("stored", [1, 4, LAYOUT_VERSION - 1])
async def test_a_store_of_an_older_prerelease_layout_is_refused_before_any_write(
    bare: fm.Database, stored: int
) -> None:
    await migrate(bare)
    await Ticket.using(bare).save(Ticket(id="t-1", status="open", priority=1))
    await bare.client.hset(bare.keys.meta, "schema_version", str(stored))
    before = await dump(bare)
    changes = await changes_since_save(bare)
    url, prefix = bare.url.url, bare.keys.prefix
    for attempt in (
        lambda: migrate(bare),
        lambda: migrate(bare, dry_run=True),
        lambda: fm.connect(url, key_prefix=prefix),
        lambda: fm.connect(url, key_prefix=prefix, migrate=False),
    ):
        with pytest.raises(SchemaLayoutError, match=rf"pre-release layout {stored};.*{LATEST}"):
            await attempt()
    assert await changes_since_save(bare) == changes  # the server counted no write at all
    assert await dump(bare) == before


async def test_entries_of_the_numbered_files_of_before_are_history_in_a_current_store(
    bare: fm.Database,
) -> None:
    """A store at today's layout version that also records files of the built-in set's
    numbered past (``applied:flue:0001``...) is accepted: nothing to apply, no drift."""
    await migrate(bare)
    old = {"name": "initial", "checksum": "0" * 64, "at": "2026-11-01T00:00:00+00:00"}
    await bare.client.hset(bare.keys.meta, "applied:flue:0001", json.dumps(old))
    before = await dump(bare)
    assert await migrate(bare) == []
    assert await dump(bare) == before
    (status,) = await schema_status(bare)
    assert (status.stored, status.newest, status.pending, status.drift) == (LATEST, LATEST, [], [])
    async with fm.connect(bare.url.url, key_prefix=bare.keys.prefix) as db:
        await Ticket.using(db).save(Ticket(id="t-1", status="open", priority=1))
        assert (await Ticket.using(db).get("t-1")) is not None


async def test_the_builtin_layout_file_edited_in_place_is_no_drift(
    bare: fm.Database,
) -> None:
    """Until the first release the layout file changes in place: its number names the
    layout, so another checksum on record is not drift (an application file's is)."""
    await migrate(bare)
    field = f"applied:flue:{LATEST:04d}"
    entry = json.loads(await bare.client.hget(bare.keys.meta, field))
    await bare.client.hset(bare.keys.meta, field, json.dumps({**entry, "checksum": "f" * 64}))
    (status,) = await schema_status(bare)
    assert status.drift == []
    assert await migrate(bare) == []
