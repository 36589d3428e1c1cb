"""Reading part of a session's history: layers, windows and the context walk.

A session's entries live at *logical positions*: list element numbers counted from the
start of its history. A session made by :meth:`Session.fork` shares its parent's elements
below its ``base`` and keeps its own list from there, so its history is a stack of
*layers*, each one list holding the positions ``[lo, hi)``: the session's own list on top
(``hi`` open), then its parent's up to the fork point, and so on to the root (``lo = 0``).
Every ``entry_ids`` hash maps an id to the logical position of its first element.

A *window* is the entries of the positions ``[start, end)``, read in one ``MULTI``.
:func:`walk_context` computes the context from a window, or names the entry it still
needs; the loader then reads further back, so a load costs what the context costs.

Example:
    ```python
    layers = [Layer("child", 120, None), Layer("parent", 0, 120)]
    window = await read_window(db, layers, 80)
    ```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from flue_models.connection import Database
from flue_models.errors import DecodeError
from flue_models.model.fields import make_id
from flue_models.slots import command_keys, slot_of


class MessageEntry(BaseModel):
    """A message of the conversation: a role and JSON content.

    ``id`` defaults to a new :func:`~flue_models.make_id`. Left out, ``parent_id`` means
    "after the session's leaf" when appended; ``parent_id=None`` starts a new branch.

    Example:
        ```python
        MessageEntry(role="user", content="hi")   # appended after the leaf
        MessageEntry(id="m2", parent_id="m1", role="assistant", content=[{"type": "text"}])
        ```
    """

    type: Literal["message"] = "message"
    id: str = Field(default_factory=make_id)
    parent_id: str | None = None
    role: str
    content: Any = None
    dispatch_id: str | None = None
    submission_id: str | None = None


class CompactionEntry(BaseModel):
    """A summary that replaces the entries before ``first_kept_entry_id`` in the context.
    ``id`` and ``parent_id`` behave as in :class:`MessageEntry`.

    Example:
        ```python
        CompactionEntry(id="c1", parent_id="m9", summary="...", first_kept_entry_id="m7",
                        tokens_before=48_000)
        ```
    """

    type: Literal["compaction"] = "compaction"
    id: str = Field(default_factory=make_id)
    parent_id: str | None = None
    summary: str
    first_kept_entry_id: str
    tokens_before: int
    details: Any = None
    usage: Any = None


Entry = Annotated[MessageEntry | CompactionEntry, Field(discriminator="type")]
_ENTRY: TypeAdapter[MessageEntry | CompactionEntry] = TypeAdapter(Entry)
AnyEntry = MessageEntry | CompactionEntry


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


@dataclass(frozen=True)
class Layer:
    """One list of a session's history: session ``owner``'s own list, which holds the
    logical positions ``[lo, hi)`` (``hi`` is ``None`` for the top, growing layer).

    Example:
        >>> Layer("s-1", 0, None).covers(10)
        True
    """

    owner: str
    lo: int
    hi: int | None

    def covers(self, position: int) -> bool:
        """Whether this layer holds ``position``.

        Example:
            >>> Layer("p", 0, 40).covers(40)
            False
        """
        return self.lo <= position and (self.hi is None or position < self.hi)


def decode_run(
    key: str, elements: Sequence[bytes], start: int, *, ragged: bool = False
) -> list[tuple[int, AnyEntry]]:
    """Rebuild the entries of consecutive list elements, each with its logical position.

    ``ragged``: the run may begin inside a chunked entry and end inside one (a window
    whose bounds are not entry boundaries); those partial entries are left out. Anywhere
    else a malformed element is an error.

    Raises:
        DecodeError: an element is not a valid entry (naming the key and position).

    Example:
        >>> element = b'E{"type":"message","id":"m1","role":"user"}'
        >>> position, entry = decode_run("k", [element], 7)[0]
        >>> position, entry.id
        (7, 'm1')
    """
    entries: list[tuple[int, AnyEntry]] = []
    index = 0
    while ragged and index < len(elements) and elements[index][:1] == b"C":
        index += 1  # the tail of an entry that began before the window
    while index < len(elements):
        element = elements[index]
        kind, body = element[:1], element[1:]
        try:
            if kind == b"E":
                data, step = body, 1
            elif kind == b"H":
                count = int(body)
                parts = elements[index + 1 : index + 1 + count]
                if ragged and len(parts) < count and index + 1 + len(parts) == len(elements):
                    break  # an entry that goes on after the window
                if len(parts) != count or any(p[:1] != b"C" for p in parts):
                    raise ValueError(f"expected {count} chunks")
                data, step = b"".join(p[1:] for p in parts), 1 + count
            else:
                raise ValueError(f"unknown element kind {kind!r}")
            entries.append((start + index, _ENTRY.validate_json(data)))
        except (ValueError, ValidationError) as exc:
            where = f"entries[{start + index}]"
            raise DecodeError(key, where, f"is not an entry: {exc}") from None
        index += step
    return entries


def layer_ranges(
    layers: Sequence[Layer], start: int, end: int | None
) -> list[tuple[Layer, int, int]]:
    """The ``LRANGE`` bounds (element indexes of each layer's own list) of ``[start, end)``,
    oldest layer first.

    Example:
        >>> layer_ranges([Layer("c", 10, None), Layer("p", 0, 10)], 4, None)
        [(Layer(owner='p', lo=0, hi=10), 4, 9), (Layer(owner='c', lo=10, hi=None), 0, -1)]
    """
    ranges = []
    for layer in reversed(layers):
        lo = max(start, layer.lo)
        hi = layer.hi if end is None else end if layer.hi is None else min(end, layer.hi)
        if hi is not None and lo >= hi:
            continue
        ranges.append((layer, lo - layer.lo, -1 if hi is None else hi - layer.lo - 1))
    return ranges


@dataclass
class Window:
    """The entries of logical positions ``[start, end)`` of a session's history.

    ``positions`` and ``absent`` hold what lookups in ``entry_ids`` found about ids
    outside the window (their positions; ids that are not in the history at all).

    Example:
        ```python
        window = Window(start=80)
        window.add(decode_run(key, elements, 80))
        ```
    """

    start: int
    items: dict[str, tuple[int, AnyEntry]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)

    def add(self, entries: Sequence[tuple[int, AnyEntry]]) -> None:
        """Add decoded entries; the first (lowest) position of an id wins, as in
        ``entry_ids``.

        Example:
            ```python
            window.add(decode_run(key, elements, 40))
            ```
        """
        for position, entry in entries:
            known = self.items.get(entry.id)
            if known is None or position < known[0]:
                self.items[entry.id] = (position, entry)

    def entries(self) -> list[AnyEntry]:
        """The entries, oldest first.

        Example:
            ```python
            [entry.id for entry in window.entries()]
            ```
        """
        return [entry for _, entry in sorted(self.items.values(), key=lambda item: item[0])]


@dataclass(frozen=True)
class Need:
    """What :func:`walk_context` still needs: the entry ``id`` (below the window), and
    ``first_kept`` when it is looking for a compaction's first kept entry.

    Example:
        >>> Need("m3", None).id
        'm3'
    """

    id: str
    first_kept: str | None


def walk_context(leaf_id: str | None, window: Window) -> tuple[SessionContext, int] | Need:
    """Return the context of ``leaf_id`` and the position its kept entries start at, or
    the entry the window lacks.

    From the leaf, ``parent_id`` links are followed to the nearest compaction and on to
    its ``first_kept_entry_id``; the messages from there to the leaf are the context
    (from the compaction itself when the first kept entry is not on the branch; the whole
    branch when no compaction is). An entry's parent is taken to precede it in the list:
    an ancestor below the first kept entry's position ends the search for it.

    Example:
        ```python
        result = walk_context(session.leaf_id, window)
        if isinstance(result, Need):
            ...   # read further back, then walk again
        ```
    """
    branch: list[tuple[int, AnyEntry]] = []
    seen: set[str] = set()
    compaction: CompactionEntry | None = None
    cursor = leaf_id
    while cursor is not None and cursor not in seen:
        found = window.items.get(cursor)
        if found is None:
            if window.start == 0 or cursor in window.absent:
                break  # the root, or a parent that is not stored: the branch ends
            if compaction is not None:
                first = compaction.first_kept_entry_id
                if first in window.items or first in window.absent:
                    break  # the first kept entry is not an ancestor
                at, kept_at = window.positions.get(cursor), window.positions.get(first)
                if at is not None and kept_at is not None and at < kept_at:
                    break
                return Need(cursor, first)
            return Need(cursor, None)
        seen.add(cursor)
        branch.append(found)
        entry = found[1]
        if compaction is None and isinstance(entry, CompactionEntry):
            compaction = entry
        if compaction is not None and entry.id == compaction.first_kept_entry_id:
            break
        cursor = entry.parent_id
    branch.reverse()  # root (or first kept entry) to leaf
    if compaction is None:
        messages = [e for _, e in branch if isinstance(e, MessageEntry)]
        return SessionContext(summary=None, messages=messages), 0
    ids = [e.id for _, e in branch]
    first = compaction.first_kept_entry_id
    at = ids.index(first) if first in ids else ids.index(compaction.id)
    kept = [e for _, e in branch[at:] if isinstance(e, MessageEntry)]
    return SessionContext(summary=compaction.summary, messages=kept), branch[at][0]


async def read_window(
    db: Database,
    layers: Sequence[Layer],
    start: int,
    end: int | None = None,
    *,
    also: Sequence[tuple[Any, ...]] = (),
) -> tuple[list[tuple[int, AnyEntry]], list[Any]]:
    """Read and decode the positions ``[start, end)`` across ``layers`` in one ``MULTI``
    (``start`` may fall inside a chunked entry), with the replies of the ``also`` commands.

    Example:
        ```python
        check = [("HGET", row_key, "version")]
        entries, (version,) = await read_window(db, layers, 80, also=check)
        ```
    """
    ranges = layer_ranges(layers, start, end)
    commands: list[tuple[Any, ...]] = [
        ("LRANGE", db.keys.session(layer.owner).entries, first, last)
        for layer, first, last in ranges
    ]
    replies = await read_layers(db, commands, also)
    entries: list[tuple[int, AnyEntry]] = []
    for (layer, first, _last), elements in zip(ranges, replies, strict=False):
        ragged = not entries and start > 0
        entries += decode_run(
            db.keys.session(layer.owner).entries,
            elements,
            layer.lo + first,
            ragged=ragged or end is not None,
        )
    return entries, list(replies[len(commands) :])


async def read_layers(
    db: Database, commands: Sequence[tuple[Any, ...]], also: Sequence[tuple[Any, ...]] = ()
) -> list[Any]:
    """The replies of ``commands`` (each reads one session's keys) and then of ``also``.

    One ``MULTI`` when every key is in one slot. Else (the sessions of a fork's history
    are in several buckets) the commands outside the slot of ``also`` (or of the first
    command) are read first, without ``MULTI``: an ancestor's history up to a fork point
    does not change while the fork exists (its mark keeps the ancestor from being
    replaced or deleted). Then the rest in one ``MULTI``, so a version check in ``also``
    still sees its own session's reads at one instant, after the ancestors'.

    Example:
        ```python
        own, parent, version = await read_layers(db, [own_read, parent_read], [check])
        ```
    """
    everything = [*commands, *also]
    slots = [slot_of(command_keys(command)[0]) for command in everything]
    anchor = slots[-1] if also else slots[0] if slots else 0
    if all(slot == anchor for slot in slots):
        return await db.run_batch(everything, atomic=True)
    apart = [i for i, slot in enumerate(slots) if slot != anchor]
    together = [i for i, slot in enumerate(slots) if slot == anchor]
    replies: list[Any] = [None] * len(everything)
    for indexes, atomic in ((apart, False), (together, True)):
        found = await db.run_batch([everything[i] for i in indexes], atomic=atomic)
        for i, reply in zip(indexes, found, strict=True):
            replies[i] = reply
    return replies


async def lookup_positions(
    db: Database, layers: Sequence[Layer], ids: Sequence[str]
) -> dict[str, int | None]:
    """The logical position of each id in the history (``None``: not in it), one round trip.

    An id counts in a layer only at a position the layer holds (a parent's entries
    after the fork point are not the fork's).

    Example:
        ```python
        await lookup_positions(db, layers, ["m7"])   # {'m7': 412}
        ```
    """
    commands = [("HMGET", db.keys.session(layer.owner).entry_ids, *ids) for layer in layers]
    replies = await read_layers(db, commands)
    found: dict[str, int | None] = {}
    for index, entry_id in enumerate(ids):
        found[entry_id] = None
        for layer, values in zip(layers, replies, strict=True):
            raw = values[index]
            if raw is not None and raw.isdigit() and layer.covers(int(raw)):
                found[entry_id] = int(raw)
                break
    return found
