"""Write scripts check every key they will write before their first write.

Each test plants something the library did not write at one position a script writes,
runs the operation, and asserts that it raised a typed error naming the key and that the
store is exactly as it was (every key, its type and its contents).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import flue_models as fm
from flue_models.keys import KeySpace, encode_segment
from flue_models.model.writes import plan_save, script_arguments
from flue_models.replies import reply_text
from flue_models.state.submission import Submission
from tests.conftest import RedisServers
from tests.integration.models import Ticket


async def snapshot(db: fm.Database) -> dict[str, tuple[str, Any]]:
    """Every key under the prefix with its type and contents."""
    found: dict[str, tuple[str, Any]] = {}
    async for raw in db.client.scan_iter(match=db.keys.pattern()):
        key = reply_text(raw)
        kind = reply_text(await db.client.type(key))
        if kind == "string":
            value: Any = await db.client.get(key)
        elif kind == "hash":
            value = await db.client.hgetall(key)
        elif kind == "zset":
            value = await db.client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await db.client.lrange(key, 0, -1)
        elif kind == "stream":
            value = await db.client.xrange(key)
        else:
            value = await db.client.smembers(key)
        found[key] = (kind, value)
    return found


async def refused_without_a_trace(
    db: fm.Database,
    action: Callable[[], Awaitable[Any]],
    error: type[fm.CorruptDataError],
    key: str,
) -> fm.CorruptDataError:
    before = await snapshot(db)
    with pytest.raises(error) as caught:
        await action()
    assert caught.value.key == key  # type: ignore[attr-defined]
    assert key in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert await snapshot(db) == before
    return caught.value


async def test_a_version_counter_of_the_wrong_type(db: fm.Database) -> None:
    counter = db.keys.version_counter("it_ticket")
    await db.client.hset(counter, "x", "1")
    error = await refused_without_a_trace(
        db, Ticket(status="open", priority=1).save, fm.CorruptDataError, counter
    )
    assert "is a hash, where flue-models keeps a string" in str(error)


async def test_a_version_counter_that_is_not_a_number(db: fm.Database) -> None:
    counter = db.keys.version_counter("it_ticket")
    await db.client.set(counter, "many")
    await refused_without_a_trace(
        db, Ticket(status="open", priority=1).save, fm.CorruptDataError, counter
    )


async def test_a_record_key_of_the_wrong_type(db: fm.Database) -> None:
    key = db.keys.record("it_ticket", "t-1")
    await db.client.set(key, "not a hash")
    await refused_without_a_trace(
        db, Ticket(id="t-1", status="open", priority=1).save, fm.CorruptDataError, key
    )


async def test_a_stored_version_that_is_not_a_number(db: fm.Database) -> None:
    copy = await Ticket(id="t-1", status="open", priority=1).save()
    key = db.keys.record("it_ticket", "t-1")
    await db.client.hset(key, "version", "seven")
    await refused_without_a_trace(
        db, lambda: copy.update(status="closed"), fm.CorruptDataError, key
    )


async def test_an_index_to_add_to_of_the_wrong_type(db: fm.Database) -> None:
    index = db.keys.index("it_ticket", "status", b"open")
    await db.client.set(index, "not a sorted set")
    await refused_without_a_trace(
        db, Ticket(status="open", priority=1).save, fm.CorruptDataError, index
    )


async def test_an_index_of_the_wrong_type_named_by_a_later_record_of_a_batch(
    db: fm.Database,
) -> None:
    # The records of a batch share their index sets, each checked once per call: a set
    # only the last record names is checked too.
    index = db.keys.index("it_ticket", "status", b"late")
    await db.client.set(index, "not a sorted set")
    batch = [Ticket(id=f"t-{n}", status="open", priority=n) for n in range(3)]
    batch.append(Ticket(id="t-3", status="late", priority=3))
    await refused_without_a_trace(db, lambda: Ticket.save_many(batch), fm.CorruptDataError, index)


async def test_an_index_to_remove_from_of_the_wrong_type(db: fm.Database) -> None:
    ticket = await Ticket(id="t-1", status="open", priority=1).save()
    index = db.keys.index("it_ticket", "status", b"open")
    await db.client.delete(index)
    await db.client.set(index, "not a sorted set")
    await refused_without_a_trace(
        db, lambda: ticket.update(status="closed"), fm.CorruptDataError, index
    )


async def test_a_unique_claim_hash_of_the_wrong_type(db: fm.Database) -> None:
    unique = db.keys.unique("it_ticket", "email")
    await db.client.set(unique, "not a hash")
    await refused_without_a_trace(
        db,
        Ticket(status="open", priority=1, email="a@b.c").save,
        fm.CorruptDataError,
        unique,
    )


async def test_an_owned_list_of_the_wrong_type(db: fm.Database) -> None:
    entries = fm.Session.owned_keys(db.keys, "s-1")[0]
    await db.client.hset(entries, "x", "1")
    message = fm.MessageEntry(id="m1", role="user", content="hi")
    await refused_without_a_trace(
        db, lambda: fm.Session.save_snapshot("s-1", [message]), fm.CorruptDataError, entries
    )


async def test_a_session_whose_entries_or_counter_are_corrupt(db: fm.Database) -> None:
    session = await fm.Session.open("s-1")
    message = fm.MessageEntry(id="m1", role="user", content="hi")
    key = db.keys.session("s-1").row
    await db.client.hset(key, "entry_count", "lots")
    await refused_without_a_trace(db, lambda: session.append(message), fm.CorruptDataError, key)
    await db.client.hset(key, "entry_count", "0")
    entries = fm.Session.owned_keys(db.keys, "s-1")[0]
    await db.client.set(entries, "not a list")
    await refused_without_a_trace(db, lambda: session.append(message), fm.CorruptDataError, entries)


async def test_a_stream_whose_metadata_was_made_again_refuses_appends(db: fm.Database) -> None:
    stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/again")
    await stream.create()
    await stream.append_many([{"n": 1}, {"n": 2}])
    meta = db.keys.stream("runs/again").meta
    await db.client.delete(meta)  # the events stay: the next seq would go backwards
    await stream.create()
    await refused_without_a_trace(db, lambda: stream.append({"n": 3}), fm.CorruptDataError, meta)


async def test_stream_keys_of_the_wrong_type(db: fm.Database) -> None:
    stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/typed")
    await stream.create()
    keys = db.keys.stream("runs/typed")
    await db.client.set(keys.events, "not a stream")
    await refused_without_a_trace(
        db, lambda: stream.append({"n": 1}), fm.CorruptDataError, keys.events
    )
    await refused_without_a_trace(db, stream.close, fm.CorruptDataError, keys.events)
    await db.client.delete(keys.events)
    await db.client.hset(keys.meta, "seq", "x")
    await refused_without_a_trace(
        db, lambda: stream.append({"n": 1}), fm.CorruptDataError, keys.meta
    )


async def test_a_journal_of_the_wrong_type(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "worker")
    assert attempt is not None
    journal = db.keys.journal("p-1", "s-1")
    await db.client.set(journal, "not a hash")
    await refused_without_a_trace(
        db, lambda: Submission.journal_begin(attempt), fm.CorruptDataError, journal
    )


async def test_any_other_script_failure_is_a_script_error(db: fm.Database) -> None:
    with pytest.raises(fm.errors.ScriptError, match="'save'") as caught:
        await db.scripts.call("save", keys=[], args=["not a head"])
    assert caught.value.__cause__ is not None  # redis-py's error, chained


@pytest.mark.parametrize(
    "malform",
    [
        lambda keys, args: (keys, args[:1]),  # a head, nothing after it
        lambda keys, args: (keys, [args[0][:5], *args[1:]]),  # a head cut short
        lambda keys, args: (keys, args[:-1]),  # one value short
        lambda keys, args: (keys, [*args, b"more"]),  # one value too many
        lambda keys, args: (keys[:-1], args),  # one key short
        lambda keys, args: ([*keys, keys[-1]], args),  # one key too many
    ],
    ids=["no values", "short head", "value short", "value extra", "key short", "key extra"],
)
async def test_a_save_call_its_heads_do_not_account_for_writes_nothing(
    db: fm.Database, malform: Callable[[list[str], list[Any]], tuple[list[str], list[Any]]]
) -> None:
    await Ticket(id="t-0", status="open", priority=1).save()
    ticket = Ticket(id="t-1", status="open", priority=2)
    keys, args = script_arguments(
        db.keys.version_counter("it_ticket"), [plan_save(ticket, db.keys)]
    )
    before = await snapshot(db)
    bad_keys, bad_args = malform(keys, args)
    with pytest.raises(fm.errors.ScriptError, match="'save'"):
        await db.scripts.call("save", keys=bad_keys, args=bad_args)
    assert await snapshot(db) == before
    assert await db.scripts.call("save", keys=keys, args=args) == [b"ok", 2, 0]


@pytest.mark.parametrize(
    ("count", "n_elements", "extra"),
    [("2", "1", []), ("1", "2", []), ("1", "1", [b"more"])],
    ids=["an entry short", "an element short", "an argument extra"],
)
async def test_a_session_append_its_entries_do_not_account_for_writes_nothing(
    db: fm.Database, count: str, n_elements: str, extra: list[bytes]
) -> None:
    session = await fm.Session.open("s-1")
    own_keys, index_keys, template = session._index_plan(db)
    head = ["s-1", "m1", count, "=", "", template, 0, 0]
    entry = ["m1", "", "", -1, n_elements, b'E{"id":"m1"}']
    before = await snapshot(db)
    with pytest.raises(fm.errors.ScriptError, match="'session_append'"):
        await db.scripts.call(
            "session_append", keys=[*own_keys, *index_keys], args=[*head, *entry, *extra]
        )
    assert await snapshot(db) == before
    head[2], entry[4] = "1", "1"
    reply = await db.scripts.call(
        "session_append", keys=[*own_keys, *index_keys], args=[*head, *entry]
    )
    assert reply[:2] == [b"ok", 1]


def test_key_names_never_contain_a_space() -> None:
    # The refusals are parsed on spaces; every key segment a user supplies is base64url.
    assert " " not in KeySpace("p").record("t", "a b") + encode_segment("x y")


async def test_writes_are_refused_up_front_when_the_server_is_out_of_memory(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    server = redis_servers.start()  # its own, so filling it up disturbs no other test
    try:
        async with fm.connect(server.url, key_prefix=key_prefix) as db:
            ticket = await Ticket(status="open", priority=1).save()
            session = await fm.Session.open("s-1")
            ballast = 4 * 1024 * 1024
            await db.client.set(db.keys.absolute("ballast"), "x" * ballast)
            # Over it by the ballast alone: the server may give back memory it held
            # meanwhile (the query buffer the ballast came in), never the ballast.
            await db.client.config_set("maxmemory", ballast // 2)
            before = await snapshot(db)
            message = fm.MessageEntry(id="m1", role="user", content="hi")
            for action in (
                lambda: ticket.update(status="closed"),
                Ticket(status="new", priority=2).save,
                lambda: fm.Session.save_snapshot("s-1", [message]),  # its first write: DEL
                lambda: session.append(message),
                ticket.delete,
            ):
                with pytest.raises(fm.errors.OutOfMemoryError, match="nothing was written"):
                    await action()
            assert await snapshot(db) == before
            await db.client.config_set("maxmemory", 0)
    finally:
        server.kill()


async def test_save_many_refuses_two_copies_of_one_record(db: fm.Database) -> None:
    ticket = await Ticket(id="t-1", status="open", priority=1).save()
    first, second = await Ticket.get_many(["t-1", "t-1"])
    assert first is not None
    assert second is not None
    first.status, second.priority = "closed", 9  # both pass one version check
    others = [Ticket(status="open", priority=p) for p in range(600)]  # spans two batches
    before = await snapshot(db)
    with pytest.raises(fm.ConfigurationError, match="'t-1' twice"):
        await Ticket.save_many([first, *others, second])
    assert await snapshot(db) == before
    assert (await Ticket.get("t-1")) == ticket


async def test_the_remaining_positions_of_the_other_scripts(db: fm.Database) -> None:
    """The keys not covered above: the session's id index, a stream's metadata and
    idempotency hash, a bucket's set of session deletions, and the migration lock the
    schema record is fenced on."""
    session = await fm.Session.open("s-2")
    ids = fm.Session.owned_keys(db.keys, "s-2")[1]
    await db.client.set(ids, "not a hash")
    message = fm.MessageEntry(id="m1", role="user", content="hi")
    await refused_without_a_trace(db, lambda: session.append(message), fm.CorruptDataError, ids)
    pair = [message, fm.MessageEntry(id="m2", role="user", content="and")]  # the full checks
    await refused_without_a_trace(db, lambda: session.append_many(pair), fm.CorruptDataError, ids)

    stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/keys")
    keys = db.keys.stream("runs/keys")
    await db.client.set(keys.meta, "not a hash")
    for action in (stream.create, stream.close, lambda: stream.trim(1)):
        await refused_without_a_trace(db, action, fm.CorruptDataError, keys.meta)
    await db.client.delete(keys.meta)
    await stream.create()
    await db.client.set(keys.once, "not a hash")
    await refused_without_a_trace(
        db, lambda: stream.append_once("k", {"n": 1}), fm.CorruptDataError, keys.once
    )

    own = db.keys.session_submissions("s-3")
    await db.client.set(own.deletions, "not a set")
    await refused_without_a_trace(
        db, lambda: Submission.delete_session("s-3"), fm.CorruptDataError, own.deletions
    )
    await db.client.delete(own.deletions)
    await db.client.sadd(own.deletions, "s-other")  # a set, as it should be: accepted
    assert await Submission.delete_session("s-3") == 0

    lock = db.keys.migration_lock
    await db.client.hset(lock, "x", "1")
    for script, script_keys, args in (
        ("lock_renew", [lock], ["owner", 1000]),
        ("lock_release", [lock], ["owner"]),
        ("schema_record", [db.keys.meta, lock], ["owner", 1, "f", "v", 0]),
    ):
        await refused_without_a_trace(
            db,
            lambda s=script, k=script_keys, a=args: db.scripts.call(s, keys=k, args=a),
            fm.CorruptDataError,
            lock,
        )
