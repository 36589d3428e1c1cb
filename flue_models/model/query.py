"""Lazy, chainable queries and their planner.

A query walks one sorted set in the requested order (the candidate with the fewest
entries inside the score bounds, chosen on the server) and checks every other condition
against the index sets with ZSCORE, inside the ``query`` Lua script. Matching ids come
back with a keyset cursor; the records are then read in one pipelined round trip. No
temporary keys, no SCAN: a page costs O(log N + examined entries).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flue_models.connection import Database, current_database
from flue_models.keys import KeySpace
from flue_models.model.expressions import AllOf, Condition, QueryError
from flue_models.model.spec import ModelSpec
from flue_models.replies import reply_text

if TYPE_CHECKING:
    from flue_models.model.base import Model

M = TypeVar("M", bound="Model")

#: Page size of ``page()`` when none is given, and of ``async for`` and ``all()`` chunks.
DEFAULT_PAGE = 50
CHUNK = 100
#: Most index entries one script call examines before it returns what it has so far.
SCAN_BUDGET = 2000


def _score_text(value: float) -> str:
    if value == float("inf"):
        return "+inf"
    if value == float("-inf"):
        return "-inf"
    return repr(value)


@dataclass(frozen=True)
class ScoreBound:
    """One end of a score range; ``exclusive`` for ``<`` and ``>``.

    Example:
        >>> ScoreBound(2.0, True).zset_text()
        '(2.0'
    """

    value: float
    exclusive: bool

    def script_args(self) -> tuple[str, str]:
        """The bound as the query script reads it: score text and exclusive flag.

        Example:
            >>> ScoreBound(float("inf"), False).script_args()
            ('+inf', '0')
        """
        return _score_text(self.value), "1" if self.exclusive else "0"

    def zset_text(self) -> str:
        """The bound as ZCOUNT/ZRANGEBYSCORE read it.

        Example:
            >>> ScoreBound(5.0, False).zset_text()
            '5.0'
        """
        return ("(" if self.exclusive else "") + _score_text(self.value)

    def tighter_low(self, other: ScoreBound) -> ScoreBound:
        """Return the stricter of two lower bounds.

        Example:
            >>> ScoreBound(1.0, False).tighter_low(ScoreBound(1.0, True))
            ScoreBound(value=1.0, exclusive=True)
        """
        if other.value > self.value or (other.value == self.value and other.exclusive):
            return other
        return self

    def tighter_high(self, other: ScoreBound) -> ScoreBound:
        """Return the stricter of two upper bounds.

        Example:
            >>> ScoreBound(9.0, False).tighter_high(ScoreBound(3.0, False)).value
            3.0
        """
        if other.value < self.value or (other.value == self.value and other.exclusive):
            return other
        return self


UNBOUNDED_LOW = ScoreBound(float("-inf"), False)
UNBOUNDED_HIGH = ScoreBound(float("inf"), False)


@dataclass(frozen=True)
class Filter:
    """A check the query script runs on each candidate id (see ``query.lua``).

    Example:
        ```python
        Filter("member", ("flue:ticket:idx:status:b3Blbg",), text="status == 'open'")
        ```
    """

    kind: str
    keys: tuple[str, ...]
    args: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Plan:
    """How a query runs: which sets may drive it, the score bounds, and the filters.

    Example:
        ```python
        plan = plan_query(Ticket.__flue_spec__, db.keys, conditions, "-created_at")
        ```
    """

    drivers: tuple[str, ...]
    low: ScoreBound
    high: ScoreBound
    filters: tuple[Filter, ...]
    descending: bool
    sort_field: str
    fingerprint: str

    def script_args(
        self, cursor: tuple[str, str] | None, limit: int
    ) -> tuple[list[str], list[Any]]:
        """Return the KEYS and ARGV of one ``query`` script call.

        Example:
            ```python
            keys, args = plan.script_args(cursor=None, limit=50)
            ```
        """
        keys = list(self.drivers)
        args: list[Any] = [
            len(self.drivers),
            "desc" if self.descending else "asc",
            *self.low.script_args(),
            *self.high.script_args(),
            cursor[0] if cursor else "",
            cursor[1] if cursor else "",
            limit,
            SCAN_BUDGET,
            len(self.filters),
        ]
        for f in self.filters:
            keys += f.keys
            args += [f.kind, len(f.keys), *f.args]
        return keys, args


def plan_query(
    spec: ModelSpec, keys: KeySpace, conditions: Sequence[Condition], sort: str | None
) -> Plan:
    """Turn conditions and a sort into a :class:`Plan` (no I/O).

    Raises:
        QueryError: the sort field has no range index.

    Example:
        ```python
        plan = plan_query(spec, db.keys, [Ticket.status == "open"], "-created_at")
        plan.drivers   # ('flue:ticket:all', 'flue:ticket:idx:status:b3Blbg')
        ```
    """
    descending = bool(sort and sort.startswith("-"))
    sort_field = (sort or "").lstrip("-+") or (spec.order_by or "id")
    by_order = sort_field == spec.order_by or (spec.order_by is None and sort_field == "id")
    if not by_order and sort_field not in spec.range_fields:
        raise QueryError(
            f"Cannot sort {spec.model_name} by {sort_field!r}: sorting needs the Meta.order_by "
            f"field ({spec.order_by!r}) or a field marked Indexed(range=True)."
        )
    sort_set = keys.all(spec.collection) if by_order else spec.range_key(keys, sort_field)

    drivers = [sort_set]
    low, high = UNBOUNDED_LOW, UNBOUNDED_HIGH
    ranges: dict[str, tuple[ScoreBound, ScoreBound]] = {}
    filters: list[Filter] = []
    equal_to: dict[str, Any] = {}

    for cond in conditions:
        codec = spec.codecs[cond.field]
        if cond.op in ("lt", "le", "gt", "ge"):
            score = codec.score(cond.values[0])
            lo, hi = ranges.get(cond.field, (UNBOUNDED_LOW, UNBOUNDED_HIGH))
            if cond.op in ("gt", "ge"):
                lo = lo.tighter_low(ScoreBound(score, cond.op == "gt"))
            else:
                hi = hi.tighter_high(ScoreBound(score, cond.op == "lt"))
            ranges[cond.field] = (lo, hi)
            continue
        if cond.field in spec.equality_fields:
            sets = tuple(spec.equality_key(keys, cond.field, v) for v in cond.values)
            kind = "notmember" if cond.op == "ne" else "member"
            filters.append(Filter(kind, sets, text=str(cond)))
            if cond.op == "eq":
                equal_to[cond.field] = cond.values[0]
                if by_order:
                    drivers.append(sets[0])
        else:  # equality on a range-only field: compare its score
            scores = tuple(_score_text(codec.score(v)) for v in cond.values)
            kind = "notscore" if cond.op == "ne" else "score"
            filters.append(
                Filter(
                    kind,
                    (spec.range_key(keys, cond.field),),
                    (str(len(scores)), *scores),
                    str(cond),
                )
            )

    for name, (lo, hi) in ranges.items():
        if name == sort_field or (by_order and name == spec.order_by):
            low, high = low.tighter_low(lo), high.tighter_high(hi)
        else:
            filters.append(
                Filter(
                    "range",
                    (spec.range_key(keys, name),),
                    (*lo.script_args(), *hi.script_args()),
                    f"{name} in range",
                )
            )

    if by_order:
        for fields in spec.compound:
            if all(f in equal_to for f in fields):
                drivers.append(spec.compound_key(keys, fields, [equal_to[f] for f in fields]))

    fingerprint_source = json.dumps(
        [spec.collection, sort_field, descending, sorted(str(c) for c in conditions)]
    )
    fingerprint = hashlib.sha256(fingerprint_source.encode()).hexdigest()[:16]
    return Plan(
        drivers=tuple(dict.fromkeys(drivers)),
        low=low,
        high=high,
        filters=tuple(filters),
        descending=descending,
        sort_field=sort_field,
        fingerprint=fingerprint,
    )


def encode_cursor(fingerprint: str, score: str, record_id: str) -> str:
    """Return an opaque cursor naming the last examined entry of a query.

    Example:
        >>> decode_cursor("abc", encode_cursor("abc", "12.5", "t-1"))
        ('12.5', 't-1')
    """
    payload = json.dumps({"q": fingerprint, "s": score, "i": record_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(fingerprint: str, cursor: str) -> tuple[str, str]:
    """Return ``(score, id)`` from a cursor made by the same query.

    Raises:
        QueryError: the cursor is malformed or belongs to another query.

    Example:
        >>> decode_cursor("abc", "not-a-cursor")
        Traceback (most recent call last):
        ...
        flue_models.model.expressions.QueryError: Malformed cursor 'not-a-cursor': ...
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        score, record_id, made_by = str(payload["s"]), str(payload["i"]), payload["q"]
        float(score)
    except (ValueError, KeyError, TypeError) as exc:
        raise QueryError(
            f"Malformed cursor {cursor!r}: {exc}. Pass back the next_cursor of a page unchanged."
        ) from None
    if made_by != fingerprint:
        raise QueryError(
            "This cursor was made by a different query (other conditions or sort); a cursor "
            "continues only the query that returned it."
        )
    return score, record_id


