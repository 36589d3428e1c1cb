"""The session row: its fields, the keys it owns, the layers of a fork's history, and
the helpers every part of :class:`Session` shares (entry encoding, ``session_key``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Self
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from flue_models.errors import (
    ConfigurationError,
    EncodingError,
)
from flue_models.keys import KeySpace
from flue_models.model.base import Model
from flue_models.model.codec import canonical_json, is_plain_json, value_problem
from flue_models.model.fields import Indexed
from flue_models.state.session_window import (
    AnyEntry,
    CompactionEntry,
    Layer,
    MessageEntry,
    decode_run,
)

#: Entries larger than this are stored as several list elements.
CHUNK_BYTES = 512 * 1024
#: How many forks deep a session may be (each level is one more list a load may read).
MAX_FORK_DEPTH = 16
#: A context load reads at least this many elements further back when it needs more.
MIN_STEP = 64
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
    return entry_elements(entry_json(entry))


def entry_json(entry: MessageEntry | CompactionEntry, parent: Any = None) -> bytes:
    """Return an entry's canonical JSON (what its list elements hold), with ``parent`` as
    its ``parent_id`` when it was made without one.

    Raises:
        EncodingError: the entry holds a value JSON cannot carry back (naming where).

    Example:
        >>> entry_json(MessageEntry(id="m1", role="user"))[:14]
        b'{"content":nul'
    """
    plain = entry.model_dump()
    if not is_plain_json(plain):  # the full walk says where and why, or that all is well
        problem = value_problem(entry, text_keys=True)  # content is untyped JSON
        if problem:
            raise EncodingError(f"Session entry {entry.id!r} {problem}; nothing was appended.")
        plain = entry.model_dump(mode="json")
    if "parent_id" not in entry.model_fields_set:
        plain["parent_id"] = parent
    return canonical_json(plain).encode()


def entry_elements(data: bytes) -> list[bytes]:
    """Return the list elements that hold an entry's JSON: one, or a header and chunks.

    Example:
        >>> entry_elements(b'{"id":"m1"}')
        [b'E{"id":"m1"}']
    """
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


class SessionRow(Model):
    """The fields of a session and what every part of :class:`Session` shares: the keys a
    session owns, the layers of a fork's history, the entries a load read.

    ``metadata`` is the application's and is saved under the version check; ``leaf_id``,
    ``entry_count``, ``updated_at`` and ``context_from`` are kept by ``append``.

    Example:
        ```python
        Session.owned_keys(db.keys, "s-1")   # what a session's deletion removes
        ```
    """

    class Meta:
        abstract = True

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

    def __copy__(self) -> Self:
        """A copy with its own list of entries (an append extends its copy's list in
        place, so two copies never share one)."""
        copied = super().__copy__()
        if self._entries is not None:
            copied._entries = list(self._entries)
        return copied

    @model_validator(mode="before")
    @classmethod
    def _parts_from_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            parts = key_parts(data["id"])
            agent, instance, harness = parts if parts is not None else (None, None, None)
            data = {**data, "agent": agent, "instance": instance, "harness": harness}
        return data

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
        The list is this copy's own, and its appends extend it in place.

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
        _row, entries, entry_ids, forks = keys.session(record_id)
        return [entries, entry_ids, forks]

    @classmethod
    def delete_guards(cls, keys: KeySpace, record_id: str) -> list[str]:
        """A session with forks is not deleted (they read its history).

        Example:
            ```python
            Session.delete_guards(db.keys, "s-1")   # the marks of its forks
            ```
        """
        return [keys.session(record_id).forks]


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
