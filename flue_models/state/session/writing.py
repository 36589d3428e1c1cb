"""Appending entries and replacing them with a snapshot."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, NamedTuple, Self

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    ConfigurationError,
    ConflictError,
    GuardError,
    NotFoundError,
    SessionForkedError,
)
from flue_models.model.codec import canonical_json
from flue_models.model.spec import OWNED_FIELD as OWNED, encode_owned, owned_scored
from flue_models.model.writes import (
    Held,
    held,
    plan_save,
    retry_on_conflict,
    run_writes,
)
from flue_models.replies import reply_text
from flue_models.scripts import checked_reply
from flue_models.state.session.context import Loading
from flue_models.state.session.row import encode_entry, entry_elements, entry_json
from flue_models.state.session_window import (
    AnyEntry,
    CompactionEntry,
    MessageEntry,
    Need,
    Window,
    lookup_positions,
    walk_context,
)

#: How many times an append that continues from the leaf follows a leaf that moved.
MOVES = 16
_SHAPES = {"ok": 5, "replay": 5, "missing": 1, "conflict": 2, "stale": 1, "moved": 2, "orphan": 3}


class _AppendCall(NamedTuple):
    """What one ``session_append`` call sends besides the session's own keys (a tuple:
    one is made per attempt of every append)."""

    entries: Sequence[AnyEntry]
    body: list[list[bytes]]  # each entry's list elements
    checks: list[str]  # the parent id the script looks up, "" for none
    shared: dict[str, int | None]  # kept entries found in a parent's history
    leaf: str  # "=" and the leaf the first entry continues from, "" when it names its own
    split: tuple[int, int]  # that first entry's JSON bytes before and after its parent


def _distinct(entries: Sequence[AnyEntry]) -> list[AnyEntry]:
    """The entries of one call, checked, an exact repeat of an id dropped."""
    found: dict[str, AnyEntry] = {}
    for entry in entries:
        if not isinstance(entry, MessageEntry | CompactionEntry):
            raise ConfigurationError(
                f"Session entries are MessageEntry or CompactionEntry, not "
                f"{type(entry).__name__}; nothing was appended."
            )
        if not entry.id:
            raise ConfigurationError("A session entry's id is empty; nothing was appended.")
        if entry.id in found and found[entry.id] != entry:
            raise ConfigurationError(
                f"Two entries of one append have the id {entry.id!r} with other content; "
                "nothing was appended."
            )
        found.setdefault(entry.id, entry)
    return list(found.values())


def _with_parent(entry: AnyEntry, parent: str | None) -> AnyEntry:
    """The entry as stored: one made without ``parent_id`` takes ``parent``."""
    if "parent_id" in entry.model_fields_set:
        return entry
    return entry.model_copy(update={"parent_id": parent})


#: The keys and ``_owned`` template of sessions appended to lately, by key space, id and
#: indexed values (a session's appends name the same keys each time); up to
#: :data:`PLANS_KEPT`, then started again. The lists are never changed in place.
_PLANS: dict[tuple[Any, ...], tuple[list[str], list[str], bytes]] = {}
PLANS_KEPT = 4096

#: The parent a continuing entry is first encoded with, to find where the leaf's goes.
_MARK = "\x00leaf\x00"
_MARK_JSON = canonical_json(_MARK).encode()


def _continuing(entry: AnyEntry, leaf: str | None) -> tuple[list[bytes], tuple[int, int]]:
    """The elements of an entry whose parent is ``leaf``, and how many bytes of its JSON
    come before and after the parent's value (the script compares the rest on a replay)."""
    mark, marked = _MARK, _MARK_JSON
    data = entry_json(entry, mark)
    if data.count(marked) != 1:  # the content holds the mark too: one it cannot hold
        mark = uuid.uuid4().hex
        marked = canonical_json(mark).encode()
        data = entry_json(entry, mark)
    at = data.index(marked)
    before, after = data[:at], data[at + len(marked) :]
    value = b"null" if leaf is None else canonical_json(leaf).encode()
    return entry_elements(before + value + after), (len(before), len(after))


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

    async def append(self, entry: AnyEntry) -> None:
        """Append one entry and make it the leaf. See :meth:`append_many`.

        Example:
            ```python
            await session.append(MessageEntry(role="user", content="hi"))  # after the leaf
            await session.append(MessageEntry(role="user", content="again", parent_id=None))
            ```
        """
        await self.append_many([entry])

    async def append_many(self, entries: Sequence[AnyEntry]) -> None:
        """Append entries atomically (all or nothing); the last one becomes the leaf.

        An entry made without ``parent_id`` continues the conversation: its parent is the
        entry before it in ``entries``, and the first one's is the session's leaf *as
        stored when the write runs* (an append racing this one is not branched off). An
        explicit ``parent_id=None`` starts a new branch (a new root); any other
        ``parent_id`` must name an entry of this session's history.

        Appending is idempotent on the entry ids: an id appended before with the same
        content (the same but for the parent it took, for an entry without ``parent_id``)
        is not appended again, so a call is safe to repeat after a lost reply; the same id
        with other content is refused.

        Earlier entries are never rewritten: this is one RPUSH, in a Lua call that also
        checks the parents, sets ``leaf_id``, ``entry_count`` and ``updated_at`` (server
        time, which also orders :meth:`list`), records each entry's position under its
        id, and, for a compaction, where its kept entries start. Compacting is appending a
        :class:`CompactionEntry`: nothing moves, so appends racing it lose nothing.

        Raises:
            ConfigurationError: an entry is not a ``MessageEntry`` or ``CompactionEntry``,
                or two entries of the call share an id with other content.
            ConflictError: an id was appended before with other content, or only some of
                the entries were; or the session was deleted.
            NotFoundError: a ``parent_id`` names no entry of this session's history.

        Example:
            ```python
            await session.append_many([user_message, assistant_message])
            ```
        """
        entries = _distinct(entries)
        if not entries:
            return
        database = self._database(None)
        first = entries[0]
        follows = "parent_id" not in first.model_fields_set  # continues from the leaf
        body = [[] if follows else encode_entry(first)]
        body += [entry_elements(entry_json(e, before.id)) for before, e in pairwise(entries)]
        checks, known = [], set()
        for entry in entries:  # the parents to look for: none, or not earlier in the call
            checks.append(
                "" if entry.parent_id is None or entry.parent_id in known else entry.parent_id
            )
            known.add(entry.id)
        kept_ids = [e.first_kept_entry_id for e in entries if isinstance(e, CompactionEntry)]
        shared: dict[str, int | None] = {}
        if kept_ids and self.base > 0:  # a fork's compaction may keep entries it shares
            shared = await lookup_positions(database, self.layers()[1:], kept_ids)
        looked_up = refreshed = False
        leaf = self.leaf_id
        index = self._index_plan(database)
        for _attempt in range(MOVES):
            split = (0, 0)
            if follows:
                body[0], split = _continuing(first, leaf)
                checks[0] = ""
            followed = "=" + (leaf or "") if follows else ""
            call = _AppendCall(entries, body, checks, shared, followed, split)
            reply = await self._append_call(database, call, index)
            status, reply = checked_reply("session_append", reply, _SHAPES)
            if status == "stale" and not refreshed:
                # This copy's fork_of is not the stored one (a copy made by hand): read it.
                refreshed = True
                stored = await type(self).get(self.id, db=database)
                if stored is None:
                    raise ConflictError.stale(type(self).__name__, self.id, self.version, 0)
                object.__setattr__(self, "fork_of", stored.fork_of)
                object.__setattr__(self, "origin", stored.origin)
                index = self._index_plan(database)  # fork_of is indexed
            elif status == "moved":  # another writer appended: continue from its leaf
                leaf = reply_text(reply[1]) or None
            elif status == "orphan" and self.base > 0 and not looked_up:
                # The parent may be in the history this fork shares with its parent.
                looked_up = True
                asked = [c for c in checks if c]
                found = await lookup_positions(database, self.layers()[1:], asked)
                checks = ["" if c and found.get(c) is not None else c for c in checks]
            else:
                break
        else:
            raise ConflictError(
                f"Session {self.id!r} moved on under {MOVES} attempts to append after its "
                "leaf; nothing was appended. Try again, or give parent_id."
            )
        if status in ("missing", "stale"):
            raise ConflictError.stale(type(self).__name__, self.id, self.version, 0)
        if status == "conflict":
            raise ConflictError(
                f"Entry {reply_text(reply[1])!r} of session {self.id!r} was appended before "
                "with other content (or only some of these entries were); nothing was "
                "appended. Use new entry ids for new entries."
            )
        if status == "orphan":
            raise NotFoundError(
                f"Entry {reply_text(reply[1])!r} names parent {reply_text(reply[2])!r}, which "
                f"is no entry of session {self.id!r}; nothing was appended."
            )
        # "ok", or "replay" (appended by an earlier call): show what the store holds.
        self._took(index, reply)
        private = self.__pydantic_private__  # (pydantic's __getattr__ would cost 2 µs)
        held_entries = private.get("_entries") if private is not None else None
        if held_entries is not None:  # in place: an append never copies the history
            parents = [leaf if follows else first.parent_id, *(e.id for e in entries[:-1])]
            had = {entry.id for entry in held_entries} if status == "replay" else set()
            held_entries.extend(
                _with_parent(e, parent)
                for e, parent in zip(entries, parents, strict=True)
                if e.id not in had
            )

    def _index_plan(self, database: Database) -> tuple[list[str], list[str], bytes]:
        """The session's own keys, the index sets it is in (an append rescores each with
        the new ``updated_at``) and its ``_owned`` with ``@#seq`` for that score; named
        once per session and indexed values (see :data:`_PLANS`)."""
        spec = self.__flue_spec__
        fields = self.__dict__  # where pydantic keeps field values (no __getattr__)
        memo = (database.keys, self.id, *(fields[name] for name in spec.keyed_by))
        plan = _PLANS.get(memo)
        if plan is None:
            values = self._values()
            keys = spec.keys_of(database.keys, self.id)
            index_keys = list(spec.entries(keys, values))
            prefix = keys.record_prefix(spec.collection)
            template = encode_owned(prefix, dict.fromkeys(index_keys, 0.0), {}, index_keys)
            plan = list(keys.session(self.id)[:3]), index_keys, template
            if len(_PLANS) >= PLANS_KEPT:
                _PLANS.clear()
            _PLANS[memo] = plan
        return plan

    async def _append_call(
        self,
        database: Database,
        call: _AppendCall,
        index: tuple[list[str], list[str], bytes],
    ) -> Any:
        own_keys, index_keys, template = index
        entries = call.entries
        args: list[Any] = [self.id, entries[-1].id, len(entries), call.leaf]
        args += [self.fork_of or "", template, *call.split]
        for entry, elements, check in zip(entries, call.body, call.checks, strict=True):
            kept = entry.first_kept_entry_id if isinstance(entry, CompactionEntry) else ""
            fallback = call.shared.get(kept) if kept else None
            args += [entry.id, check, kept, -1 if fallback is None else fallback]
            args += [len(elements), *elements]
        return await database.scripts.call(
            "session_append", keys=[*own_keys, *index_keys], args=args
        )

    def _took(self, index: tuple[list[str], list[str], bytes], reply: list[Any]) -> None:
        """Set the fields the script wrote (its reply: status, entry_count, updated_at,
        leaf_id, context_from), and what this copy knows the store holds: those fields
        as the script stored them, the index entries rescored with ``updated_at`` and the
        ``_owned`` it wrote (its template with that score)."""
        spec = self.__flue_spec__
        count, updated, leaf, context_from = int(reply[1]), reply[2], reply[3], int(reply[4])
        updated = updated if isinstance(updated, bytes) else updated.encode()
        leaf = leaf if isinstance(leaf, bytes) else leaf.encode()
        updated_at = dt.datetime.fromisoformat(updated.decode())
        fields = self.__dict__  # (as the script set them: no validation to run again)
        fields.update(
            leaf_id=leaf.decode(),
            entry_count=count,
            updated_at=updated_at,
            context_from=context_from,
        )
        _own_keys, index_keys, template = index
        score = spec.codecs["updated_at"].score(updated_at)
        snapshot = {  # (a new state: copies never share one)
            **held(self).snapshot,
            "leaf_id": leaf,
            "entry_count": str(count).encode(),
            "updated_at": updated,
            "context_from": str(context_from).encode(),
            OWNED: owned_scored(template, score),
        }
        # Made whole, not by hold(): its keyword dict and NamedTuple._replace cost 1.9 µs
        # against 0.6 (a hold() built field by field is no faster: the keywords are it).
        state = held(self)
        entries = dict.fromkeys(index_keys, score)
        self._keep_held(Held(state.version, snapshot, entries, state.unique, state.db, {}))

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

        As with :meth:`append_many`, an entry made without ``parent_id`` follows the one
        before it (the first starts the history), an exact repeat of an id is dropped,
        and an explicit ``parent_id`` must name an earlier entry.

        Raises:
            SessionForkedError: the session has forks (they share its history).
            ConflictError: the session is a fork (its history is shared with its parent).
            ConfigurationError: two entries share an id with other content.
            NotFoundError: a ``parent_id`` names no earlier entry of the snapshot.

        Example:
            ```python
            await Session.save_snapshot(session_id, entries, metadata={"user": "u1"})
            ```
        """
        database = pick_database(db)
        entries = _distinct(entries)
        elements: list[bytes] = []
        positions: dict[str, bytes] = {}
        window = Window(0)
        for index, given in enumerate(entries):
            entry = _with_parent(given, entries[index - 1].id if index else None)
            if entry.parent_id is not None and entry.parent_id not in positions:
                raise NotFoundError(
                    f"Entry {entry.id!r} names parent {entry.parent_id!r}, which is no earlier "
                    f"entry of the snapshot; session {session_id!r} was not written."
                )
            entries[index] = entry
            positions[entry.id] = str(len(elements)).encode()
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