@dataclass(frozen=True)
class Page(Generic[M]):
    """One page of results and the cursor of the next (``None`` after the last page).

    Example:
        ```python
        page = await Ticket.find().page(limit=20)
        more = await Ticket.find().page(limit=20, cursor=page.next_cursor)
        ```
    """

    items: list[M]
    next_cursor: str | None


@dataclass(frozen=True)
class IdPage:
    """A page of matching ids (no records read) and the next cursor.

    Example:
        ```python
        ids = await Ticket.find(Ticket.status == "open").id_page(limit=100)
        ```
    """

    ids: list[str]
    next_cursor: str | None


@dataclass(frozen=True)
class Query(Generic[M]):
    """A lazy query: nothing runs until it is awaited through a terminal method.

    Example:
        ```python
        query = Ticket.find(Ticket.status == "open").sort_by("-created_at").limit(100)
        tickets = await query.all()
        async for ticket in Ticket.find(Ticket.priority >= 3):
            ...
        ```
    """

    model: type[M]
    conditions: tuple[Condition, ...] = ()
    sort: str | None = None
    max_items: int | None = None
    db: Database | None = field(default=None, compare=False)

    def where(self, *conditions: Condition | AllOf | bool) -> Query[M]:
        """Return this query with more conditions (all must hold).

        Example:
            ```python
            Ticket.find().where(Ticket.status == "open")
            ```
        """
        found: list[Condition] = list(self.conditions)
        for item in conditions:
            if not isinstance(item, Condition | AllOf):
                raise QueryError(
                    f"find() takes conditions on model fields such as "
                    f"{self.model.__name__}.status == 'open', not {item!r}."
                )
            for cond in item.conditions:
                if cond.model is not self.model:
                    raise QueryError(
                        f"Condition {cond} is on {cond.model.__name__}, not on "
                        f"{self.model.__name__}."
                    )
            found += item.conditions
        return replace(self, conditions=tuple(found))

    def sort_by(self, field_name: str) -> Query[M]:
        """Order by ``field_name`` (``"-field"`` for descending); ties by id.

        Only ``Meta.order_by`` and ``Indexed(range=True)`` fields can order a query, and
        sorting by a field lists only records where it is set.

        Example:
            ```python
            Ticket.find().sort_by("-created_at")
            ```
        """
        query = replace(self, sort=field_name)
        query._plan(KeySpace("check"))  # fail now, not when awaited
        return query

    def limit(self, count: int) -> Query[M]:
        """Return at most ``count`` records from ``all()`` and ``async for``.

        Example:
            ```python
            await Ticket.find().limit(10).all()
            ```
        """
        if count < 0:
            raise QueryError(f"limit must be zero or more, not {count}.")
        return replace(self, max_items=count)

    def using(self, db: Database) -> Query[M]:
        """Run this query on ``db`` instead of the enclosing ``connect()``.

        Example:
            ```python
            await Ticket.find().using(other_db).count()
            ```
        """
        return replace(self, db=db)

    # Running ---------------------------------------------------------------------------

    def _database(self) -> Database:
        return self.db or current_database()

    def _plan(self, keys: KeySpace) -> Plan:
        return plan_query(self.model.__flue_spec__, keys, self.conditions, self.sort)

    async def id_page(self, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> IdPage:
        """Return up to ``limit`` matching ids after ``cursor``, without reading the records.

        Example:
            ```python
            found = await Ticket.find(Ticket.status == "open").id_page(limit=100)
            found.ids, found.next_cursor
            ```
        """
        if limit <= 0:
            raise QueryError(f"page limit must be positive, not {limit}.")
        return await self._ids(self._database(), limit, cursor)

    async def _ids(self, db: Database, limit: int, cursor: str | None) -> IdPage:
        plan = self._plan(db.keys)
        position = decode_cursor(plan.fingerprint, cursor) if cursor else None
        ids: list[str] = []
        while len(ids) < limit:
            keys, args = plan.script_args(position, limit - len(ids))
            found, last_score, last_id, exhausted, _driver, _examined = await db.scripts.call(
                "query", keys=keys, args=args
            )
            ids += [reply_text(item) for item in found]
            if int(exhausted):
                return IdPage(ids, None)
            position = (reply_text(last_score), reply_text(last_id))
        assert position is not None
        return IdPage(ids, encode_cursor(plan.fingerprint, *position))

    async def _load(self, db: Database, ids: list[str]) -> list[M]:
        records = await self.model.get_many(ids, db=db)
        return [record for record in records if record is not None]  # deleted meanwhile

    async def page(self, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> Page[M]:
        """Return up to ``limit`` records after ``cursor``, and the next cursor.

        Cursors are keyset positions: records inserted or deleted between pages cause
        no duplicates, and no record that existed throughout is skipped. A page with
        an equality filter usually takes two round trips (ids, then records).

        Raises:
            QueryError: the cursor is malformed or from another query.

        Example:
            ```python
            page = await Ticket.find(Ticket.status == "open").page(limit=50)
            ```
        """
        found = await self.id_page(limit, cursor)
        return Page(await self._load(self._database(), found.ids), found.next_cursor)

    async def __aiter_records(self) -> AsyncIterator[M]:
        db = self._database()
        remaining = self.max_items
        cursor: str | None = None
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            found = await self._ids(db, size, cursor)
            records = await self._load(db, found.ids)
            for record in records:
                yield record
            if remaining is not None:
                remaining -= len(found.ids)
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    def __aiter__(self) -> AsyncIterator[M]:
        return self.__aiter_records()

    async def all(self) -> list[M]:
        """Return every matching record (up to ``limit``), read in chunks of 100.

        Example:
            ```python
            open_tickets = await Ticket.find(Ticket.status == "open").all()
            ```
        """
        return [record async for record in self]

    async def first(self) -> M | None:
        """Return the first matching record in order, or ``None``.

        Example:
            ```python
            newest = await Ticket.find().sort_by("-created_at").first()
            ```
        """
        page = await self.page(limit=1)
        return page.items[0] if page.items else None

    async def count(self) -> int:
        """Return how many records match.

        With no filter beyond score bounds this is one ZCOUNT; otherwise the ids are
        walked on the server in pages, without reading the records.

        Example:
            ```python
            n = await Ticket.find(Ticket.status == "open").count()
            ```
        """
        db = self._database()
        plan = self._plan(db.keys)
        sole = plan.filters[0] if len(plan.filters) == 1 else None
        walks_all = plan.drivers[0] == db.keys.all(self.model.__flue_spec__.collection)
        # One equality set is the answer only when the walk is over every record (a sort
        # by a range field lists only records where that field is set).
        if not plan.filters or (
            walks_all and sole and sole.kind == "member" and len(sole.keys) == 1
        ):
            key = sole.keys[0] if sole else plan.drivers[0]
            return int(await db.client.zcount(key, plan.low.zset_text(), plan.high.zset_text()))
        total, cursor = 0, None
        while True:
            found = await self._ids(db, 1000, cursor)
            total += len(found.ids)
            if found.next_cursor is None:
                return total
            cursor = found.next_cursor

    async def explain(self) -> str:
        """Describe how this query runs: the candidate sets, their sizes, the filters.

        Example:
            ```python
            print(await Ticket.find(Ticket.status == "open").explain())
            # walks flue:ticket:idx:status:b3Blbg (3 entries in bounds) ascending by created_at
            ```
        """
        db = self._database()
        plan = self._plan(db.keys)
        low, high = plan.low.zset_text(), plan.high.zset_text()
        counts = await db.run_batch([("ZCOUNT", key, low, high) for key in plan.drivers])
        chosen = min(range(len(counts)), key=lambda i: (int(counts[i]), i))
        direction = "descending" if plan.descending else "ascending"
        lines = [
            f"walks {plan.drivers[chosen]} ({counts[chosen]} entries in bounds) {direction} "
            f"by {plan.sort_field}, scores in [{low}, {high}]"
        ]
        for key, count in zip(plan.drivers, counts, strict=True):
            if key != plan.drivers[chosen]:
                lines.append(f"  not chosen: {key} ({count} entries)")
        for f in plan.filters:
            lines.append(f"  filter {f.text}: {f.kind} on {', '.join(f.keys)}")
        return "\n".join(lines)
