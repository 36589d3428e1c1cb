"""Agent sessions: metadata plus a tree of entries (messages and compactions).

A session's record is a hash (``metadata``, ``leaf_id``, times, version); its entries are
a list the record owns, ``<prefix>::{session:<bucket>}/entries:<b64 id>``. Entries are
appended one by one (``RPUSH`` in a Lua call that also moves ``leaf_id``), never by
rewriting the session; a load reads the hash and the list in one MULTI, so it always
sees a whole state. Entries larger than 512 KiB are stored as several list elements and joined back
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    AlreadyExistsError,
    CommandError,
    ConfigurationError,
    ConflictError,
    CorruptDataError,
    EncodingError,
    GuardError,
    NotFoundError,
    SessionForkedError,
)
from flue_models.keys import KeySpace
from flue_models.model.base import Model
from flue_models.model.codec import canonical_json, value_problem
from flue_models.model.fields import Indexed, new_id as make_id
from flue_models.model.query import Page, page_size
from flue_models.model.spec import OWNED_FIELD as OWNED, encode_owned
from flue_models.model.writes import (
    plan_delete,
    plan_save,
    retry_on_conflict,
    run_writes,
)
from flue_models.replies import reply_hash, reply_text
from flue_models.scripts import checked_reply
from flue_models.state.session_window import (
    AnyEntry,
    CompactionEntry,
    Layer,
    MessageEntry,
    Need,
    SessionContext,
    Window,
    decode_run,
    lookup_positions,
    read_window,
    walk_context,
)

#: Entries larger than this are stored as several list elements.
CHUNK_BYTES = 512 * 1024
#: How many forks deep a session may be (each level is one more list a load may read).
MAX_FORK_DEPTH = 16
#: A context load reads at least this many elements further back when it needs more.
MIN_STEP = 64
#: Buckets the sessions are spread over (one Cluster slot each). Sessions hold
#: the bulk of the data, so they take more buckets than the runs: 64 spread evenly over
#: up to 16 primaries, and a listing (rare for sessions) costs about three single walks.
SESSION_BUCKETS = 64
#: A fork's mark on its parent with no fork behind it is taken as a fork being made for
#: this long, and after that as left by a fork that stopped half way (then dropped).
FORK_GRACE = dt.timedelta(seconds=60)


class Ancestor(BaseModel):
    """One session a fork's history goes through: its id, the position its own list
    starts at, and the entries before that position.

    Example:
        >>> Ancestor(session="root", base=0, entries=0).session
        'root'
    """

    session: str
    base: int
    entries: int


class ForkOrigin(BaseModel):
    """Where a forked session's history comes from.

    ``position`` is where the fork's own list starts (the end of ``entry_id`` in the
    parent's history); ``entries`` is how many entries it inherited; ``lineage`` lists
    the parent first, then the parent's own ancestors.

    Example:
        ```python
        child = await Session.fork("s-1", "m7", new_id="s-1-retry")
        child.origin.parent, child.origin.entry_id   # ('s-1', 'm7')
        ```
    """

    parent: str
    entry_id: str
    position: int
    entries: int
    lineage: list[Ancestor]


def key_parts(session_id: str) -> tuple[str, str, str] | None:
    """The agent, instance and harness of a :func:`session_key` id, else ``None``.

    Example:
        >>> key_parts("support/eu-1/claude/main")
        ('support', 'eu-1', 'claude')
        >>> key_parts("plain-id") is None
        True
    """
    parts = session_id.split("/")
    if len(parts) != 4:
        return None
    return unquote(parts[0]), unquote(parts[1]), unquote(parts[2])


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
    return [entry for _, entry in decode_run(key, elements, 0)]


class Session(Model):
    """An agent session: application metadata and its entries.

    ``metadata`` is the application's and is saved under the version check; ``leaf_id``,
    ``entry_count``, ``updated_at`` and ``context_from`` are kept by :meth:`append`.
    Appends do not change the version, so they never make a metadata save conflict.
    ``agent``, ``instance`` and ``harness`` come from a :func:`session_key` id and are
    indexed, like ``fork_of``, for :meth:`list`. Spread over 64 buckets
    (``SESSION_BUCKETS``), so over a cluster's primaries; a session's row and the keys
    it owns (entries, entry ids, the marks of its forks) share its bucket.

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
        order_by = "updated_at"
        buckets = SESSION_BUCKETS

    id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: dt.datetime
    updated_at: dt.datetime
    leaf_id: str | None = None
    entry_count: int = 0
    #: Where the latest compaction's kept entries start (a hint for context loads).
    context_from: int = 0
    agent: Annotated[str | None, Indexed()] = None
    instance: Annotated[str | None, Indexed()] = None
    harness: Annotated[str | None, Indexed()] = None
    fork_of: Annotated[str | None, Indexed()] = None
    origin: ForkOrigin | None = None

    _entries: list[AnyEntry] | None = PrivateAttr(default=None)
    _loaded_from: int = PrivateAttr(default=0)
    # What a context load learnt about ids before its window (see session_window.Window).
    _positions: dict[str, int] = PrivateAttr(default_factory=dict)
    _absent: set[str] = PrivateAttr(default_factory=set)

    #: The owned list holding the entries.
    ENTRIES: ClassVar[str] = "entries"
    #: The owned hash from each entry id to the logical position of its first element.
    ENTRY_IDS: ClassVar[str] = "entry_ids"
    #: The owned sorted set of this session's forks (fork id -> when it was marked).
    FORKS: ClassVar[str] = "forks"

    @model_validator(mode="before")
    @classmethod
    def _parts_from_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            parts = key_parts(data["id"])
            agent, instance, harness = parts if parts is not None else (None, None, None)
            data = {**data, "agent": agent, "instance": instance, "harness": harness}
        return data

    @classmethod
    def _row_key(cls, keys: KeySpace, session_id: str) -> str:
        return cls.__flue_spec__.record_key(keys, session_id)

    @classmethod
    def _entries_key(cls, keys: KeySpace, session_id: str) -> str:
        return cls.__flue_spec__.owned_key(keys, cls.ENTRIES, session_id)

    @classmethod
    def _entry_ids_key(cls, keys: KeySpace, session_id: str) -> str:
        return cls.__flue_spec__.owned_key(keys, cls.ENTRY_IDS, session_id)

    @classmethod
    def _forks_key(cls, keys: KeySpace, session_id: str) -> str:
        """The marks of the forks of ``session_id``, in its bucket: it exists while any
        fork does (or is being made)."""
        return cls.__flue_spec__.owned_key(keys, cls.FORKS, session_id)

    @property
    def base(self) -> int:
        """The logical position this session's own list starts at (0 unless a fork).

        Example:
            ```python
            (await Session.fork("s-1", "m7", new_id="s-2")).base   # end of m7 in s-1
            ```
        """
        return self.origin.position if self.origin is not None else 0

    @property
    def inherited(self) -> int:
        """How many entries this session shares with its fork parent (0 unless a fork).

        Example:
            ```python
            child.entry_count - child.inherited   # the fork's own entries
            ```
        """
        return self.origin.entries if self.origin is not None else 0

    def layers(self) -> list[Layer]:
        """The lists this session's history is read from, its own first.

        Example:
            ```python
            [layer.owner for layer in child.layers()]   # ['s-2', 's-1']
            ```
        """
        found = [Layer(self.id, self.base, None)]
        limit = self.base
        for ancestor in self.origin.lineage if self.origin is not None else []:
            found.append(Layer(ancestor.session, ancestor.base, limit))
            limit = min(limit, ancestor.base)
        return found

    @property
    def entries(self) -> list[AnyEntry]:
        """The entries, oldest first, as of the load and this copy's appends: the whole
        history after :meth:`load`, from :attr:`loaded_from` on after :meth:`load_context`.

        Example:
            ```python
            for entry in (await Session.load(session_id)).entries:
                print(entry.type, entry.id)
            ```
        """
        if self._entries is None:
            raise ConfigurationError(
                f"Session {self.id!r} was read without its entries; use Session.load(id)."
            )
        return self._entries

    @property
    def loaded_from(self) -> int:
        """The logical position of the first element this copy read (0: the whole history).

        Example:
            ```python
            (await Session.load_context(session_id)).loaded_from   # e.g. 49_960
            ```
        """
        return self._loaded_from

    @classmethod
    def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
        """The entries list, its id index and the marks of its forks go with the session.

        Example:
            ```python
            Session.owned_keys(db.keys, "s-1")   # ['flue::{session:9}/entries:cy0x', ...]
            ```
        """
        return [
            cls._entries_key(keys, record_id),
            cls._entry_ids_key(keys, record_id),
            cls._forks_key(keys, record_id),
        ]

    @classmethod
    def delete_guards(cls, keys: KeySpace, record_id: str) -> list[str]:
        """A session with forks is not deleted (they read its history).

        Example:
            ```python
            Session.delete_guards(db.keys, "s-1")   # the marks of its forks
            ```
        """
        return [cls._forks_key(keys, record_id)]

    @classmethod
    async def open(
        cls,
        session_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        context_only: bool = False,
        db: Database | None = None,
    ) -> Session:
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
    async def load(cls, session_id: str, *, db: Database | None = None) -> Session | None:
        """Return the whole session (record and entries, read atomically), or ``None``.

        A fork's entries include the history it shares with its parent. For a long
        session, :meth:`load_context` reads only what the context needs.

        Example:
            ```python
            session = await Session.load("support/eu-1/claude/main")
            ```
        """
        database = pick_database(db)
        key = cls._row_key(database.keys, session_id)
        entries_key = cls._entries_key(database.keys, session_id)
        raw, elements = await database.run_batch(
            [("HGETALL", key), ("LRANGE", entries_key, 0, -1)], atomic=True
        )
        if not raw:
            return None
        session = cls.from_hash(key, reply_hash(raw), database)
        own = decode_run(entries_key, elements, session.base)
        shared: list[tuple[int, AnyEntry]] = []
        if session.base > 0:  # a fork: its parent's history up to the fork point never changes
            shared, _ = await read_window(
                database, cls._lists(database), session.layers()[1:], 0, session.base
            )
        session._entries = [entry for _, entry in (*shared, *own)]
        return session

    @classmethod
    def _lists(cls, database: Database) -> Callable[[str], str]:
        """Session id -> its entry list key, in ``database``."""
        return lambda session_id: cls._entries_key(database.keys, session_id)

    @classmethod
    def _id_hashes(cls, database: Database) -> Callable[[str], str]:
        """Session id -> its ``entry_ids`` key, in ``database``."""
        return lambda session_id: cls._entry_ids_key(database.keys, session_id)

    @classmethod
    async def load_context(cls, session_id: str, *, db: Database | None = None) -> Session | None:
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
        keys = database.keys
        row_key = cls._row_key(keys, session_id)
        for _attempt in range(8):
            reply = await database.scripts.call(
                "session_window", keys=[row_key, cls._entries_key(keys, session_id)], args=[]
            )
            status, reply = checked_reply("session_window", reply, {"ok": 4, "missing": 1})
            if status == "missing":
                return None
            session = cls.from_hash(row_key, reply_hash(reply[1]), database)
            start = int(reply[2])
            first = Window(start)
            first.add(decode_run(cls._entries_key(keys, session_id), reply[3], start, ragged=True))
            version = session._flue_version
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
        row_key = self._row_key(database.keys, self.id)
        check = [("HGET", row_key, "version")] if version is not None else []
        entries, stored = await read_window(
            database, self._lists(database), self.layers(), start, window.start, also=check
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
            hashes = self._id_hashes(database)
            found = await lookup_positions(database, hashes, self.layers(), wanted)
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

    # Appends and snapshots -------------------------------------------------------------

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
            shared = await lookup_positions(
                database, self._id_hashes(database), self.layers()[1:], kept_ids
            )
        for _attempt in range(2):
            reply = await self._append_call(database, entries, encoded, shared, once)
            shapes = {"ok": 5, "replay": 5, "missing": 1, "conflict": 2, "stale": 1}
            status, reply = checked_reply("session_append", reply, shapes)
            if status != "stale":
                break
            # This copy's fork_of is not the stored one (a copy made by hand): read it.
            stored = await type(self).get(self.id, db=database)
            if stored is None:
                raise ConflictError.stale(type(self).__name__, self.id, self._flue_version, 0)
            object.__setattr__(self, "fork_of", stored.fork_of)
            object.__setattr__(self, "origin", stored.origin)
        if status in ("missing", "stale"):
            raise ConflictError.stale(type(self).__name__, self.id, self._flue_version, 0)
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
        template = encode_owned(keys, dict.fromkeys(index_keys, 0.0), {}, index_keys)
        args: list[Any] = [self.id, entries[-1].id, len(entries), "1" if once else "0"]
        args += [self.fork_of or "", template]
        for entry, elements in zip(entries, encoded, strict=True):
            kept = entry.first_kept_entry_id if isinstance(entry, CompactionEntry) else ""
            fallback = shared.get(kept) if kept else None
            args += [entry.id, kept, -1 if fallback is None else fallback]
            args += [len(elements), *elements]
        return await database.scripts.call(
            "session_append",
            keys=[
                self._row_key(keys, self.id),
                self._entries_key(keys, self.id),
                self._entry_ids_key(keys, self.id),
                *index_keys,
            ],
            args=args,
            unsafe=not once,  # without `once` a repeat would append the entries again
        )

    def _took(self, database: Database, **stored: Any) -> None:
        """Set fields a script wrote, and what this copy knows the store holds."""
        spec = self.__flue_spec__
        for name, value in stored.items():
            object.__setattr__(self, name, value)
            self._flue_snapshot[name] = spec.codecs[name].encode(value)
        keys = spec.keys_of(database.keys, self.id)
        entries = spec.entries(keys, self._values())
        self._flue_entries = entries
        self._flue_snapshot[OWNED] = encode_owned(keys, entries, {})

    @classmethod
    async def save_snapshot(
        cls,
        session_id: str,
        entries: Sequence[AnyEntry],
        *,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Session:
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

        async def attempt() -> Session:
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
            write.lists[cls._entries_key(database.keys, session_id)] = elements
            write.hashes[cls._entry_ids_key(database.keys, session_id)] = positions
            write.absent.append(cls._forks_key(database.keys, session_id))
            try:
                await run_writes(database, [write])  # a racing writer: plan again on its state
            except GuardError:
                raise SessionForkedError(session_id, "its entries were not replaced") from None
            target._entries = list(entries)
            return target

        return await retry_on_conflict(attempt)

    # History, forks and listings ---------------------------------------------------------

    @classmethod
    async def history(
        cls,
        session_id: str,
        *,
        before: str | None = None,
        limit: int | None = None,
        db: Database | None = None,
    ) -> HistoryPage | None:
        """Page backwards through a session's entries, newest page first (``None`` for a
        missing session).

        Args:
            before: the ``next_cursor`` of the previous page; ``None`` starts at the end.
            limit: entries per page: default 100, at most 1000; zero or less means the
                default.

        Each page reads about ``limit`` entries (O(page), whatever the session's length);
        its entries are oldest first. Appends between pages do not move the cursor.

        Raises:
            ConfigurationError: ``before`` is not a cursor of this method.

        Example:
            ```python
            page = await Session.history(session_id, limit=50)
            older = await Session.history(session_id, before=page.next_cursor, limit=50)
            ```
        """
        database = pick_database(db)
        size = page_size(limit)
        end: int | None = None
        if before is not None:
            if not before.isdigit() or not before.isascii():
                raise ConfigurationError(f"{before!r} is not a Session.history cursor.")
            end = int(before)
        session = await cls.get(session_id, db=database)
        if session is None:
            return None
        if end is None:
            (length,) = await database.run_batch(
                [("LLEN", cls._entries_key(database.keys, session_id))]
            )
            end = session.base + int(length)
        step = size
        while True:
            start = max(0, end - step)
            layers = session.layers()
            found, _ = await read_window(database, cls._lists(database), layers, start, end)
            if len(found) >= size or start == 0:
                break
            step *= 2  # chunked entries: more elements than entries
        page = found[-size:]
        first = page[0][0] if page else 0
        return HistoryPage([entry for _, entry in page], str(first) if first > 0 else None)

    @classmethod
    async def fork(
        cls,
        session_id: str,
        at_entry_id: str,
        *,
        new_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Session:
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

        async def attempt() -> Session:
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
            if await database.client.zscore(cls._forks_key(database.keys, session_id), child_id):
                return child
            await run_writes(database, [plan_delete(child, database.keys)])
            raise ConflictError(
                f"Session {session_id!r} was deleted while {child_id!r} was forked from it; "
                "nothing was forked."
            )

        return await retry_on_conflict(attempt)

    @classmethod
    async def _mark(cls, database: Database, parent: Session, child_id: str) -> int:
        """Mark ``child_id`` as a fork of ``parent``, if ``parent`` is as it was read;
        return the mark's time (ms).

        Raises:
            ConflictError: the parent changed since it was read (or is gone).
        """
        keys = [cls._row_key(database.keys, parent.id), cls._forks_key(database.keys, parent.id)]
        reply = await database.scripts.call(
            "session_fork", keys=keys, args=["mark", child_id, parent._flue_version]
        )
        status, reply = checked_reply("session_fork", reply, {"ok": 2, "missing": 1, "conflict": 2})
        if status != "ok":
            found = int(reply[1]) if status == "conflict" else 0
            raise ConflictError.stale(cls.__name__, parent.id, parent._flue_version, found)
        return int(reply[1])

    @classmethod
    async def _unmark(
        cls, database: Database, session_id: str, child_id: str, at: int | None = None
    ) -> bool:
        """Take the mark of ``child_id`` off ``session_id`` (only if it is still the one
        made at ``at`` ms, when given); return whether it was taken."""
        keys = [cls._row_key(database.keys, session_id), cls._forks_key(database.keys, session_id)]
        args = ["unmark", child_id, "" if at is None else at]
        reply = await database.scripts.call("session_fork", keys=keys, args=args)
        _status, reply = checked_reply("session_fork", reply, {"ok": 2})
        return int(reply[1]) == 1

    @classmethod
    async def _forks(cls, database: Database, session_id: str) -> list[str]:
        """The ids of the forks of ``session_id`` its marks name; marks left by forks that
        stopped half way, or by forks deleted before their mark was taken, are dropped
        (once older than :data:`FORK_GRACE`: a younger one may be a fork being made)."""
        forks_key = cls._forks_key(database.keys, session_id)
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
            if isinstance(row, Session) and row.fork_of == session_id:
                forks.append(child_id)
            elif at < oldest and (row is None or isinstance(row, Session)):
                await cls._unmark(database, session_id, child_id, at)  # (an unreadable one stays)
        return forks

    async def _locate(
        self, database: Database, entry_id: str, lineage: list[Ancestor]
    ) -> tuple[int, int, int]:
        """Position, end position and entry count up to and with ``entry_id``."""
        layers = self.layers()
        at = (await lookup_positions(database, self._id_hashes(database), layers, [entry_id]))[
            entry_id
        ]
        if at is None:
            raise NotFoundError(f"Session {self.id!r} has no entry {entry_id!r} to fork at.")
        layer = next(layer for layer in layers if layer.covers(at))
        owner = next(a for a in lineage if a.session == layer.owner)
        row_key = self._row_key(database.keys, layer.owner)
        list_key = self._entries_key(database.keys, layer.owner)
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
    async def list(
        cls,
        *,
        agent: str | None = None,
        instance: str | None = None,
        harness: str | None = None,
        fork_of: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        db: Database | None = None,
    ) -> Page[Session]:
        """List sessions most recently updated first, filtered by the parts of their
        :func:`session_key` id or by the session they were forked from; rows only (no
        entries), O(page) with one filter.

        Args:
            limit: page size: default 100, at most 1000; zero or less means the default.
            cursor: the ``next_cursor`` of the previous page; the last page has none.
            on_error: a row that cannot be read raises (``"raise"``) or is left out and
                listed in ``Page.skipped`` (``"skip"``).

        A session appended to while you page moves to the front: a later page does not
        show it again.

        Example:
            ```python
            page = await Session.list(agent="support", limit=20)
            for session in page.items:
                print(session.id, session.updated_at, session.entry_count)
            ```
        """
        filters = {"agent": agent, "instance": instance, "harness": harness, "fork_of": fork_of}
        conditions = [getattr(cls, name) == value for name, value in filters.items() if value]
        query = cls.find(*conditions).sort_by("-updated_at").on_error(on_error)
        size = page_size(limit)
        return await query.using(pick_database(db)).page(size, cursor)

    # Deletes ---------------------------------------------------------------------------

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
        if self._flue_version == 0:
            return False
        database = self._database(db)
        # The delete's guard refuses while any mark is there; only then are the marks read
        # (a session without forks is deleted in one call).
        for attempt in range(4):
            if attempt == 2 and forks == "refuse":  # a fork is being made (or was cut short)
                raise SessionForkedError(self.id, "it was not deleted")
            if attempt > 0:  # refused: read the marks, dropping those of no fork once old
                live = await self._forks(database, self.id)
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


@dataclass(frozen=True)
class HistoryPage:
    """A page of :meth:`Session.history`: entries oldest first, and the cursor of the
    page before it (``None`` at the start of the history).

    Example:
        ```python
        page = await Session.history(session_id, limit=50)
        page.entries[-1].id, page.next_cursor
        ```
    """

    entries: list[AnyEntry]
    next_cursor: str | None
