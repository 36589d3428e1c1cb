"""Queries against a real server, checked against a brute-force filter of the same data."""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flue_models as fm
from flue_models.model.expressions import Condition
from flue_models.model.planner import OWNED_CHECK_FROM
from tests.integration.models import Item, Ticket
from tests.integration.roundtrips import count_round_trips

COLORS = ["red", "green", "blue"]
#: Values no item holds, to make an in_ long enough for the owned check.
UNSTORED = [f"none-{n}" for n in range(OWNED_CHECK_FROM)]
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}

items_strategy = st.lists(
    st.builds(
        Item,
        color=st.sampled_from(COLORS),
        flag=st.booleans(),
        size=st.integers(min_value=-3, max_value=3),
        weight=st.none() | st.sampled_from([-1.5, 0.0, 0.5, 2.0]),
        seq=st.integers(min_value=0, max_value=6),
    ),
    max_size=25,
)
condition_strategy = st.one_of(
    st.tuples(
        st.just("color"), st.sampled_from(["eq", "ne", "in", "in_many"]), st.sampled_from(COLORS)
    ),
    st.tuples(st.just("flag"), st.sampled_from(["eq", "ne"]), st.booleans()),
    st.tuples(st.just("size"), st.sampled_from(list(OPS)), st.integers(-4, 4)),
    st.tuples(st.just("weight"), st.sampled_from(list(OPS)), st.sampled_from([-1.5, 0.0, 1.0])),
    st.tuples(st.just("seq"), st.sampled_from(list(OPS)), st.integers(-1, 7)),
)


def build(field: str, op: str, value: Any) -> Condition:
    ref: Any = getattr(Item, field)
    if op == "in":
        return ref.in_([value, "green"])  # type: ignore[no-any-return]
    if op == "in_many":  # over OWNED_CHECK_FROM values: checked through each row's _owned
        return ref.in_([value, "green", *UNSTORED])  # type: ignore[no-any-return]
    symbol = {
        "eq": "__eq__",
        "ne": "__ne__",
        "lt": "__lt__",
        "le": "__le__",
        "gt": "__gt__",
        "ge": "__ge__",
    }
    return getattr(ref, symbol[op])(value)  # type: ignore[no-any-return]


def matches(item: Item, field: str, op: str, value: Any) -> bool:
    have = getattr(item, field)
    if op in ("in", "in_many"):
        return have in (value, "green")
    if op in ("eq", "ne"):
        return OPS[op](have, value)
    return have is not None and OPS[op](have, value)  # unset fields match no range


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=items_strategy,
    conditions=st.lists(condition_strategy, max_size=3),
    sort=st.sampled_from([None, "seq", "-seq", "size", "-size", "-weight"]),
    page_size=st.integers(min_value=1, max_value=7),
)
async def test_queries_match_a_brute_force_filter(
    db: fm.Database,
    items: list[Item],
    conditions: list[tuple[str, str, Any]],
    sort: str | None,
    page_size: int,
) -> None:
    await db.client.delete(
        *[k async for k in db.client.scan_iter(match=db.keys.pattern())] or ["x"]
    )
    await Item.save_many(items)

    expected = [i for i in items if all(matches(i, *c) for c in conditions)]
    field = (sort or "seq").lstrip("-")
    expected = [i for i in expected if getattr(i, field) is not None]  # sorted sets hold set values
    descending = bool(sort and sort.startswith("-"))
    expected.sort(key=lambda i: (getattr(i, field), i.id), reverse=descending)

    query = Item.find(*[build(*c) for c in conditions])
    if sort:
        query = query.sort_by(sort)

    paged: list[str] = []
    cursor = None
    while True:
        page = await query.page(limit=page_size, cursor=cursor)
        paged += [i.id for i in page.items]
        assert len(page.items) <= page_size
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert paged == [i.id for i in expected]
    assert [i.id for i in await query.all()] == paged
    assert await query.count() == len(expected)


