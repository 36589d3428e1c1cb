"""Forks (sharing a parent's history up to an entry) and deletion, which forks guard."""

from __future__ import annotations

from typing import Any, Literal, Self

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    AlreadyExistsError,
    CommandError,
    ConflictError,
    CorruptDataError,
    GuardError,
    NotFoundError,
    SessionForkedError,
)
from flue_models.model.fields import new_id as make_id
from flue_models.model.writes import (
    plan_delete,
    plan_save,
    retry_on_conflict,
    run_writes,
)
from flue_models.replies import reply_text
from flue_models.scripts import checked_reply
from flue_models.state.session.listing import Listing
from flue_models.state.session.row import (
    FORK_GRACE,
    MAX_FORK_DEPTH,
    Ancestor,
    ForkOrigin,
    SessionRow,
)
from flue_models.state.session_window import (
    lookup_positions,
)


class Forking(Listing):
    """Forks (a session sharing its parent's history up to an entry) and deletion, which
    forks guard: one part of :class:`~flue_models.state.session.Session`.

    Example:
        ```python
        child = await Session.fork("s-1", "m7", new_id="s-1/retry")
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def fork(
        cls,
        session_id: str,
        at_entry_id: str,
        *,
        new_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Self:
        """Create a session whose history is this one's up to ``at_entry_id`` (shared, not
        copied), with ``at_entry_id`` as its leaf; its new entries are its own.

        The fork records its parent and the position (:attr:`origin`); loads read the
        shared part from the parent's list, which cannot be deleted or replaced while a
        fork uses it (:class:`SessionForkedError`). Forking costs a few round trips,
        whatever the history's length; :meth:`load_context` on the fork reads back from
        the fork point to the context it needs.

        The fork may be in another bucket than its parent (another Cluster slot), so it
        is two atomic steps: a mark on the parent (with the check that the parent did not
        change since it was read), then the fork. A fork whose mark was taken meanwhile
        (the parent's deletion, see :data:`FORK_GRACE`) is deleted again and refused.

        Args:
            new_id: the fork's id (default: a new random id).
            metadata: the fork's metadata (default: empty).

        Raises:
            NotFoundError: no such session or entry in its history.
            ConflictError: the fork would be more than ``MAX_FORK_DEPTH`` deep.
            AlreadyExistsError: ``new_id`` is taken.

        Example:
            ```python
            retry = await Session.fork(session_id, "m7", new_id=f"{session_id}/retry-1")
            await retry.append(MessageEntry(id="m8b", parent_id="m7", role="user", content="..."))
            ```
        """
        database = pick_database(db)
        child_id = new_id if new_id is not None else make_id()

        async def attempt() -> Self:
            parent = await cls.get(session_id, db=database)
            if parent is None:
                raise NotFoundError(f"There is no session {session_id!r} to fork.")
            lineage = [Ancestor(session=parent.id, base=parent.base, entries=parent.inherited)]
            lineage += parent.origin.lineage if parent.origin is not None else []
            if len(lineage) > MAX_FORK_DEPTH:
                raise ConflictError(
                    f"Session {session_id!r} is {len(lineage) - 1} forks deep; a fork of it "
                    f"would pass MAX_FORK_DEPTH ({MAX_FORK_DEPTH})."
                )
            at, end, inherited = await parent._locate(database, at_entry_id, lineage)
            now = await database.server_time()
            child = cls(
                id=child_id, metadata=metadata or {}, created_at=now, updated_at=now,
                leaf_id=at_entry_id, entry_count=inherited, fork_of=session_id,
                origin=ForkOrigin(
                    parent=session_id, entry_id=at_entry_id, position=end,
                    entries=inherited, lineage=lineage,
                ),
            )  # fmt: skip
            # Where its context load starts: the parent's compacted context when the
            # fork point is in it, else the fork point (a load reads back from there).
            child.context_from = parent.context_from if parent.context_from <= at else at
            marked = await cls._mark(database, parent, child_id)
            try:
                await run_writes(database, [plan_save(child, database.keys)])
            except AlreadyExistsError:
                taken = await cls.get(child_id, db=database)
                if taken is None or taken.fork_of != session_id:
                    await cls._unmark(database, session_id, child_id, marked)
                raise
            if await database.client.zscore(database.keys.session(session_id).forks, child_id):
                return child
            await run_writes(database, [plan_delete(child, database.keys)])
            raise ConflictError(
                f"Session {session_id!r} was deleted while {child_id!r} was forked from it; "
                "nothing was forked."
            )

        return await retry_on_conflict(attempt)

    @classmethod
    async def _mark(cls, database: Database, parent: SessionRow, child_id: str) -> int:
        """Mark ``child_id`` as a fork of ``parent``, if ``parent`` is as it was read;
        return the mark's time (ms).

        Raises:
            ConflictError: the parent changed since it was read (or is gone).
        """
        own = database.keys.session(parent.id)
        keys = [own.row, own.forks]
        reply = await database.scripts.call(
            "session_fork", keys=keys, args=["mark", child_id, parent.version]
        )
        status, reply = checked_reply("session_fork", reply, {"ok": 2, "missing": 1, "conflict": 2})
        if status != "ok":
            found = int(reply[1]) if status == "conflict" else 0
            raise ConflictError.stale(cls.__name__, parent.id, parent.version, found)
        return int(reply[1])

    @classmethod
    async def _unmark(
        cls, database: Database, session_id: str, child_id: str, at: int | None = None
    ) -> bool:
        """Take the mark of ``child_id`` off ``session_id`` (only if it is still the one
        made at ``at`` ms, when given); return whether it was taken."""
        own = database.keys.session(session_id)
        keys = [own.row, own.forks]
        args = ["unmark", child_id, "" if at is None else at]
        reply = await database.scripts.call("session_fork", keys=keys, args=args)
        _status, reply = checked_reply("session_fork", reply, {"ok": 2})
        return int(reply[1]) == 1

    @classmethod
    async def forks_of(cls, session_id: str, *, db: Database | None = None) -> list[str]:
        """Return the ids of the forks of ``session_id``, as its marks name them.

        Marks left by forks that stopped half way, or by forks deleted before their mark
        was taken, are dropped once older than :data:`FORK_GRACE` (a younger one may be a
        fork being made).

        Raises:
            CorruptDataError: the marks are not a sorted set.

        Example:
            ```python
            await Session.forks_of("s-1")   # ['s-2', 's-3']
            ```
        """
        database = pick_database(db)
        forks_key = database.keys.session(session_id).forks
        try:
            marks = await database.client.zrange(forks_key, 0, -1, withscores=True)
        except CommandError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            found = reply_text(await database.client.type(forks_key))
            raise CorruptDataError.wrong_type("session delete", forks_key, found, "zset") from exc
        if not marks:
            return []
        marked = [(reply_text(mark[0]), int(mark[1])) for mark in marks]
        rows = await cls.read_records([child for child, _ in marked], db=database)
        oldest = (await database.server_time() - FORK_GRACE).timestamp() * 1000
        forks = []
        for (child_id, at), row in zip(marked, rows, strict=True):
            if isinstance(row, SessionRow) and row.fork_of == session_id:
                forks.append(child_id)
            elif at < oldest and (row is None or isinstance(row, SessionRow)):
                await cls._unmark(database, session_id, child_id, at)  # (an unreadable one stays)
        return forks

    async def _locate(
        self, database: Database, entry_id: str, lineage: list[Ancestor]
    ) -> tuple[int, int, int]:
        """Position, end position and entry count up to and with ``entry_id``."""
        layers = self.layers()
        at = (await lookup_positions(database, layers, [entry_id]))[entry_id]
        if at is None:
            raise NotFoundError(f"Session {self.id!r} has no entry {entry_id!r} to fork at.")
        layer = next(layer for layer in layers if layer.covers(at))
        owner = next(a for a in lineage if a.session == layer.owner)
        row_key, list_key, _ids, _forks = database.keys.session(layer.owner)
        first, length, count = await database.run_batch(
            [("LINDEX", list_key, at - layer.lo), ("LLEN", list_key),
             ("HGET", row_key, "entry_count")],
            atomic=True,
        )  # fmt: skip
        if first is None:  # deleted since it was found (a racing delete): nothing forked
            raise NotFoundError(
                f"Entry {entry_id!r} of session {layer.owner!r} is gone (the session was "
                "deleted meanwhile); nothing was forked."
            )
        if first[:1] not in (b"E", b"H"):
            raise CorruptDataError(
                f"Entry {entry_id!r} of session {layer.owner!r} is not readable."
            )
        elements = 1 if first[:1] == b"E" else 1 + int(first[1:])
        before = at - layer.lo
        if count is None or int(length) != int(count) - owner.entries:  # chunked entries
            reply = await database.scripts.call("session_count", keys=[list_key], args=[before])
            _status, reply = checked_reply("session_count", reply, {"ok": 2})
            before = int(reply[1])
        return at, at + elements, owner.entries + before + 1

    @classmethod
    async def delete_id(
        cls,
        record_id: str,
        *,
        db: Database | None = None,
        forks: Literal["refuse", "cascade"] = "refuse",
    ) -> bool:
        """Delete the session and its entries; ``False`` if there is none.

        Args:
            forks: a session with forks is refused (``"refuse"``, raising
                :class:`SessionForkedError`), or deleted after its forks and theirs
                (``"cascade"``).

        Example:
            ```python
            await Session.delete_id(session_id, forks="cascade")
            ```
        """
        database = pick_database(db)

        async def attempt() -> bool:
            current = await cls.get(record_id, db=database)
            return current is not None and await current.delete(db=database, forks=forks)

        return await retry_on_conflict(attempt)

    async def delete(
        self, *, db: Database | None = None, forks: Literal["refuse", "cascade"] = "refuse"
    ) -> bool:
        """Delete this session under the version check; see :meth:`delete_id` for ``forks``.

        A fork's mark on its parent is taken after the fork is gone (it is in the parent's
        bucket); one a crash left behind is dropped by the parent's deletion.

        Example:
            ```python
            await session.delete()
            ```
        """
        if self.version == 0:
            return False
        database = self._database(db)
        # The delete's guard refuses while any mark is there; only then are the marks read
        # (a session without forks is deleted in one call).
        for attempt in range(4):
            if attempt == 2 and forks == "refuse":  # a fork is being made (or was cut short)
                raise SessionForkedError(self.id, "it was not deleted")
            if attempt > 0:  # refused: read the marks, dropping those of no fork once old
                live = await type(self).forks_of(self.id, db=database)
                if live and forks == "refuse":
                    raise SessionForkedError(self.id, "it was not deleted")
                for child_id in live:
                    await type(self).delete_id(child_id, db=database, forks="cascade")
            try:
                await run_writes(database, [plan_delete(self, database.keys)])
            except GuardError:
                continue  # marks: forks (made meanwhile, for a cascade) or forks being made
            if self.fork_of is not None:
                await self._unmark(database, self.fork_of, self.id)
            return True
        raise SessionForkedError(self.id, "it was not deleted: forks kept appearing")
