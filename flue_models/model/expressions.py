"""Query conditions built from class attributes: ``Ticket.status == "open"``.

A condition is checked when it is built: the field must carry the index the operator
needs, and the value must be valid for the field. Conditions combine with ``&`` (all
hold: :class:`AllOf`), ``|`` (any holds: :class:`AnyOf`, kept as alternatives of
conjunctions) and ``~`` (the opposite condition: ``~(f == v)`` is ``f != v``, ``~(f < v)``
is ``f >= v``; a negated group is turned round by De Morgan's laws). Nothing here touches
Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from flue_models.errors import QueryError

if TYPE_CHECKING:
    from flue_models.model.spec import ModelSpec

Op = Literal["eq", "ne", "in", "nin", "lt", "le", "gt", "ge"]
_SYMBOLS = {
    "eq": "==",
    "ne": "!=",
    "in": "in",
    "nin": "not in",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
}
#: Each operator's opposite. A range's opposite holds only where the field is set, as
#: the range does: a record without the field matches neither ``f < 3`` nor ``f >= 3``.
_OPPOSITE: dict[Op, Op] = {
    "eq": "ne",
    "ne": "eq",
    "in": "nin",
    "nin": "in",
    "lt": "ge",
    "ge": "lt",
    "le": "gt",
    "gt": "le",
}
#: The most alternatives a query may have once its ``|`` and ``~`` are multiplied out:
#: each is one walk of the index per bucket, merged by (score, id).
MAX_ALTERNATIVES = 16

Branches = tuple[tuple["Condition", ...], ...]


def _branches(item: Condition | AllOf | AnyOf) -> Branches:
    """The alternatives of a condition or group, each a conjunction of conditions."""
    if isinstance(item, AnyOf):
        return item.branches
    if isinstance(item, AllOf | Condition):
        return (item.conditions,)
    raise QueryError(f"Combine query conditions with & | ~, not with {item!r}.")


def _any_of(branches: Branches) -> AnyOf:
    if len(branches) > MAX_ALTERNATIVES:
        raise QueryError(
            f"This condition has {len(branches)} alternatives once its | and ~ are multiplied "
            f"out; at most {MAX_ALTERNATIVES} are walked. Use in_() for many values of one "
            "field, or split the query."
        )
    return AnyOf(branches)


def _both(left: Condition | AllOf | AnyOf, right: Condition | AllOf | AnyOf) -> AllOf | AnyOf:
    """``left & right``: one conjunction, or the alternatives multiplied out."""
    if isinstance(left, AnyOf) or isinstance(right, AnyOf):
        return _any_of(tuple(a + b for a in _branches(left) for b in _branches(right)))
    return AllOf(left.conditions + right.conditions)


@dataclass(frozen=True)
class Condition:
    """One comparison of a field with one or more values (already validated).

    Example:
        ```python
        cond = Ticket.priority >= 2
        cond.field, cond.op, cond.values   # ('priority', 'ge', (2,))
        ```
    """

    model: type[Any]
    field: str
    op: Op
    values: tuple[Any, ...]

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """This condition as a one-element conjunction.

        Example:
            ```python
            (Ticket.status == "open").conditions   # (Condition(...),)
            ```
        """
        return (self,)

    def __and__(self, other: Condition | AllOf | AnyOf) -> AllOf | AnyOf:
        return _both(self, other)

    def __or__(self, other: Condition | AllOf | AnyOf) -> AnyOf:
        return _any_of(_branches(self) + _branches(other))

    def __invert__(self) -> Condition:
        return Condition(self.model, self.field, _OPPOSITE[self.op], self.values)

    def __bool__(self) -> bool:
        raise QueryError(
            f"A query condition ({self}) has no truth value; pass it to find() or combine "
            "conditions with & | ~ instead of `and`, `or`, `not`."
        )

    def __str__(self) -> str:
        shown = list(self.values) if self.op in ("in", "nin") else self.values[0]
        return f"{self.field} {_SYMBOLS[self.op]} {shown!r}"


@dataclass(frozen=True)
class AllOf:
    """Several conditions that must all hold (``a & b``).

    Example:
        ```python
        both = (Ticket.status == "open") & (Ticket.priority >= 2)
        ```
    """

    conditions: tuple[Condition, ...]

    def __and__(self, other: Condition | AllOf | AnyOf) -> AllOf | AnyOf:
        return _both(self, other)

    def __or__(self, other: Condition | AllOf | AnyOf) -> AnyOf:
        return _any_of(_branches(self) + _branches(other))

    def __invert__(self) -> AnyOf:
        return _any_of(tuple((~cond,) for cond in self.conditions))

    def __bool__(self) -> bool:
        raise QueryError(
            "Combine query conditions with & | ~ (not `and`, `or`, `not`) and pass them to find()."
        )


@dataclass(frozen=True)
class AnyOf:
    """Alternatives, any of which may hold (``a | b``), each a conjunction of conditions.

    A query with alternatives walks the index once per alternative (and bucket) in the
    same order and merges the walks by (score, id), dropping repeats: pages and cursors
    work as for any query, and ``explain()`` shows each walk.

    Example:
        ```python
        urgent = (Ticket.status == "open") | (Ticket.priority >= 4)
        await Ticket.find(urgent & ~(Ticket.owner == "bot")).page(limit=50)
        ```
    """

    branches: Branches

    def __and__(self, other: Condition | AllOf | AnyOf) -> AllOf | AnyOf:
        return _both(self, other)

    def __or__(self, other: Condition | AllOf | AnyOf) -> AnyOf:
        return _any_of(self.branches + _branches(other))

    def __invert__(self) -> AllOf | AnyOf:
        if not self.branches:  # no alternative: nothing matches; its opposite: everything
            return AllOf(())
        result: AllOf | AnyOf = ~AllOf(self.branches[0])
        for branch in self.branches[1:]:
            result = _both(result, ~AllOf(branch))
        return result

    def __bool__(self) -> bool:
        raise QueryError(
            "Combine query conditions with & | ~ (not `and`, `or`, `not`) and pass them to find()."
        )

    def __str__(self) -> str:
        return " | ".join("(" + " & ".join(map(str, b)) + ")" for b in self.branches)


class FieldRef:
    """What ``Model.<field>`` returns on the class: builds conditions on that field.

    Example:
        ```python
        Ticket.status == "open"
        Ticket.status.in_(["open", "stalled"])
        Ticket.priority >= 2
        ```
    """

    __slots__ = ("model", "name", "spec")

    def __init__(self, model: type[Any], name: str, spec: ModelSpec) -> None:
        self.model = model
        self.name = name
        self.spec = spec

    def __repr__(self) -> str:
        return f"{self.model.__name__}.{self.name}"

    def _value(self, value: Any) -> Any:
        if value is None:
            raise QueryError(
                f"Cannot compare {self!r} with None: unset fields are not indexed. Filter on "
                "a value instead."
            )
        codec = self.spec.codecs[self.name]
        try:
            return codec.adapter.validate_python(value)
        except ValidationError as exc:
            raise QueryError(
                f"{value!r} is not a valid value for {self!r}: {exc.errors()[0]['msg']}."
            ) from None

    def _equality(self, op: Op, values: Iterable[Any]) -> Condition:
        if self.name not in self.spec.equality_fields | self.spec.range_fields:
            raise QueryError(
                f"{self!r} has no index, so {_SYMBOLS[op]} cannot be queried on it. Mark it "
                f"`{self.name}: Annotated[..., Indexed()]` (and rebuild the indexes of "
                "existing records with a migration)."
            )
        return Condition(self.model, self.name, op, tuple(self._value(v) for v in values))

    def _range(self, op: Op, value: Any) -> Condition:
        if self.name not in self.spec.range_fields:
            raise QueryError(
                f"{self!r} has no range index, so {_SYMBOLS[op]} cannot be queried on it. Mark "
                f"it `{self.name}: Annotated[..., Indexed(range=True)]`."
            )
        return Condition(self.model, self.name, op, (self._value(value),))

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return self._equality("eq", [value])

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return self._equality("ne", [value])

    def __hash__(self) -> int:
        return hash((self.model, self.name))

    def in_(self, values: Iterable[Any]) -> Condition:
        """Match records whose field equals any of ``values``.

        Example:
            ```python
            await Ticket.find(Ticket.status.in_(["open", "stalled"])).all()
            ```
        """
        listed = list(values)
        if not listed:
            raise QueryError(f"{self!r}.in_() needs at least one value.")
        return self._equality("in", listed)

    def __lt__(self, value: Any) -> Condition:
        return self._range("lt", value)

    def __le__(self, value: Any) -> Condition:
        return self._range("le", value)

    def __gt__(self, value: Any) -> Condition:
        return self._range("gt", value)

    def __ge__(self, value: Any) -> Condition:
        return self._range("ge", value)


def in_(field: Any, values: Iterable[Any]) -> Condition:
    """Match records whose ``field`` equals any of ``values`` (a type-checker-friendly ``.in_``).

    Type checkers see ``Ticket.status`` as ``str``, which has no ``in_``; this function
    takes the same arguments and type-checks.

    Example:
        ```python
        await Ticket.find(fm.in_(Ticket.status, ["open", "stalled"])).all()
        ```
    """
    if not isinstance(field, FieldRef):
        raise QueryError(f"in_() takes a model field such as Ticket.status, not {field!r}.")
    return field.in_(values)


def _expression(item: Any, where: str) -> Condition | AllOf | AnyOf:
    if not isinstance(item, Condition | AllOf | AnyOf):
        raise QueryError(f"{where} takes conditions such as Ticket.status == 'open', not {item!r}.")
    return item


def any_of(*conditions: Any) -> AnyOf:
    """Match records that meet any of ``conditions`` (a type-checker-friendly ``|``).

    Type checkers see ``Ticket.status == "open"`` as ``bool``, and ``a | b`` of two bools
    as a bool; this function takes the conditions and returns what ``|`` would.

    Example:
        ```python
        await Ticket.find(fm.any_of(Ticket.status == "open", Ticket.priority >= 4)).all()
        ```
    """
    if not conditions:
        raise QueryError("any_of() needs at least one condition.")
    found = _expression(conditions[0], "any_of()")
    alternatives = _branches(found)
    for item in conditions[1:]:
        alternatives += _branches(_expression(item, "any_of()"))
    return _any_of(alternatives)


def not_(condition: Any) -> Condition | AllOf | AnyOf:
    """The opposite of ``condition`` (a type-checker-friendly ``~``): ``f != v`` for
    ``f == v``, ``f >= v`` for ``f < v`` (a record without the field matches neither),
    and a group turned round by De Morgan's laws.

    Example:
        ```python
        await Ticket.find(fm.not_(Ticket.status == "closed")).all()
        ```
    """
    return ~_expression(condition, "not_()")
