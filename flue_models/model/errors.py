"""Errors of the model layer."""

from __future__ import annotations

from flue_models.errors import FlueModelsError


class ConflictError(FlueModelsError):
    """A write was refused because the record changed since this copy was read.

    Attributes:
        model: the model's class name.
        record_id: the record's id.
        expected: the version this copy was based on (0: a new record).
        found: the version in the store (0: the record does not exist).

    Example:
        ```python
        try:
            await stale_copy.save()
        except fm.ConflictError as exc:
            fresh = await Ticket.get(exc.record_id)
        ```
    """

    def __init__(self, model: str, record_id: str, expected: int, found: int) -> None:
        self.model = model
        self.record_id = record_id
        self.expected = expected
        self.found = found
        what = "was deleted by another writer" if found == 0 else "was changed by another writer"
        super().__init__(
            f"{model} {record_id!r} {what}: this copy has version {expected}, the store has "
            f"version {found}. Nothing was written; load it again with "
            f"{model}.get({record_id!r}) and reapply the change."
        )


class AlreadyExistsError(ConflictError):
    """A new record was saved (or created) with an id that is already taken.

    Example:
        ```python
        await Ticket.create(id="t-1", status="open", priority=1)
        await Ticket.create(id="t-1", status="open", priority=1)   # AlreadyExistsError
        ```
    """

    def __init__(self, model: str, record_id: str, found: int) -> None:
        self.model = model
        self.record_id = record_id
        self.expected = 0
        self.found = found
        FlueModelsError.__init__(
            self,
            f"{model} {record_id!r} already exists (version {found}); nothing was written. "
            f"Load it with {model}.get({record_id!r}) to change it, or choose another id.",
        )


class IdClaimedError(AlreadyExistsError):
    """A new record's id is held by a record of another partition (``Meta.partition_by``):
    ``get`` finds a record by its id alone, so an id names one record in the collection.

    Example:
        ```python
        await Order.create(id="o-1", tenant="acme")
        await Order.create(id="o-1", tenant="globex")   # IdClaimedError
        ```
    """

    def __init__(self, model: str, record_id: str, field: str, partition: str) -> None:
        self.model = model
        self.record_id = record_id
        self.expected = self.found = 0
        self.partition = partition
        FlueModelsError.__init__(
            self,
            f"{model} {record_id!r} is taken by the record with {field} = {partition!r}; "
            "nothing was written. Choose another id.",
        )


class AmbiguousIdError(FlueModelsError):
    """A read by id alone found records of that id in more than one partition (two
    creates in two partitions raced); read it with its partition value.

    Example:
        ```python
        await Order.get("o-1")                     # AmbiguousIdError
        await Order.get("o-1", partition="acme")   # the record of that partition
        ```
    """

    def __init__(self, model: str, record_id: str, keys: list[str]) -> None:
        self.model, self.record_id, self.keys = model, record_id, keys
        super().__init__(
            f"{model} {record_id!r} is held by {len(keys)} records ({', '.join(keys)}); "
            f"read it with {model}.get({record_id!r}, partition=...), and delete the one "
            "you do not want."
        )


class PartitionChangeError(FlueModelsError):
    """A save would change the ``Meta.partition_by`` field of a stored record (which
    would move it to another bucket); the field is fixed for the record's life.

    Example:
        ```python
        order = await Order.get("o-1")
        await order.update(tenant="globex")   # PartitionChangeError
        ```
    """

    def __init__(self, model: str, record_id: str, field: str) -> None:
        self.model, self.record_id, self.field = model, record_id, field
        super().__init__(
            f"{model} {record_id!r}: {field!r} places the record and cannot change; "
            f"nothing was written. Create a new record with the new {field} and delete "
            "this one."
        )


class UniqueViolationError(FlueModelsError):
    """A save would give a second record the value of a ``Unique()`` field.

    Example:
        ```python
        await User.create(email="a@example.com")
        await User.create(email="a@example.com")   # UniqueViolationError
        ```
    """

    def __init__(self, model: str, field: str, value: object, holder: str) -> None:
        self.model = model
        self.field = field
        self.value = value
        self.holder = holder
        super().__init__(
            f"{model}.{field} = {value!r} is already held by {model} {holder!r}; values of a "
            "Unique() field must differ. Nothing was written."
        )


class DecodeError(FlueModelsError):
    """A stored hash cannot be read as the model (edited by hand, or by other software).

    Example:
        ```python
        await Ticket.get("t-1")   # DecodeError: key flue::ticket:dC0x, field 'priority': ...
        ```
    """

    def __init__(self, key: str, field: str, problem: str) -> None:
        self.key = key
        self.field = field
        super().__init__(
            f"The record at {key} cannot be decoded: field {field!r} {problem}. Repair or "
            "delete the hash, or check what else writes under this prefix."
        )


class GuardError(FlueModelsError):
    """A write was refused because a key it is guarded by exists (e.g. a deletion marker).

    Example:
        ```python
        write.absent.append(marker_key)   # the save is refused while marker_key exists
        ```
    """

    def __init__(self, model: str, record_id: str, key: str) -> None:
        self.model = model
        self.record_id = record_id
        self.key = key
        super().__init__(
            f"{model} {record_id!r} was not written: {key} exists, which this write is "
            "guarded against. Nothing was written."
        )


class DuplicateWriteError(FlueModelsError):
    """One batch holds two writes of one record; nothing was written.

    Both copies would pass the version check against the same stored version, so one
    update would be lost without a word.

    Example:
        >>> "t-1" in str(DuplicateWriteError("Ticket", "t-1"))
        True
    """

    def __init__(self, model: str, record_id: str) -> None:
        self.model = model
        self.record_id = record_id
        super().__init__(
            f"save_many got {model} {record_id!r} twice; nothing was written. Merge the "
            "changes into one copy, or save the copies one after the other."
        )


class SkippedRecordWarning(UserWarning):
    """A query with ``on_error("skip")`` left out a record it could not read.

    Example:
        ```python
        warnings.simplefilter("error", SkippedRecordWarning)   # make skips fatal in tests
        ```
    """
