"""The query planner: conditions and a sort become a :class:`Plan` (no I/O).

A plan names the sorted sets that may drive the walk (the script picks the one with the
fewest entries inside the score bounds), the score bounds, and the filters the ``query``
script checks on each candidate with ZSCORE. Cursors are keyset positions bound to the
plan's fingerprint.

Example:
    ```python
    plan = plan_query(Ticket.__flue_spec__, db.keys, [Ticket.status == "open"], "-created_at")
    keys, args = plan.script_args(cursor=None, limit=50)
    ```
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flue_models.errors import QueryError
from flue_models.keys import KeySpace
from flue_models.model.expressions import Condition
from flue_models.model.spec import ModelSpec

#: Most Redis calls (each ZSCORE, ZRANGE, ZCOUNT) one query script call makes before it
#: returns what it has so far: a few milliseconds of server time, whatever the query (a
#: 10,000-value ``in_`` included), so other clients are never held up for long.
SCAN_BUDGET = 10_000
#: An ``in_`` over more values than this is checked against each candidate row's own
#: record of its index entries (``_owned``: one read) instead of one ZSCORE per value, so
#: its cost does not grow with the number of values.
OWNED_CHECK_FROM = 8


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
        Filter("member", ("flue::ticket:idx:status:b3Blbg",), text="status == 'open'")
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
    #: The walk is over the collection's ``all`` set (a sort by ``Meta.order_by``), so it
    #: passes every record; a sort by a range field passes only records where it is set.
    walks_all: bool = False

    def script_args(
        self,
        cursor: tuple[str, str] | None,
        limit: int,
        budget: int = SCAN_BUDGET,
        rows: str = "",
    ) -> tuple[list[str], list[Any]]:
        """Return the KEYS and ARGV of one ``query`` script call (``budget``: the most
        Redis calls it makes; ``rows``: the record key prefix to read each id's hash in
        the same call, ``""`` for ids only).

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
            budget,
            len(self.filters),
        ]
        for f in self.filters:
            keys += f.keys
            args += [f.kind, len(f.keys), *f.args]
        args.append(rows)
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
        plan.drivers   # ('flue::ticket:all', 'flue::ticket:idx:status:b3Blbg')
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
            if cond.op in ("ne", "nin"):
                filters.append(Filter("notmember", sets, text=str(cond)))
            elif len(sets) > OWNED_CHECK_FROM:  # one read per candidate, not one per set
                row = keys.relative(keys.record_prefix(spec.collection))
                filters.append(Filter("owned", sets, (keys.head, row), text=str(cond)))
            else:
                filters.append(Filter("member", sets, text=str(cond)))
            if cond.op == "eq":
                equal_to[cond.field] = cond.values[0]
                if by_order:
                    drivers.append(sets[0])
        else:  # equality on a range-only field: compare its score
            scores = tuple(_score_text(codec.score(v)) for v in cond.values)
            kind = "notscore" if cond.op in ("ne", "nin") else "score"
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
        walks_all=by_order,
    )


def encode_cursor(fingerprint: str, score: str, record_id: str) -> str:
    """Return an opaque cursor naming the last examined entry of a query.

    Example:
        >>> decode_cursor("abc", encode_cursor("abc", "12.5", "t-1"))
        ('12.5', 't-1')
    """
    payload = json.dumps({"q": fingerprint, "s": score, "i": record_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def cursor_parts(cursor: str) -> tuple[str, str, str]:
    """Return a cursor's ``(query fingerprint, score, id)``, whatever query made it.

    Raises:
        QueryError: the cursor is not one this library made.

    Example:
        >>> cursor_parts(encode_cursor("abc", "12.5", "t-1"))
        ('abc', '12.5', 't-1')
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        score, record_id, made_by = str(payload["s"]), str(payload["i"]), str(payload["q"])
        if math.isnan(float(score)):
            raise ValueError("not a score")
    except (ValueError, KeyError, TypeError, AttributeError):
        shown = repr(cursor)[:40] if isinstance(cursor, str) else type(cursor).__name__
        raise QueryError(
            f"Malformed cursor {shown}: not one this library made. Pass back the "
            "next_cursor of a page unchanged."
        ) from None
    return made_by, score, record_id


def decode_cursor(fingerprint: str, cursor: str) -> tuple[str, str]:
    """Return ``(score, id)`` from a cursor made by the same query.

    Raises:
        QueryError: the cursor is malformed or belongs to another query.

    Example:
        >>> decode_cursor("abc", "not-a-cursor")
        Traceback (most recent call last):
        ...
        flue_models.errors.QueryError: Malformed cursor 'not-a-cursor': ...
    """
    made_by, score, record_id = cursor_parts(cursor)
    if made_by != fingerprint:
        raise QueryError(
            "This cursor was made by a different query (other conditions or sort); a cursor "
            "continues only the query that returned it."
        )
    return score, record_id
