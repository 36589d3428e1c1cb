"""Query conditions built from class attributes: ``Ticket.status == "open"``.

A condition is checked when it is built: the field must carry the index the operator
needs, and the value must be valid for the field. Nothing here touches Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from flue_models.errors import QueryError

if TYPE_CHECKING:
    from flue_models.model.spec import ModelSpec

Op = Literal["eq", "ne", "in", "lt", "le", "gt", "ge"]
_SYMBOLS = {"eq": "==", "ne": "!=", "in": "in", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


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

    def __and__(self, other: Condition | AllOf) -> AllOf:
        return AllOf(self.conditions + other.conditions)

    def __bool__(self) -> bool:
        raise QueryError(
            f"A query condition ({self}) has no truth value; pass it to find() or combine "
            "conditions with & instead of `and`."
        )

    def __str__(self) -> str:
        shown = list(self.values) if self.op == "in" else self.values[0]
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

    def __and__(self, other: Condition | AllOf) -> AllOf:
        return AllOf(self.conditions + other.conditions)

    def __bool__(self) -> bool:
        raise QueryError("Combine query conditions with & (not `and`) and pass them to find().")


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
