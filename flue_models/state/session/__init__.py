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

:class:`Session` is one model assembled from one part per seam, like
:class:`~flue_models.state.submission.Submission`: the row and what every part shares
(``row``), loading a session or its context (``context``), appending (``writing``),
history pages and listings (``listing``), forks and deletion (``forks``).
"""

from flue_models.keys import SESSION_BUCKETS, SESSIONS
from flue_models.state.session.forks import Forking
from flue_models.state.session.row import (
    CHUNK_BYTES,
    FORK_GRACE,
    MAX_FORK_DEPTH,
    MIN_STEP,
    Ancestor,
    ForkOrigin,
    HistoryPage,
    decode_entries,
    encode_entry,
    key_parts,
    session_key,
)


class Session(Forking):
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
        collection = SESSIONS
        order_by = "updated_at"
        buckets = SESSION_BUCKETS


__all__ = [
    "CHUNK_BYTES",
    "FORK_GRACE",
    "MAX_FORK_DEPTH",
    "MIN_STEP",
    "SESSION_BUCKETS",
    "Ancestor",
    "ForkOrigin",
    "HistoryPage",
    "Session",
    "decode_entries",
    "encode_entry",
    "key_parts",
    "session_key",
]
