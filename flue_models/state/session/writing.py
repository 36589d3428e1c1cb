"""Appending entries and replacing them with a snapshot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Self

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    ConfigurationError,
    ConflictError,
    GuardError,
    SessionForkedError,
)
from flue_models.model.spec import OWNED_FIELD as OWNED, encode_owned
from flue_models.model.writes import (
    held,
    hold,
    plan_save,
    retry_on_conflict,
    run_writes,
)
from flue_models.replies import reply_text
from flue_models.scripts import checked_reply
from flue_models.state.session.context import Loading
from flue_models.state.session.row import (
    encode_entry,
)
from flue_models.state.session_window import (
    AnyEntry,
    CompactionEntry,
    MessageEntry,
    Need,
    Window,
    lookup_positions,
    walk_context,
)


class Appending(Loading):
    """Appending entries, and replacing them with a snapshot: one part of
    :class:`~flue_models.state.session.Session`.

    Example:
        ```python
        await session.append(MessageEntry(id="m2", parent_id="m1", role="user", content="hi"))
        ```
    """

    class Meta:
        abstract = True

    async def append(self, entry: AnyEntry, *, once: bool = False) -> None:
        """Append one entry and make it the leaf. See :meth:`append_many`.

        Example:
            ```python
            await session.append(MessageEntry(id="m2", parent_id="m1", role="assistant"))
            await session.append(entry, once=True)   # safe to retry after a lost reply
            ```
        """
        await self.append_many([entry], once=once)

    async def append_many(self, entries: Sequence[AnyEntry], *, once: bool = False) -> None:
        """Append entries atomically (all or nothing); the last one becomes the leaf.

        Earlier entries are never rewritten: this is one RPUSH, in a Lua call that also
        sets ``leaf_id``, ``entry_count`` and ``updated_at`` (server time, which also
        orders :meth:`list`), records each entry's position under its id, and, for a
        compaction, where its kept entries start. Compacting is appending a
        :class:`CompactionEntry`: nothing moves, so appends racing it lose nothing.

        Args:
            entries: the entries to append, in order.
            once: idempotent on the entry ids: when every entry was appended before with
                the same content (a retry after a lost reply), nothing is written and
                this copy shows the stored state. Safe to retry only with ``once=True``.

        Raises:
            ConfigurationError: an entry is not a ``MessageEntry`` or ``CompactionEntry``.
            ConflictError: with ``once``, an id was appended before with other content,
                or only some of the entries were (nothing is appended); or the session
                was deleted.

        Example:
            ```python
            await session.append_many([user_message, assistant_message], once=True)
            ```
        """
        if not entries:
            return
        for entry in entries:
            if not isinstance(entry, MessageEntry | CompactionEntry):
                raise ConfigurationError(
                    f"Session entries are MessageEntry or CompactionEntry, not "
                    f"{type(entry).__name__}; nothing was appended."
                )
        database = self._database(None)
        encoded = [encode_entry(entry) for entry in entries]
        kept_ids = [e.first_kept_entry_id for e in entries if isinstance(e, CompactionEntry)]
        shared: dict[str, int | None] = {}
        if kept_ids and self.base > 0:  # a fork's compaction may keep entries it shares
            shared = await lookup_positions(database, self.layers()[1:], kept_ids)
        for _attempt in range(2):
            reply = await self._append_call(database, entries, encoded, shared, once)
            shapes = {"ok": 5, "replay": 5, "missing": 1, "conflict": 2, "stale": 1}
            status, reply = checked_reply("session_append", reply, shapes)
            if status != "stale":
                break
            # This copy's fork_of is not the stored one (a copy made by hand): read it.
            stored = await type(self).get(self.id, db=database)
            if stored is None:
                raise ConflictError.stale(type(self).__name__, self.id, self.version, 0)
            object.__setattr__(self, "fork_of", stored.fork_of)
            object.__setattr__(self, "origin", stored.origin)
        if status in ("missing", "stale"):
            raise ConflictError.stale(type(self).__name__, self.id, self.version, 0)
        if status == "conflict":
            raise ConflictError(
                f"Entry {reply_text(reply[1])!r} of session {self.id!r} was appended before "
                "with other content (or only some of these entries were); nothing was "
                "appended. Use new entry ids for new entries."
            )
        # "ok", or "replay" (appended by an earlier call): show what the store holds.
        self._took(
            database,
            leaf_id=reply_text(reply[3]),
            entry_count=int(reply[1]),
            updated_at=dt.datetime.fromisoformat(reply_text(reply[2])),
            context_from=int(reply[4]),
        )
        if self._entries is not None:
            known = {entry.id for entry in self._entries} if status == "replay" else set()
            self._entries = [*self._entries, *(e for e in entries if e.id not in known)]

    async def _append_call(
        self,
        database: Database,
        entries: Sequence[AnyEntry],
        encoded: list[list[bytes]],
        shared: dict[str, int | None],
        once: bool,
    ) -> Any:
        spec = self.__flue_spec__
        keys = spec.keys_of(database.keys, self.id)
        index_keys = list(spec.entries(keys, self._values()))  # rescored with updated_at
        template = encode_owned(
            keys.record_prefix(spec.collection), dict.fromkeys(index_keys, 0.0), {}, index_keys
        )
        args: list[Any] = [self.id, entries[-1].id, len(entries), "1" if once else "0"]
        args += [self.fork_of or "", template]
        for entry, elements in zip(entries, encoded, strict=True):
            kept = entry.first_kept_entry_id if isinstance(entry, CompactionEntry) else ""
            fallback = shared.get(kept) if kept else None
            args += [entry.id, kept, -1 if fallback is None else fallback]
            args += [len(elements), *elements]
        return await database.scripts.call(
            "session_append",
            keys=[*keys.session(self.id)[:3], *index_keys],
            args=args,
            unsafe=not once,  # without `once` a repeat would append the entries again
        )

    def _took(self, database: Database, **stored: Any) -> None:
        """Set fields a script wrote, and what this copy knows the store holds."""
        spec = self.__flue_spec__
        snapshot = dict(held(self).snapshot)  # (a new state: copies never share one)
        for name, value in stored.items():
            object.__setattr__(self, name, value)
            snapshot[name] = spec.codecs[name].encode(value)
        keys = spec.keys_of(database.keys, self.id)
        entries = spec.entries(keys, self._values())
        snapshot[OWNED] = encode_owned(keys.record_prefix(spec.collection), entries, {})
        hold(self, snapshot=snapshot, entries=entries)

    @classmethod
    async def save_snapshot(
        cls,
        session_id: str,
        entries: Sequence[AnyEntry],
        *,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Self:
        """Replace a session's metadata and entries in one atomic write (for runtimes
        that write whole snapshots); creates the session if it is new.

        Raises:
            SessionForkedError: the session has forks (they share its history).
            ConflictError: the session is a fork (its history is shared with its parent).

        Example:
            ```python
            await Session.save_snapshot(session_id, entries, metadata={"user": "u1"})
            ```
        """
        database = pick_database(db)
        elements: list[bytes] = []
        positions: dict[str, bytes] = {}
        window = Window(0)
        for entry in entries:
            positions.setdefault(entry.id, str(len(elements)).encode())
            window.add([(len(elements), entry)])
            elements += encode_entry(entry)
        leaf_id = entries[-1].id if entries else None
        found = walk_context(leaf_id, window)
        assert not isinstance(found, Need)  # a window from 0 needs nothing

        async def attempt() -> Self:
            current = await cls.get(session_id, db=database)
            if current is not None and current.origin is not None:
                raise ConflictError(
                    f"Session {session_id!r} is a fork of {current.origin.parent!r} and shares "
                    "its history; save_snapshot cannot replace it. Append to it instead."
                )
            now = await database.server_time()
            target = current or cls(id=session_id, created_at=now, updated_at=now)
            target.metadata = metadata if metadata is not None else target.metadata
            target.updated_at = now
            target.leaf_id = leaf_id
            target.entry_count = len(entries)
            target.context_from = found[1]
            write = plan_save(target, database.keys)
            own = database.keys.session(session_id)
            write.lists[own.entries] = elements
            write.hashes[own.entry_ids] = positions
            write.absent.append(own.forks)
            try:
                await run_writes(database, [write])  # a racing writer: plan again on its state
            except GuardError:
                raise SessionForkedError(session_id, "its entries were not replaced") from None
            target._entries = list(entries)
            return target

        return await retry_on_conflict(attempt)
