"""Opening and loading a session: whole, or its active context alone."""

from __future__ import annotations

from typing import Any, Self

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    AlreadyExistsError,
    ConflictError,
)
from flue_models.replies import reply_hash
from flue_models.scripts import checked_reply
from flue_models.state.session.row import (
    MIN_STEP,
    SessionRow,
)
from flue_models.state.session_window import (
    AnyEntry,
    Need,
    SessionContext,
    Window,
    decode_run,
    lookup_positions,
    read_window,
    walk_context,
)


class Loading(SessionRow):
    """Opening and loading a session, whole or its active context alone: one part of
    :class:`~flue_models.state.session.Session`.

    Example:
        ```python
        session = await Session.load_context("support/eu-1/claude/main")
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def open(
        cls,
        session_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        context_only: bool = False,
        db: Database | None = None,
    ) -> Self:
        """Return the session with this id, creating it (server time) if it is new.

        Args:
            metadata: the metadata of a new session (an existing one keeps its own).
            context_only: read an existing session as :meth:`load_context` does (only
                what its context needs) instead of as :meth:`load` does (everything).

        Example:
            ```python
            session = await Session.open(session_key("support", "eu-1", "claude", "main"))
            long_lived = await Session.open(agent_session_id, context_only=True)
            ```
        """
        database = pick_database(db)
        read = cls.load_context if context_only else cls.load
        existing = await read(session_id, db=database)
        if existing is not None:
            return existing
        now = await database.server_time()
        fresh = cls(id=session_id, metadata=metadata or {}, created_at=now, updated_at=now)
        try:
            await fresh.save(db=database)
        except AlreadyExistsError:
            loaded = await read(session_id, db=database)
            assert loaded is not None
            return loaded
        fresh._entries = []
        return fresh

    @classmethod
    async def load(cls, session_id: str, *, db: Database | None = None) -> Self | None:
        """Return the whole session (record and entries, read atomically), or ``None``.

        A fork's entries include the history it shares with its parent. For a long
        session, :meth:`load_context` reads only what the context needs.

        Example:
            ```python
            session = await Session.load("support/eu-1/claude/main")
            ```
        """
        database = pick_database(db)
        key, entries_key, _ids, _forks = database.keys.session(session_id)
        raw, elements = await database.run_batch(
            [("HGETALL", key), ("LRANGE", entries_key, 0, -1)], atomic=True
        )
        if not raw:
            return None
        session = cls.from_hash(key, reply_hash(raw), database)
        own = decode_run(entries_key, elements, session.base)
        shared: list[tuple[int, AnyEntry]] = []
        if session.base > 0:  # a fork: its parent's history up to the fork point never changes
            shared, _ = await read_window(database, session.layers()[1:], 0, session.base)
        session._entries = [entry for _, entry in (*shared, *own)]
        return session

    @classmethod
    async def load_context(cls, session_id: str, *, db: Database | None = None) -> Self | None:
        """Return the session with only the entries its context needs, or ``None``.

        Reads the record and the entries from the latest compaction's first kept entry
        to the end, in one atomic call; reads further back only when the branch of the
        leaf needs it (a branch that leaves the compacted line, a fork made before a
        compaction), so a session of 50,000 entries with a 40-entry context moves about
        40 entries. :meth:`context` answers as for a full load; :attr:`entries` holds
        the entries read (from :attr:`loaded_from` on). Older entries: :meth:`history`.

        Example:
            ```python
            session = await Session.load_context(session_id)
            context = session.context()
            ```
        """
        database = pick_database(db)
        row_key, entries_key, _ids, _forks = database.keys.session(session_id)
        for _attempt in range(8):
            reply = await database.scripts.call(
                "session_window", keys=[row_key, entries_key], args=[]
            )
            status, reply = checked_reply("session_window", reply, {"ok": 4, "missing": 1})
            if status == "missing":
                return None
            session = cls.from_hash(row_key, reply_hash(reply[1]), database)
            start = int(reply[2])
            first = Window(start)
            first.add(decode_run(entries_key, reply[3], start, ragged=True))
            version = session.version
            window: Window | None = first
            if session.context_from < start:  # the context starts in a parent's history
                window = await session._extend(database, first, session.context_from, version)
            if window is not None:
                window = await session._resolve(database, window, session.leaf_id, version)
            if window is not None:
                session._entries = window.entries()
                session._loaded_from = window.start
                session._positions, session._absent = window.positions, window.absent
                return session
            # the session was replaced meanwhile (save_snapshot): read it again
        raise ConflictError.stale(cls.__name__, session_id, 0, 0)

    async def _extend(
        self, database: Database, window: Window, start: int, version: int | None
    ) -> Window | None:
        """Read ``[start, window.start)`` into ``window``; ``None`` if the record's version
        is not ``version`` (its entries were replaced: the window is stale)."""
        row_key = database.keys.session(self.id).row
        check = [("HGET", row_key, "version")] if version is not None else []
        entries, stored = await read_window(
            database, self.layers(), start, window.start, also=check
        )
        if version is not None and (stored[0] is None or int(stored[0]) != version):
            return None
        window.add(entries)
        window.start = start
        return window

    async def _resolve(
        self, database: Database, window: Window, leaf_id: str | None, version: int | None
    ) -> Window | None:
        """Read further back until the context of ``leaf_id`` is in ``window``."""
        while isinstance(need := walk_context(leaf_id, window), Need):
            wanted = [need.id] if need.first_kept is None else [need.id, need.first_kept]
            found = await lookup_positions(database, self.layers(), wanted)
            for entry_id, position in found.items():
                if position is None:
                    window.absent.add(entry_id)
                else:
                    window.positions[entry_id] = position
            at = found[need.id]
            if at is None or at >= window.start:
                window.absent.add(need.id)  # not stored, or not where the window is
                continue
            if need.first_kept is not None:
                kept_at = found[need.first_kept]
                if kept_at is None or at < kept_at:
                    continue  # the walk now ends there
            read = max(MIN_STEP, len(window.items))
            start = max(0, min(at, window.start - read))
            extended = await self._extend(database, window, start, version)
            if extended is None:
                return None
        return window

    def context(self) -> SessionContext:
        """Return the latest compaction summary and the messages from its first kept entry
        to the leaf, following ``parent_id`` links from the leaf.

        Raises:
            ConflictError: this copy was loaded with :meth:`load_context` and its appends
                since need entries it did not read (load the context again).

        Example:
            ```python
            context = (await Session.load(session_id)).context()
            ```
        """
        window = Window(
            self._loaded_from, positions=dict(self._positions), absent=set(self._absent)
        )
        window.add(self._positioned())
        result = walk_context(self.leaf_id, window)
        if isinstance(result, Need):
            raise ConflictError(
                f"The context of session {self.id!r} now needs entry {result.id!r}, which "
                "this copy did not read; use Session.load_context(id) again."
            )
        return result[0]

    def _positioned(self) -> list[tuple[int, AnyEntry]]:
        # Positions only order the entries here; ids map to their first occurrence.
        return [(self._loaded_from + i, entry) for i, entry in enumerate(self.entries)]
