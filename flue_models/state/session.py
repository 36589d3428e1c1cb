"""Agent sessions: metadata plus a tree of entries (messages and compactions).

A session's record is a hash (``metadata``, ``leaf_id``, times, version); its entries are
a list the record owns, ``<prefix>::session/entries:<b64 id>``. Entries are appended one
by one (``RPUSH`` in a Lua call that also moves ``leaf_id``), never by rewriting the
session; a load reads the hash and the list in one MULTI, so it always sees a whole
state. Entries larger than 512 KiB are stored as several list elements and joined back
byte for byte.

Example:
    ```python
    session = await Session.open(session_key("support", "i-1", "claude", "main"))
    await session.append(MessageEntry(id="m1", role="user", content="hello"))
    loaded = await Session.load(session.id)
    context = loaded.context()
    ```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, PrivateAttr, TypeAdapter, ValidationError

from flue_models.connection import Database, pick_database
from flue_models.errors import FlueModelsError
from flue_models.keys import KeySpace
from flue_models.model.base import Model
from flue_models.model.codec import EncodingError, canonical_json, value_problem
from flue_models.model.errors import AlreadyExistsError, ConflictError, DecodeError
from flue_models.model.writes import plan_save, retry_on_conflict, run_writes
from flue_models.replies import reply_hash, reply_text
from flue_models.scripts import checked_reply

#: Entries larger than this are stored as several list elements.
CHUNK_BYTES = 512 * 1024


class SessionError(FlueModelsError):
    """A session operation cannot run (entries not loaded, an entry of the wrong type).

    Example:
        >>> issubclass(SessionError, FlueModelsError)
        True
    """


class MessageEntry(BaseModel):
    """A message of the conversation: a role and JSON content.

    Example:
        ```python
        MessageEntry(id="m2", parent_id="m1", role="assistant", content=[{"type": "text"}])
        ```
    """

    type: Literal["message"] = "message"
    id: str
    parent_id: str | None = None
    role: str
    content: Any = None
    dispatch_id: str | None = None
    submission_id: str | None = None


class CompactionEntry(BaseModel):
    """A summary that replaces the entries before ``first_kept_entry_id`` in the context.

    Example:
        ```python
        CompactionEntry(id="c1", parent_id="m9", summary="...", first_kept_entry_id="m7",
                        tokens_before=48_000)
        ```
    """

    type: Literal["compaction"] = "compaction"
    id: str
    parent_id: str | None = None
    summary: str
    first_kept_entry_id: str
    tokens_before: int
    details: Any = None
    usage: Any = None


Entry = Annotated[MessageEntry | CompactionEntry, Field(discriminator="type")]
_ENTRY: TypeAdapter[MessageEntry | CompactionEntry] = TypeAdapter(Entry)


class SessionContext(BaseModel):
    """What a model call needs: the latest summary and the messages kept after it.

    Example:
        ```python
        context = session.context()
        prompt = ([context.summary] if context.summary else []) + context.messages
        ```
    """

    summary: str | None
    messages: list[MessageEntry]


def session_key(agent: str, instance: str, harness: str, name: str) -> str:
    """Build a Flue-style session id from its four parts (each escaped, ``/``-joined).

    Example:
        >>> session_key("support", "eu-1", "claude", "main")
        'support/eu-1/claude/main'
        >>> session_key("a/b", "1", "h", "n")
        'a%2Fb/1/h/n'
    """
    return "/".join(quote(part, safe="") for part in (agent, instance, harness, name))


def encode_entry(entry: MessageEntry | CompactionEntry) -> list[bytes]:
    """Return the list elements of one entry: ``E<json>``, or a header and its chunks.

    Example:
        >>> first = encode_entry(MessageEntry(id="m1", role="user", content="hi"))[0]
        >>> first.startswith(b"E")
        True
    """
    problem = value_problem(entry)
    if problem:
        raise EncodingError(f"Session entry {entry.id!r} {problem}; nothing was appended.")
    data = canonical_json(entry.model_dump(mode="json")).encode()
    if len(data) <= CHUNK_BYTES:
        return [b"E" + data]
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    return [b"H" + str(len(chunks)).encode(), *(b"C" + chunk for chunk in chunks)]


def decode_entries(key: str, elements: Sequence[bytes]) -> list[MessageEntry | CompactionEntry]:
    """Rebuild entries from their list elements.

    Raises:
        DecodeError: an element is not a valid entry (naming the key and position).

    Example:
        >>> decode_entries("k", encode_entry(MessageEntry(id="m1", role="user")))[0].id
        'm1'
    """
    entries: list[MessageEntry | CompactionEntry] = []
    position = 0
    while position < len(elements):
        element = elements[position]
        kind, body = element[:1], element[1:]
        try:
            if kind == b"E":
                data, position = body, position + 1
            elif kind == b"H":
                count = int(body)
                parts = elements[position + 1 : position + 1 + count]
                if len(parts) != count or any(p[:1] != b"C" for p in parts):
                    raise ValueError(f"expected {count} chunks")
                data, position = b"".join(p[1:] for p in parts), position + 1 + count
            else:
                raise ValueError(f"unknown element kind {kind!r}")
            entries.append(_ENTRY.validate_json(data))
        except (ValueError, ValidationError) as exc:
            raise DecodeError(key, f"entries[{position}]", f"is not an entry: {exc}") from None
    return entries


class Session(Model):
    """An agent session: application metadata and its entries.

    ``metadata`` is the application's and is saved under the version check; ``leaf_id``,
    ``entry_count`` and ``updated_at`` are kept by :meth:`append`. Appends do not change
    the version, so they never make a metadata save conflict.

    Example:
        ```python
        session = await Session.open("support/eu-1/claude/main", metadata={"user": "u1"})
        await session.append(MessageEntry(id="m1", role="user", content="hi"))
        session.metadata["title"] = "Greeting"
        await session.save()
        ```
    """

    class Meta:
        collection = "session"
        order_by = "created_at"

    id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: dt.datetime
    updated_at: dt.datetime
    leaf_id: str | None = None
    entry_count: int = 0

    _entries: list[MessageEntry | CompactionEntry] | None = PrivateAttr(default=None)

    #: The owned list holding the entries.
    ENTRIES: ClassVar[str] = "entries"
    #: The owned hash from each entry id to the list position of its first element.
    ENTRY_IDS: ClassVar[str] = "entry_ids"

    @classmethod
    def _entries_key(cls, keys: KeySpace, session_id: str) -> str:
        return keys.owned(cls.__flue_spec__.collection, cls.ENTRIES, session_id)

    @classmethod
    def _entry_ids_key(cls, keys: KeySpace, session_id: str) -> str:
        return keys.owned(cls.__flue_spec__.collection, cls.ENTRY_IDS, session_id)

    @property
    def entries(self) -> list[MessageEntry | CompactionEntry]:
        """The entries, oldest first, as of :meth:`load` and this copy's appends.

        Example:
            ```python
            for entry in (await Session.load(session_id)).entries:
                print(entry.type, entry.id)
            ```
        """
        if self._entries is None:
            raise SessionError(
                f"Session {self.id!r} was read without its entries; use Session.load(id)."
            )
        return self._entries

    @classmethod
    def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
        """The entries list and its id index go with the session.

        Example:
            ```python
            Session.owned_keys(db.keys, "s-1")   # ['flue::session/entries:cy0x', ...]
            ```
        """
        return [cls._entries_key(keys, record_id), cls._entry_ids_key(keys, record_id)]

    @classmethod
    async def open(
        cls,
        session_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Session:
        """Return the session with this id, creating it (server time) if it is new.

        Example:
            ```python
            session = await Session.open(session_key("support", "eu-1", "claude", "main"))
            ```
        """
        database = pick_database(db)
        existing = await cls.load(session_id, db=database)
        if existing is not None:
            return existing
        now = await database.server_time()
        fresh = cls(id=session_id, metadata=metadata or {}, created_at=now, updated_at=now)
        try:
            await fresh.save(db=database)
        except AlreadyExistsError:
            loaded = await cls.load(session_id, db=database)
            assert loaded is not None
            return loaded
        fresh._entries = []
        return fresh

    @classmethod
    async def load(cls, session_id: str, *, db: Database | None = None) -> Session | None:
        """Return the whole session (record and entries, read atomically), or ``None``.

        Example:
            ```python
            session = await Session.load("support/eu-1/claude/main")
            ```
        """
        database = pick_database(db)
        key = database.keys.record(cls.__flue_spec__.collection, session_id)
        entries_key = cls._entries_key(database.keys, session_id)
        raw, elements = await database.run_batch(
            [("HGETALL", key), ("LRANGE", entries_key, 0, -1)], atomic=True
        )
        if not raw:
            return None
        session = cls.from_hash(key, reply_hash(raw), database)
        session._entries = decode_entries(entries_key, elements)
        return session

    async def append(self, entry: MessageEntry | CompactionEntry, *, once: bool = False) -> None:
        """Append one entry and make it the leaf. See :meth:`append_many`.

        Example:
            ```python
            await session.append(MessageEntry(id="m2", parent_id="m1", role="assistant"))
            await session.append(entry, once=True)   # safe to retry after a lost reply
            ```
        """
        await self.append_many([entry], once=once)

    async def append_many(
        self, entries: Sequence[MessageEntry | CompactionEntry], *, once: bool = False
    ) -> None:
        """Append entries atomically (all or nothing); the last one becomes the leaf.

        Earlier entries are never rewritten: this is one RPUSH, in a Lua call that also
        sets ``leaf_id``, ``entry_count`` and ``updated_at`` (server time) and records
        each entry's position under its id.

        Args:
            entries: the entries to append, in order.
            once: idempotent on the entry ids: when every entry was appended before with
                the same content (a retry after a lost reply), nothing is written and
                this copy shows the stored state. Safe to retry only with ``once=True``.

        Raises:
            SessionError: an entry is not a ``MessageEntry`` or ``CompactionEntry``; or,
                with ``once``, an id was appended before with other content, or only some
                of the entries were (nothing is appended).
            ConflictError: the session was deleted.

        Example:
            ```python
            await session.append_many([user_message, assistant_message], once=True)
            ```
        """
        if not entries:
            return
        for entry in entries:
            if not isinstance(entry, MessageEntry | CompactionEntry):
                raise SessionError(
                    f"Session entries are MessageEntry or CompactionEntry, not "
                    f"{type(entry).__name__}; nothing was appended."
                )
        database = self._database(None)
        args: list[Any] = [entries[-1].id, len(entries), "1" if once else "0"]
        for entry in entries:
            encoded = encode_entry(entry)
            args += [entry.id, len(encoded), *encoded]
        reply = await database.scripts.call(
            "session_append",
            keys=[
                database.keys.record(self.__flue_spec__.collection, self.id),
                self._entries_key(database.keys, self.id),
                self._entry_ids_key(database.keys, self.id),
            ],
            args=args,
            unsafe=not once,  # without `once` a repeat would append the entries again
        )
        shapes = {"ok": 4, "replay": 4, "missing": 1, "conflict": 2}
        status, reply = checked_reply("session_append", reply, shapes)
        if status == "missing":
            raise ConflictError(type(self).__name__, self.id, self._flue_version, 0)
        if status == "conflict":
            raise SessionError(
                f"Entry {reply_text(reply[1])!r} of session {self.id!r} was appended before "
                "with other content (or only some of these entries were); nothing was "
                "appended. Use new entry ids for new entries."
            )
        # "ok", or "replay" (appended by an earlier call): show what the store holds.
        object.__setattr__(self, "leaf_id", reply_text(reply[3]))
        object.__setattr__(self, "entry_count", int(reply[1]))
        object.__setattr__(self, "updated_at", dt.datetime.fromisoformat(reply_text(reply[2])))
        self._flue_snapshot.update(
            {name: self.__flue_spec__.codecs[name].encode(getattr(self, name))
             for name in ("leaf_id", "entry_count", "updated_at")}
        )  # fmt: skip
        if self._entries is not None:
            known = {entry.id for entry in self._entries} if status == "replay" else set()
            self._entries = [*self._entries, *(e for e in entries if e.id not in known)]

    @classmethod
    async def save_snapshot(
        cls,
        session_id: str,
        entries: Sequence[MessageEntry | CompactionEntry],
        *,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Session:
        """Replace a session's metadata and entries in one atomic write (for runtimes
        that write whole snapshots); creates the session if it is new.

        Example:
            ```python
            await Session.save_snapshot(session_id, entries, metadata={"user": "u1"})
            ```
        """
        database = pick_database(db)
        elements: list[bytes] = []
        positions: dict[str, bytes] = {}
        for entry in entries:
            positions.setdefault(entry.id, str(len(elements)).encode())
            elements += encode_entry(entry)

        async def attempt() -> Session:
            current = await cls.get(session_id, db=database)
            now = await database.server_time()
            target = current or cls(id=session_id, created_at=now, updated_at=now)
            target.metadata = metadata if metadata is not None else target.metadata
            target.updated_at = now
            target.leaf_id = entries[-1].id if entries else None
            target.entry_count = len(entries)
            write = plan_save(target, database.keys)
            write.lists[cls._entries_key(database.keys, session_id)] = elements
            write.hashes[cls._entry_ids_key(database.keys, session_id)] = positions
            await run_writes(database, [write])  # a racing writer: plan again on its state
            target._entries = list(entries)
            return target

        return await retry_on_conflict(attempt)

    def context(self) -> SessionContext:
        """Return the latest compaction summary and the messages from its first kept entry
        to the leaf, following ``parent_id`` links from the leaf.

        Example:
            ```python
            context = (await Session.load(session_id)).context()
            ```
        """
        by_id = {entry.id: entry for entry in self.entries}
        branch: list[MessageEntry | CompactionEntry] = []
        cursor = self.leaf_id
        while cursor is not None and cursor in by_id:
            entry = by_id[cursor]
            branch.append(entry)
            cursor = entry.parent_id
        branch.reverse()  # root to leaf
        compaction_at = max(
            (i for i, e in enumerate(branch) if isinstance(e, CompactionEntry)), default=None
        )
        if compaction_at is None:
            messages = [e for e in branch if isinstance(e, MessageEntry)]
            return SessionContext(summary=None, messages=messages)
        compaction = branch[compaction_at]
        assert isinstance(compaction, CompactionEntry)
        ids = [e.id for e in branch]
        first_kept = compaction.first_kept_entry_id
        start = ids.index(first_kept) if first_kept in ids else compaction_at
        kept = [e for e in branch[start:] if isinstance(e, MessageEntry)]
        return SessionContext(summary=compaction.summary, messages=kept)