async def test_every_operator_on_a_fixed_data_set(db: fm.Database) -> None:
    await Ticket.save_many(
        [Ticket(id=f"t{p}", status="open" if p % 2 else "closed", priority=p) for p in range(6)]
    )
    ids: Callable[[list[Ticket]], list[str]] = lambda ts: sorted(t.id for t in ts)  # noqa: E731
    assert ids(await Ticket.find(Ticket.status == "open").all()) == ["t1", "t3", "t5"]
    assert ids(await Ticket.find(Ticket.status != "open").all()) == ["t0", "t2", "t4"]
    assert ids(await Ticket.find(Ticket.priority < 2).all()) == ["t0", "t1"]
    assert ids(await Ticket.find(Ticket.priority <= 2).all()) == ["t0", "t1", "t2"]
    assert ids(await Ticket.find(Ticket.priority > 3).all()) == ["t4", "t5"]
    assert ids(await Ticket.find(Ticket.priority >= 3).all()) == ["t3", "t4", "t5"]
    assert ids(await Ticket.find(Ticket.status.in_(["open", "gone"])).all()) == ["t1", "t3", "t5"]
    assert ids(await Ticket.find(fm.in_(Ticket.status, ["closed"])).all()) == ["t0", "t2", "t4"]
    both = (Ticket.status == "open") & (Ticket.priority >= 3)
    assert ids(await Ticket.find(both).all()) == ["t3", "t5"]
    assert ids(await Ticket.find(Ticket.status == "open", Ticket.priority >= 3).all()) == [
        "t3",
        "t5",
    ]
    assert ids(await Ticket.find(Ticket.priority == 4).all()) == ["t4"]


async def test_sort_limit_first_and_async_iteration(db: fm.Database) -> None:
    await Ticket.save_many([Ticket(id=f"t{p}", status="open", priority=p) for p in range(5)])
    assert [t.priority for t in await Ticket.find().sort_by("-priority").limit(3).all()] == [
        4,
        3,
        2,
    ]
    first = await Ticket.find(Ticket.priority > 1).sort_by("priority").first()
    assert first is not None
    assert first.priority == 2
    assert await Ticket.find(Ticket.priority > 10).first() is None
    seen = [t.priority async for t in Ticket.find().sort_by("priority")]
    assert seen == [0, 1, 2, 3, 4]


async def test_large_results_stream_in_chunks(db: fm.Database) -> None:
    await Item.save_many(
        [Item(color="red", flag=i % 2 == 0, size=i % 7, seq=i) for i in range(1234)]
    )
    seqs = [i.seq async for i in Item.find(Item.flag == True).sort_by("-seq")]  # noqa: E712
    assert seqs == list(range(1232, -1, -2))
    assert await Item.find(Item.flag == True).count() == 617  # noqa: E712


