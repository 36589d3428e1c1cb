"""Queries with alternatives (``|``) and opposites (``~``), on one bucket and on eight,
checked against a brute-force filter of the same data, also while other writers insert
and delete between pages."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flue_models as fm
from flue_models.model.expressions import Condition
from tests.integration.models import Item, SpreadItem
from tests.integration.test_buckets import walk
from tests.integration.test_queries import OPS, build, condition_strategy, items_strategy, matches

Expr = Any  # a leaf (field, op, value), or ("and" | "or", a, b), or ("not", a)
MODELS = {"one bucket": Item, "eight buckets": SpreadItem}

expressions = st.recursive(
    condition_strategy,
    lambda inner: st.one_of(
        st.tuples(st.just("and"), inner, inner),
        st.tuples(st.just("or"), inner, inner),
        st.tuples(st.just("not"), inner),
    ),
    max_leaves=4,
)


def query_of(model: type[Item] | type[SpreadItem], expr: Expr) -> Any:
    """The library's condition for ``expr``, built with & | ~."""
    if expr[0] == "and":
        return query_of(model, expr[1]) & query_of(model, expr[2])
    if expr[0] == "or":
        return query_of(model, expr[1]) | query_of(model, expr[2])
    if expr[0] == "not":
        return ~query_of(model, expr[1])
    condition = build(*expr)
    return Condition(model, condition.field, condition.op, condition.values)


def holds(item: Any, expr: Expr, negated: bool = False) -> bool:
    """Brute force, with the documented meaning of ~: De Morgan on groups, the opposite
    operator on a condition (a range's opposite needs the field set, as the range does)."""
    if expr[0] in ("and", "or"):
        join = all if (expr[0] == "and") != negated else any
        return join(holds(item, part, negated) for part in expr[1:])
    if expr[0] == "not":
        return holds(item, expr[1], not negated)
    field, op, value = expr
    if negated and op in ("lt", "le", "gt", "ge"):
        have = getattr(item, field)
        return have is not None and not OPS[op](have, value)
    return matches(item, field, op, value) != negated


def copy_for(model: type[Item] | type[SpreadItem], item: Item) -> Item | SpreadItem:
    return model(**item.model_dump())


async def clear(db: fm.Database) -> None:
    keys = [k async for k in db.client.scan_iter(match=db.keys.pattern())]
    for key in keys:
        await db.client.delete(key)  # one by one: a cluster refuses a cross-slot DEL


def sort_key(field: str) -> Any:
    return lambda i: (getattr(i, field), i.id.encode())


@pytest.mark.parametrize("which", list(MODELS))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=items_strategy,
    expr=expressions,
    sort=st.sampled_from([None, "-seq", "size", "-weight"]),
    size=st.integers(min_value=1, max_value=6),
)
async def test_alternatives_match_a_brute_force_filter(
    db: fm.Database, which: str, items: list[Item], expr: Expr, sort: str | None, size: int
) -> None:
    model = MODELS[which]
    await clear(db)
    stored = [copy_for(model, i) for i in items]
    await model.save_many(stored)  # type: ignore[arg-type]
    field = (sort or "seq").lstrip("-")
    expected = [i for i in stored if holds(i, expr) and getattr(i, field) is not None]
    expected.sort(key=sort_key(field), reverse=bool(sort and sort.startswith("-")))

    query = model.find(query_of(model, expr))
    if sort:
        query = query.sort_by(sort)
    assert await walk(query, size) == [i.id for i in expected]
    assert [i.id for i in await query.all()] == [i.id for i in expected]
    assert await query.count() == len(expected)


@pytest.mark.parametrize("which", list(MODELS))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=items_strategy,
    more=items_strategy,
    expr=expressions,
    seed=st.integers(0, 2**16),
    size=st.integers(min_value=1, max_value=5),
)
async def test_alternatives_page_correctly_under_concurrent_writes(
    db: fm.Database,
    which: str,
    items: list[Item],
    more: list[Item],
    expr: Expr,
    seed: int,
    size: int,
) -> None:
    model = MODELS[which]
    await clear(db)
    originals = [copy_for(model, i) for i in items]
    await model.save_many(originals)  # type: ignore[arg-type]
    rng = random.Random(seed)
    pending = [copy_for(model, i) for i in more]
    living = {i.id: i for i in originals}
    deleted: set[str] = set()

    async def another_writer() -> None:
        # Between pages: insert a few new items, delete a few old ones (read or not).
        for _ in range(min(2, len(pending))):
            added = pending.pop()
            await added.save()
            living[added.id] = added
        for victim in rng.sample(sorted(living), k=min(2, len(living))):
            await living.pop(victim).delete()
            deleted.add(victim)

    query = model.find(query_of(model, expr)).sort_by("-seq")
    seen = await walk(query, size, another_writer)
    every = {i.id: i for i in [*originals, *(copy_for(model, i) for i in more)]}
    assert len(seen) == len(set(seen)), "no record twice"
    assert all(holds(every[i], expr) for i in seen), "only matching records"
    order = [sort_key("seq")(every[i]) for i in seen]
    assert order == sorted(order, reverse=True), "in the query's order"
    throughout = {i.id for i in originals if i.id not in deleted and holds(i, expr)}
    assert throughout <= set(seen), "no record that matched throughout is skipped"


async def test_explain_shows_each_alternative_and_the_merge(db: fm.Database) -> None:
    await Item.save_many(
        [Item(color=c, flag=f, size=1) for c in ("red", "blue") for f in (True, False)]
    )
    either = (Item.color == "red") | ~(Item.flag == True)  # noqa: E712
    text = await Item.find(either).explain()
    assert text.startswith("any of 2 alternatives")
    assert "alternative 1: color == 'red'" in text
    assert "alternative 2: flag != True" in text
    assert "filter flag != True: notmember" in text
    found = await Item.find(either).all()
    assert sorted((i.color, i.flag) for i in found) == [
        ("blue", False),
        ("red", False),
        ("red", True),
    ]


async def test_a_cursor_belongs_to_its_alternatives(db: fm.Database) -> None:
    await Item.save_many([Item(color="red", flag=True, size=n, seq=n) for n in range(4)])
    first = await Item.find((Item.color == "red") | (Item.size >= 2)).page(limit=1)
    assert first.next_cursor is not None
    same = await Item.find((Item.size >= 2) | (Item.color == "red")).page(
        limit=5, cursor=first.next_cursor
    )  # the same alternatives in another order: the same query
    assert [i.seq for i in same.items] == [1, 2, 3]
    with pytest.raises(fm.QueryError, match="different query"):
        await Item.find(Item.color == "red").page(cursor=first.next_cursor)


def test_too_many_alternatives_and_misuse_are_refused() -> None:
    colors = [Item.color == c for c in ("a", "b", "c", "d", "e")]
    wide = colors[0] | colors[1] | colors[2] | colors[3]
    with pytest.raises(fm.QueryError, match="alternatives"):
        Item.find(wide & (colors[0] | colors[1] | colors[2] | colors[4] | colors[3]))
    with pytest.raises(fm.QueryError, match="no truth value"):
        bool(Item.color == "a")
    with pytest.raises(fm.QueryError, match=r"& \| ~"):
        bool(wide)
    with pytest.raises(fm.QueryError, match="any_of"):
        fm.any_of("color == a")
    assert str(fm.not_(wide)).count("!=") == 4
    assert str(fm.any_of(colors[0], colors[1])) == "(color == 'a') | (color == 'b')"
