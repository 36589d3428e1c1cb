"""Field markers (``Indexed``, ``Unique``), default factories, and a model's index plan.

Example:
    ```python
    class Ticket(Model):
        class Meta:
            collection = "ticket"
            order_by = "created_at"
            indexes = [("status", "priority")]        # a compound equality index
        id: str = fm.new_id()
        status: Annotated[str, Indexed()]
        priority: Annotated[int, Indexed(range=True)]
        email: Annotated[str, Unique()]
        created_at: datetime = fm.now()
    ```
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import Field


@dataclass(frozen=True)
class Indexed:
    """Mark a field as queryable.

    ``Indexed()`` keeps an equality index (``==``, ``!=``, ``in_``), ordered by the model's
    ``order_by`` field. ``Indexed(range=True)`` also keeps a range index scored by the
    value itself (``<``, ``<=``, ``>``, ``>=`` and ``sort_by``), for numbers, dates and
    datetimes.

    Example:
        ```python
        status: Annotated[str, Indexed()]
        priority: Annotated[int, Indexed(range=True)]
        ```
    """

    range: bool = False


@dataclass(frozen=True)
class Unique(Indexed):
    """Mark a field whose value at most one record may hold; it is also equality-indexed.

    A save that would give a second record the same value is refused atomically with
    :class:`~flue_models.model.UniqueViolationError`.

    Example:
        ```python
        email: Annotated[str, Unique()]
        ```
    """


def make_id() -> str:
    """Return a new random id: 32 hex characters (a UUID4), for any record or entry.

    Unlike :func:`new_id`, which is a field's *default*, this is a plain string.

    Example:
        >>> len(make_id())
        32
    """
    return uuid.uuid4().hex


def new_id() -> Any:
    """Default for an id field: a random 32-character hex string per record
    (:func:`make_id`). It returns a field default, not an id: call :func:`make_id` for one.

    Example:
        ```python
        id: str = fm.new_id()
        ```
    """
    return Field(default_factory=make_id)


def now() -> Any:
    """Default for a datetime field: the time of creation, timezone-aware (UTC). It
    returns a field default, not a time: ``datetime.now(UTC)`` gives one.

    Example:
        ```python
        created_at: datetime = fm.now()
        ```
    """
    return Field(default_factory=lambda: dt.datetime.now(dt.UTC))