async def test_a_page_with_one_equality_filter_and_a_sort_takes_one_round_trip(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script that walks the index reads the rows it found (one bucket)."""
    await Ticket.save_many(
        [Ticket(status="open" if p % 3 else "closed", priority=p) for p in range(300)]
    )
    query = Ticket.find(Ticket.status == "open").sort_by("-created_at")
    await query.page(limit=5)  # warm: connection and script loaded
    with count_round_trips(db, monkeypatch) as trips:
        page = await query.page(limit=50)
        assert len(page.items) == 50
        assert trips[0] == 1
        again = await query.page(limit=50, cursor=page.next_cursor)
        assert len(again.items) == 50
        assert trips[0] == 2
    assert [t.id for t in [*page.items, *again.items]] == (await query.id_page(limit=100)).ids


async def test_explain_names_the_index_it_walks(db: fm.Database) -> None:
    await Ticket.save_many(
        [Ticket(status="open" if p < 2 else "closed", priority=p) for p in range(10)]
    )
    plan = await Ticket.find(Ticket.status == "open").explain()
    assert plan.startswith(f"walks {db.keys.index('it_ticket', 'status', b'open')} (2 entries")
    assert "not chosen" in plan
    ranged = await Ticket.find(Ticket.priority >= 5).sort_by("priority").explain()
    assert ranged.startswith(f"walks {db.keys.range_index('it_ticket', 'priority')}")


async def test_compound_index_drives_a_two_field_query(db: fm.Database) -> None:
    # 40 items: 13 blue, 20 flagged, 7 both, so the compound set is the smallest.
    await Item.save_many(
        [Item(color=COLORS[i % 3], flag=i % 2 == 0, size=0, seq=i) for i in range(40)]
    )
    query = Item.find(Item.color == "blue", Item.flag == True)  # noqa: E712
    plan = await query.explain()
    assert "color+flag" in plan.splitlines()[0]
    expected = [i.id for i in await Item.find().all() if i.color == "blue" and i.flag]
    assert [i.id for i in await query.all()] == expected


async def test_cursor_is_stable_under_concurrent_inserts_and_deletes(db: fm.Database) -> None:
    originals = [Ticket(status="open", priority=p % 5) for p in range(60)]
    await Ticket.save_many(originals)
    query = Ticket.find(Ticket.status == "open").sort_by("-created_at")
    rng = random.Random(7)
    deleted: set[str] = set()
    seen: list[str] = []
    cursor = None
    while True:
        page = await query.page(limit=7, cursor=cursor)
        seen += [t.id for t in page.items]
        # Between pages, another writer inserts new rows and deletes some old ones,
        # including ones on pages already read and the very row the cursor points at.
        await Ticket.save_many([Ticket(status="open", priority=9) for _ in range(3)])
        candidates = [t for t in originals if t.id not in deleted]
        for victim in rng.sample(candidates, k=min(2, len(candidates))):
            await victim.delete()
            deleted.add(victim.id)
        if page.items and page.items[-1].id not in deleted:
            await page.items[-1].delete()
            deleted.add(page.items[-1].id)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)), "no duplicates"
    survivors = {t.id for t in originals} - deleted
    assert survivors <= set(seen), "no row that existed throughout is skipped"


async def test_a_cursor_from_another_query_is_refused(db: fm.Database) -> None:
    await Ticket.save_many([Ticket(status="open", priority=p) for p in range(5)])
    page = await Ticket.find().page(limit=2)
    assert page.next_cursor is not None
    with pytest.raises(fm.QueryError, match="different query"):
        await Ticket.find(Ticket.status == "open").page(limit=2, cursor=page.next_cursor)


async def test_a_query_is_planned_once_and_equal_values_are_planned_apart(
    db: fm.Database,
) -> None:
    await Item.save_many([Item(color="red", flag=True, size=n, weight=n, seq=n) for n in range(5)])
    again = Item.find(Item.weight >= 0.0), Item.find(Item.weight >= 0.0)
    assert again[0]._plan(db.keys) is again[1]._plan(db.keys)  # built again: the same plan
    page = await again[0].page(limit=2)
    assert page.next_cursor is not None
    assert len((await again[1].page(limit=2, cursor=page.next_cursor)).items) == 2
    # -0.0 == 0.0, but the queries differ in their text: each has its own plan, and a
    # cursor of one is refused by the other, as it was before plans were kept.
    with pytest.raises(fm.QueryError, match="different query"):
        await Item.find(Item.weight >= -0.0).page(limit=2, cursor=page.next_cursor)
    assert len(await Item.find(Item.weight >= -0.0).all()) == 5


async def test_a_huge_in_costs_one_row_read_per_candidate(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Ticket.save_many(
        [Ticket(id=f"t-{i}", status=f"s-{i % 10}", priority=i) for i in range(30)]
    )
    values = [f"s-{i}" for i in range(3, 10_004)]  # 10,001 values, 7 of them stored
    with count_round_trips(db, monkeypatch) as sent:
        found = await Ticket.find(Ticket.status.in_(values)).all()
    assert sorted(t.id for t in found) == sorted(f"t-{i}" for i in range(30) if i % 10 >= 3)
    assert sent[0] <= 3  # one script call (30 reads of _owned), then the rows


async def test_a_huge_in_over_rows_without_owned_is_split_across_bounded_calls(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Ticket.save_many(
        [Ticket(id=f"t-{i}", status=f"s-{i % 10}", priority=i) for i in range(30)]
    )
    for i in range(30):  # rows whose _owned is damaged: the ZSCOREs decide
        await db.client.hdel(db.keys.record(Ticket.__flue_spec__.collection, f"t-{i}"), "_owned")
    values = [f"s-{i}" for i in range(3, 10_004)]
    with count_round_trips(db, monkeypatch) as sent:
        found = (await Ticket.find(Ticket.status.in_(values)).id_page(limit=100)).ids
    assert sorted(found) == sorted(f"t-{i}" for i in range(30) if i % 10 >= 3)
    # Each candidate that matches nothing costs 10,001 ZSCOREs: with at most 10,000 Redis
    # calls per script call, the 9 such candidates take several script calls, not one.
    assert sent[0] >= 9


@pytest.mark.parametrize("damage", ["missing", "not json", '{"z": 1}', '["x"]'])
async def test_a_row_whose_owned_is_unreadable_is_checked_by_its_index_entries(
    db: fm.Database, damage: str
) -> None:
    ids = ["a", "ab", "abc", "abcd", "é", "日本語", "x/y:z{w}", "🙂", "a" * 61]
    await Ticket.save_many(
        [Ticket(id=i, status=f"s-{n % 3}", priority=n) for n, i in enumerate(ids)]
    )
    damaged = db.keys.record(Ticket.__flue_spec__.collection, "日本語")
    if damage == "missing":
        await db.client.hdel(damaged, "_owned")
    else:
        await db.client.hset(damaged, "_owned", damage)
    many = Ticket.find(Ticket.status.in_(["s-0", "s-2", *UNSTORED])).sort_by("priority")
    few = Ticket.find(Ticket.status.in_(["s-0", "s-2"])).sort_by("priority")
    assert "owned" in await many.explain()
    assert "owned" not in await few.explain()
    expected = [i for n, i in enumerate(ids) if n % 3 != 1]
    assert (await many.id_page(limit=100)).ids == expected
    assert (await few.id_page(limit=100)).ids == expected
