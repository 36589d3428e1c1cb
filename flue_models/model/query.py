"""Lazy, chainable queries (the planner is :mod:`flue_models.model.planner`).

A query walks one sorted set in the requested order (the candidate with the fewest
entries inside the score bounds, chosen on the server) and checks every other condition
against the index sets with ZSCORE, inside the ``query`` Lua script. Matching ids come
back with a keyset cursor; the records are then read in one pipelined round trip. No
temporary keys, no SCAN: a page costs O(log N + examined entries), and one script call
makes at most ``SCAN_BUDGET`` Redis calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from redis.exceptions import ResponseError

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    ConfigurationError,
    DecodeError,
    QueryError,
    ScriptError,
    SkippedRecordWarning,
)
from flue_models.keys import INDEX_VALUE_BOUND, KeySpace
from flue_models.model.buckets import check_collections
from flue_models.model.codec import FieldCodec
from flue_models.model.expressions import AllOf, AnyOf, Condition
from flue_models.model.planner import (
    SCAN_BUDGET,
    Plan,
    decode_cursor,
    encode_cursor,
    plan_query,
)
from flue_models.replies import reply_hash, reply_text

if TYPE_CHECKING:
    from flue_models.model.base import Model

M = TypeVar("M", bound="Model")
#: What a page holds: records of a model, or another listing's items (run pointers).
T = TypeVar("T")

#: The one rule of every listing's ``limit`` (queries, runs, sessions, histories, event
#: reads, the command line and the dashboard's API), Flue's: none given, zero or less is
#: ``DEFAULT_PAGE``; more than ``MAX_PAGE`` is ``MAX_PAGE``.
DEFAULT_PAGE, MAX_PAGE = 100, 1000
#: Records read per round trip by ``async for`` and ``all()``.
CHUNK = 100


#: What a row that cannot be read does to a listing: the one spelling, ``on_error=``,
#: of :meth:`Query.on_error` and of every listing that takes it (``WorkflowRun.list``,
#: ``Session.list``).
OnError = Literal["raise", "skip"]


def on_error_choice(choice: object) -> OnError:
    """Check an ``on_error`` choice: ``"raise"`` or ``"skip"``.

    Raises:
        QueryError: anything else (a typo would otherwise raise, or skip, silently).

    Example:
        >>> on_error_choice("skip")
        'skip'
    """
    if choice == "raise" or choice == "skip":
        return choice
    raise QueryError(f"on_error takes 'raise' or 'skip', not {choice!r}.")


def unreadable(error: DecodeError, choice: OnError, skipped: list[DecodeError]) -> None:
    """Deal with a row a listing cannot read, as ``choice`` says: raise its error, or
    add it to ``skipped`` and report it with a :class:`SkippedRecordWarning`.

    Example:
        ```python
        if isinstance(row, DecodeError):
            unreadable(row, "skip", page_skipped)
        ```
    """
    if choice == "raise":
        raise error
    warnings.warn(SkippedRecordWarning(str(error)), stacklevel=4)
    skipped.append(error)


def page_size(limit: int | None) -> int:
    """Return the page size a listing reads for ``limit`` (see ``DEFAULT_PAGE``).

    Raises:
        ConfigurationError: ``limit`` is not a whole number (or ``None``).

    Example:
        >>> page_size(None), page_size(0), page_size(-5), page_size(7), page_size(5000)
        (100, 100, 100, 7, 1000)
    """
    if limit is None:
        return DEFAULT_PAGE
    if type(limit) is not int:
        raise ConfigurationError(f"limit must be a whole number or None, not {limit!r}.")
    return DEFAULT_PAGE if limit <= 0 else min(limit, MAX_PAGE)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the cursor of the next (``None`` after the last page):
    every listing of the library returns one (``Page[Ticket]`` from a query,
    ``Page[RunPointer]`` from :meth:`WorkflowRun.list`, ``Page[Session]`` from
    :meth:`Session.list`).

    Example:
        ```python
        page = await Ticket.find().page(limit=20)
        more = await Ticket.find().page(limit=20, cursor=page.next_cursor)
        ```
    """

    items: list[T]
    next_cursor: str | None
    #: Records of this page that could not be read (``on_error("skip")`` only).
    skipped: list[DecodeError] = field(default_factory=list)


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
    #: The hash key of each id, in the bucket the walk found it in (for the loader).
    record_keys: list[str] = field(default_factory=list, repr=False, compare=False)
    #: Each id's hash when the walk read it in the same call (``None``: not read).
    rows: list[dict[bytes, bytes] | Exception] | None = field(
        default=None, repr=False, compare=False
    )


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
    #: The alternatives (``a | b``) given, all groups multiplied into one; ``None``: none.
    any_of: AnyOf | None = None
    sort: str | None = None
    max_items: int | None = None
    db: Database | None = field(default=None, compare=False)
    errors: OnError = "raise"

    def where(self, *conditions: Condition | AllOf | AnyOf | bool) -> Query[M]:
        """Return this query with more conditions (all must hold); a group of
        alternatives (``a | b``) holds when any of them does.

        Raises:
            QueryError: an argument is not a condition on this model, or the query would
                have more than :data:`~flue_models.model.expressions.MAX_ALTERNATIVES`
                alternatives.

        Example:
            ```python
            Ticket.find().where(Ticket.status == "open")
            Ticket.find().where((Ticket.status == "open") | (Ticket.priority >= 4))
            ```
        """
        found: list[Condition] = list(self.conditions)
        group = self.any_of
        for item in conditions:
            if not isinstance(item, Condition | AllOf | AnyOf):
                raise QueryError(
                    f"find() takes conditions on model fields such as "
                    f"{self.model.__name__}.status == 'open', not {item!r}."
                )
            branches = item.branches if isinstance(item, AnyOf) else (item.conditions,)
            for cond in (cond for branch in branches for cond in branch):
                if cond.model is not self.model:
                    raise QueryError(
                        f"Condition {cond} is on {cond.model.__name__}, not on "
                        f"{self.model.__name__}."
                    )
            if isinstance(item, AnyOf):  # & multiplies them out, within MAX_ALTERNATIVES
                joined = item if group is None else group & item
                assert isinstance(joined, AnyOf)  # (& of two groups is a group)
                group = joined
            else:
                found += item.conditions
        return replace(self, conditions=tuple(found), any_of=group)

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

    def on_error(self, choice: OnError) -> Query[M]:
        """Say what a record that cannot be read does to the query.

        ``"raise"`` (the default): the query raises its :class:`DecodeError`. ``"skip"``:
        it is left out, reported in ``Page.skipped`` and by a
        :class:`SkippedRecordWarning` (so ``all()`` and ``async for`` report it too), and
        every other record is returned: one bad row never hides the rest. Listings that
        are not queries take the same choice as ``on_error=`` (``WorkflowRun.list``,
        ``Session.list``) and do the same.

        Example:
            ```python
            page = await Ticket.find().on_error("skip").page(limit=50)
            for error in page.skipped:
                log.warning("unreadable: %s", error.key)
            ```
        """
        return replace(self, errors=on_error_choice(choice))

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
        return pick_database(self.db)

    def _plan(self, keys: KeySpace, branch: tuple[Condition, ...] | None = None) -> Plan:
        """The plan of one alternative in one bucket: made once per model, key space,
        sort and conditions (see :data:`_PLANS`), then taken from the memo."""
        conditions = self.conditions if branch is None else branch
        try:
            memo = (self.model, keys, self.sort, *map(_value_key, conditions))
            plan = _PLANS.get(memo)
        except TypeError:  # a value that cannot be hashed: planned every time
            return plan_query(self.model.__flue_spec__, keys, conditions, self.sort)
        if plan is None:
            plan = plan_query(self.model.__flue_spec__, keys, conditions, self.sort)
            if len(_PLANS) >= PLANS_KEPT:
                _PLANS.clear()
            _PLANS[memo] = plan
        return plan

    def _branches(self) -> list[tuple[Condition, ...]]:
        """The query's alternatives, each a conjunction: one (its conditions) unless it
        has alternatives (``|``)."""
        if self.any_of is None:
            return [self.conditions]
        return [self.conditions + more for more in self.any_of.branches]

    def _fingerprint(self, branches: list[tuple[Condition, ...]]) -> str:
        """What a cursor of a query with alternatives is bound to (one alternative: the
        plan's own fingerprint)."""
        shown = sorted(sorted(str(c) for c in branch) for branch in branches)
        source = json.dumps([self.model.__flue_spec__.collection, self.sort, shown])
        return hashlib.sha256(source.encode()).hexdigest()[:16]

    async def id_page(self, limit: int | None = None, cursor: str | None = None) -> IdPage:
        """Return up to ``limit`` matching ids after ``cursor``, without reading the records.

        ``limit``: as every listing's (:func:`page_size`): none, zero or less is 100, more
        than 1000 is 1000.

        Example:
            ```python
            found = await Ticket.find(Ticket.status == "open").id_page(limit=100)
            found.ids, found.next_cursor
            ```
        """
        return await self._ids(self._database(), page_size(limit), cursor, rows=False)

    async def _walks(self, db: Database) -> tuple[list[KeySpace], list[list[tuple[int, Plan]]]]:
        """The key space of every bucket, and the walks the query makes, one list per
        alternative: the buckets it reads (every bucket, or, when it fixes the
        ``Meta.partition_by`` field to one or a few values, the buckets of those values),
        each walk as (its bucket's place in the spaces, its plan)."""
        spec = self.model.__flue_spec__
        if spec.collection not in db.checked_buckets:  # once per database
            await check_collections(db, [spec])
        spaces = spec.bucket_keys(db.keys)
        branches = self._branches()
        fingerprint = self._fingerprint(branches) if len(branches) > 1 else None
        groups = []
        for branch in branches:
            walks = [(i, self._plan(spaces[i], branch)) for i in self._buckets(db, spaces, branch)]
            if fingerprint is not None:
                walks = [(i, replace(plan, fingerprint=fingerprint)) for i, plan in walks]
            groups.append(walks)
        return spaces, groups

    def _buckets(
        self, db: Database, spaces: list[KeySpace], branch: tuple[Condition, ...]
    ) -> list[int]:
        """The places in ``spaces`` of the buckets one alternative reads."""
        spec = self.model.__flue_spec__
        every = list(range(len(spaces)))
        if len(spaces) == 1 or spec.partition_by == "id":
            return every
        wanted: set[int] | None = None
        for cond in branch:
            if cond.field == spec.partition_by and cond.op in ("eq", "in"):
                buckets = {spec.keys_of(db.keys, value).bucket for value in cond.values}
                wanted = buckets if wanted is None else wanted & buckets
        if wanted is None:
            return every
        return [i for i in every if spaces[i].bucket in wanted] or every[:1]

    async def _ids(self, db: Database, limit: int, cursor: str | None, *, rows: bool) -> IdPage:
        """The next ids; with ``rows``, a walk of one bucket reads their hashes in the same
        script calls (a page of records in one round trip)."""
        spaces, groups = await self._walks(db)
        walks = [walk for group in groups for walk in group]
        if not walks:  # an empty group of alternatives: nothing can match
            return IdPage([], None, rows=[] if rows else None)
        position = decode_cursor(walks[0][1].fingerprint, cursor) if cursor else None
        collection = self.model.__flue_spec__.collection
        with db.client.span("query", collection):
            if len(walks) == 1:
                index, plan = walks[0]
                prefix = spaces[index].record_prefix(collection) if rows else ""
                found = await self._walk(db, plan, position, limit, prefix)
                origin = [index] * len(found.ids)
            else:
                found, origin = await self._gather(db, walks, position, limit)
        found.record_keys[:] = [
            spaces[b].record(collection, item) for b, item in zip(origin, found.ids, strict=True)
        ]
        return found

    async def _walk(
        self, db: Database, plan: Plan, position: tuple[str, str] | None, limit: int, rows: str
    ) -> IdPage:
        ids: list[str] = []
        read: list[dict[bytes, bytes] | Exception] | None = [] if rows else None
        while len(ids) < limit:
            run = await _run_query(db, plan, position, limit - len(ids), rows=rows)
            ids += [item for _score, item in run.found]
            if read is not None:
                read += run.rows
            if run.exhausted:
                return IdPage(ids, None, rows=read)
            position = run.last
        assert position is not None
        return IdPage(ids, encode_cursor(plan.fingerprint, *position), rows=read)

    async def _gather(
        self,
        db: Database,
        walks: list[tuple[int, Plan]],
        position: tuple[str, str] | None,
        limit: int,
    ) -> tuple[IdPage, list[int]]:
        """Make every walk (one per bucket and alternative) from one cursor at once and
        merge them by (score, id), an id found by several walks once.

        Each walk returns its matches after ``position`` and the last entry it examined.
        Up to the frontier (the earliest last entry among the walks that are not
        exhausted) every walk has been read, so the merged matches up to it are exactly
        the next ones in the collection's order; a round that yields fewer than ``limit``
        continues from the frontier. The cursor is the last (score, id) given out, so its
        format does not depend on the number of walks. Returns the page and, per id, the
        place of its bucket in the spaces (the first element of its walk).
        """
        plans = [plan for _index, plan in walks]
        descending = plans[0].descending
        ids: list[str] = []
        origin: dict[str, int] = {}
        need = limit
        budget = max(MIN_BUCKET_BUDGET, SCAN_BUDGET // len(plans))
        spread = len({index for index, _plan in walks})  # buckets split the matches
        while True:
            share = need / spread
            each = min(need, math.ceil(share + 3 * math.sqrt(share)) + 1)
            runs = await asyncio.gather(
                *(_run_query(db, plan, position, each, budget) for plan in plans)
            )
            for (index, _plan), run in zip(walks, runs, strict=True):
                origin.update((item, index) for _score, item in run.found)
            ends = [run.last for run in runs if not run.exhausted and run.last is not None]
            earliest = max if descending else min
            frontier = earliest(ends, key=_order_key) if ends else None
            found = {item: score for run in runs for score, item in run.found}  # once each
            merged = _walk_order([(score, item) for item, score in found.items()], descending)
            if frontier is not None:
                merged = _up_to(merged, frontier, descending)
            if len(merged) > need:
                taken = merged[:need]
                ids += [item for _score, item in taken]
                cursor = encode_cursor(plans[0].fingerprint, *taken[-1])
                return IdPage(ids, cursor), [origin[item] for item in ids]
            ids += [item for _score, item in merged]
            need -= len(merged)
            if frontier is None:
                return IdPage(ids, None), [origin[item] for item in ids]
            position = frontier
            if need == 0:
                cursor = encode_cursor(plans[0].fingerprint, *position)
                return IdPage(ids, cursor), [origin[item] for item in ids]

    async def _load(self, db: Database, found: IdPage) -> tuple[list[M], list[DecodeError]]:
        records: list[M] = []
        skipped: list[DecodeError] = []
        rechecks = [self._rechecks(branch) for branch in self._branches()]
        if found.rows is None:
            loaded = await self.model._read_keys(found.record_keys, db)
        else:
            loaded = self.model._from_replies(found.record_keys, found.rows, db)
        for item in loaded:
            if isinstance(item, DecodeError):
                unreadable(item, self.errors, skipped)
            elif item is not None and any(  # None: deleted meanwhile
                all(
                    (value := getattr(item, field)) is not None
                    and codec.index_value(value) in wanted
                    for field, codec, wanted in checks
                )
                for checks in rechecks
            ):
                records.append(item)
        return records, skipped

    def _rechecks(self, branch: tuple[Condition, ...]) -> list[tuple[str, FieldCodec, set[bytes]]]:
        """The equality conditions of one alternative whose values include one indexed by
        its digest (longer than ``INDEX_VALUE_BOUND``): a row found must hold one of the
        wanted values (of every such condition of some alternative)."""
        spec = self.model.__flue_spec__
        checks = []
        for cond in branch:
            if cond.op not in ("eq", "in") or cond.field not in spec.equality_fields:
                continue
            codec = spec.codecs[cond.field]
            wanted = {codec.index_value(v) for v in cond.values if v is not None}
            if any(len(w) > INDEX_VALUE_BOUND for w in wanted):
                checks.append((cond.field, codec, wanted))
        return checks

    async def page(self, limit: int | None = None, cursor: str | None = None) -> Page[M]:
        """Return up to ``limit`` records after ``cursor``, and the next cursor.

        ``limit``: none, zero or less is 100, more than 1000 is 1000 (:func:`page_size`).

        Cursors are keyset positions: records inserted or deleted between pages cause
        no duplicates, and no record that existed throughout is skipped. A page of a
        collection kept in one bucket is one round trip: the script that walks the index
        reads the rows too (with more buckets: the walks, then the rows).

        Raises:
            QueryError: the cursor is malformed or from another query.

        Example:
            ```python
            page = await Ticket.find(Ticket.status == "open").page(limit=50)
            ```
        """
        db = self._database()
        found = await self._ids(db, page_size(limit), cursor, rows=True)
        records, skipped = await self._load(db, found)
        return Page(records, found.next_cursor, skipped)

    async def __aiter_records(self) -> AsyncIterator[M]:
        db = self._database()
        remaining = self.max_items
        cursor: str | None = None
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            found = await self._ids(db, size, cursor, rows=True)
            records, _skipped = await self._load(db, found)  # skipped: warned
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
        walked on the server in pages, without reading the records. A collection with
        more buckets counts each bucket at once and adds the counts up; a query with
        alternatives (``|``) walks them merged, so a record that matches two counts once.

        Example:
            ```python
            n = await Ticket.find(Ticket.status == "open").count()
            ```
        """
        db = self._database()
        _spaces, groups = await self._walks(db)
        collection = self.model.__flue_spec__.collection
        with db.client.span("count", collection):
            if len(groups) == 1:
                if len(groups[0]) == 1:  # one bucket: no task of its own
                    return await _count(db, groups[0][0][1])
                counted = await asyncio.gather(*(_count(db, plan) for _index, plan in groups[0]))
                return sum(counted)
            total, cursor = 0, None
            while True:
                found = await self._ids(db, MAX_PAGE, cursor, rows=False)
                total += len(found.ids)
                if found.next_cursor is None:
                    return total
                cursor = found.next_cursor

    async def explain(self) -> str:
        """Describe how this query runs: the candidate sets, their sizes, the filters; for
        a query with alternatives (``|``), each walk and how they are merged.

        Example:
            ```python
            print(await Ticket.find(Ticket.status == "open").explain())
            # walks flue::ticket:idx:status:b3Blbg (3 entries in bounds) ascending by created_at
            ```
        """
        db = self._database()
        _spaces, groups = await self._walks(db)
        if len(groups) == 1:
            return await _explain_walks(db, [plan for _index, plan in groups[0]])
        branches = self._branches()
        lines = [
            f"any of {len(branches)} alternatives: each walked from the same cursor, merged "
            "by (score, id), a record matched by several given once"
        ]
        for number, (branch, group) in enumerate(zip(branches, groups, strict=True), 1):
            shown = " & ".join(str(c) for c in branch) or "every record"
            lines.append(f"alternative {number}: {shown}")
            described = await _explain_walks(db, [plan for _index, plan in group])
            lines += ["  " + line for line in described.splitlines()]
        return "\n".join(lines)


async def _explain_walks(db: Database, plans: list[Plan]) -> str:
    """Describe one conjunction's walk, over every bucket of ``plans``."""
    plan = plans[0]
    low, high = plan.low.zset_text(), plan.high.zset_text()
    found = await db.run_batch(
        [("ZCOUNT", key, low, high) for each in plans for key in each.drivers]
    )
    width = len(plan.drivers)  # each bucket's plan names the same sets of its bucket
    counts = [sum(int(c) for c in found[i::width]) for i in range(width)]
    chosen = min(range(len(counts)), key=lambda i: (counts[i], i))
    direction = "descending" if plan.descending else "ascending"
    lines = [
        f"walks {plan.drivers[chosen]} ({counts[chosen]} entries in bounds) {direction} "
        f"by {plan.sort_field}, scores in [{low}, {high}]"
    ]
    if len(plans) > 1:
        lines.append(
            f"  in each of {len(plans)} buckets at once (the sets of bucket 0 are shown; "
            "entries are counted over every bucket), merged by (score, id)"
        )
    for key, count in zip(plan.drivers, counts, strict=True):
        if key != plan.drivers[chosen]:
            lines.append(f"  not chosen: {key} ({count} entries)")
    for f in plan.filters:
        lines.append(f"  filter {f.text}: {f.kind} on {', '.join(f.keys)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Run:
    """What one ``query`` script call returned: its matches as (score text, id), the
    last entry it examined, and whether the walk reached the end."""

    found: list[tuple[str, str]]
    last: tuple[str, str] | None
    exhausted: bool
    #: Each found id's hash, when the call read them.
    rows: list[dict[bytes, bytes] | Exception]


#: Plans made (:func:`plan_query` is pure: no I/O, no state), by model, key space (one
#: object per database and bucket), sort and conditions, so a query run again is not
#: planned again; cleared when it holds ``PLANS_KEPT``.
_PLANS: dict[tuple[object, ...], Plan] = {}
PLANS_KEPT = 1024


def _value_key(condition: Condition) -> tuple[object, ...]:
    """A condition as a memo key: each value by its type, itself and its repr, so values
    that are equal but planned apart (``0.0`` and ``-0.0``, ``Decimal("1.0")`` and
    ``Decimal("1.00")``, ``1`` and ``True``) are told apart."""
    values = tuple((type(v), v, repr(v)) for v in condition.values)
    return (condition.model, condition.field, condition.op, values)


#: The least ``SCAN_BUDGET`` each bucket's walk of a scatter-gather page gets.
MIN_BUCKET_BUDGET = 256


async def _run_query(
    db: Database,
    plan: Plan,
    position: tuple[str, str] | None,
    limit: int,
    budget: int = SCAN_BUDGET,
    *,
    rows: str = "",
) -> _Run:
    """Call the ``query`` script once on ``plan``'s sets (one bucket); ``rows``: the
    record key prefix, to read each found id's hash in the same call."""
    keys, args = plan.script_args(position, limit, budget, rows)
    reply = await db.scripts.call("query", keys=keys, args=args)
    if not isinstance(reply, list) or len(reply) != 8:  # a script/Python mismatch
        raise ScriptError("query", f"a reply of another shape: {reply!r:.200}")
    found, last_score, last_id, exhausted, _driver, _calls, scores, hashes = reply
    if len(scores) != len(found) or len(hashes) != (len(found) if rows else 0):
        raise ScriptError("query", f"{len(found)} ids but {len(scores)} scores")
    last = None if last_score in (b"", "") else (reply_text(last_score), reply_text(last_id))
    return _Run(
        [(reply_text(score), reply_text(item)) for score, item in zip(scores, found, strict=True)],
        last,
        bool(int(exhausted)),
        [
            reply_hash(raw) if isinstance(raw, list) else ResponseError(reply_text(raw))
            for raw in hashes
        ],
    )


def _order_key(item: tuple[str, str]) -> tuple[float, bytes]:
    """An entry's place in a sorted set: its score, then its member's bytes."""
    return float(item[0]), item[1].encode("utf-8", "surrogateescape")


def _walk_order(items: list[tuple[str, str]], descending: bool) -> list[tuple[str, str]]:
    """``items`` in the order a walk meets them: by score, ties by member bytes (both
    reversed for a descending walk), as ZRANGE and ZREVRANGE list a sorted set."""
    return sorted(items, key=_order_key, reverse=descending)


def _up_to(
    items: list[tuple[str, str]], frontier: tuple[str, str], descending: bool
) -> list[tuple[str, str]]:
    """The prefix of ``items`` (in walk order) that the walk meets no later than
    ``frontier``."""
    end = _order_key(frontier)
    if descending:
        return [item for item in items if _order_key(item) >= end]
    return [item for item in items if _order_key(item) <= end]


async def _count(db: Database, plan: Plan) -> int:
    """Count one bucket's matches: one ZCOUNT when a set holds exactly them, else a walk
    of the ids on the server."""
    sole = plan.filters[0] if len(plan.filters) == 1 else None
    # One equality set is the answer only when the walk is over every record of the
    # bucket (a sort by a range field lists only records where that field is set).
    if not plan.filters or (
        plan.walks_all and sole and sole.kind == "member" and len(sole.keys) == 1
    ):
        key = sole.keys[0] if sole else plan.drivers[0]
        return int(await db.client.zcount(key, plan.low.zset_text(), plan.high.zset_text()))
    total, position = 0, None
    while True:
        run = await _run_query(db, plan, position, 1000)
        total += len(run.found)
        if run.exhausted:
            return total
        position = run.last
