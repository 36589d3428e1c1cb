"""Normalize Redis replies: RESP2 and RESP3 give the same data in different shapes.

Example:
    >>> reply_text(b"ok"), reply_pairs([b"a", b"1"]), reply_hash([b"f", b"v"])
    ('ok', {'a': '1'}, {b'f': b'v'})
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast


def reply_text(value: Any) -> str:
    """Return a reply value as text (bytes are UTF-8).

    Example:
        >>> reply_text(b"0-1"), reply_text(5)
        ('0-1', '5')
    """
    return value.decode() if isinstance(value, bytes) else str(value)


def reply_pairs(reply: Any) -> dict[str, str]:
    """Return a map reply (RESP3 map or RESP2 flat list) as ``{text: text}``.

    Example:
        >>> reply_pairs({b"maxmemory-policy": b"noeviction"})
        {'maxmemory-policy': 'noeviction'}
    """
    if isinstance(reply, Mapping):
        return {reply_text(k): reply_text(v) for k, v in reply.items()}
    if isinstance(reply, list | tuple):
        return {reply_text(reply[i]): reply_text(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}
    return {}


def reply_scored(reply: Any) -> list[tuple[str, float]]:
    """Return a sorted-set reply WITHSCORES (RESP3 pairs or a RESP2 flat list) as
    ``[(member, score)]``.

    Example:
        >>> reply_scored([b"a", b"1", b"b", b"2.5"]), reply_scored([[b"a", 1.0]])
        ([('a', 1.0), ('b', 2.5)], [('a', 1.0)])
    """
    items = list(reply)
    if items and isinstance(items[0], list | tuple):
        return [(reply_text(member), float(reply_text(score))) for member, score in items]
    return [
        (reply_text(m), float(reply_text(s))) for m, s in zip(items[::2], items[1::2], strict=True)
    ]


def reply_hash(reply: Any) -> dict[bytes, bytes]:
    """Return an HGETALL reply (a dict from redis-py, a flat list in a raw pipeline) as bytes.

    Example:
        >>> reply_hash({b"status": b"open"})
        {b'status': b'open'}
    """
    if isinstance(reply, dict):
        return cast(dict[bytes, bytes], reply)
    return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}


def reply_time(reply: Any) -> dt.datetime:
    """Return a TIME reply (seconds, microseconds) as an aware UTC datetime.

    Example:
        >>> reply_time([b"1", b"500000"]).isoformat()
        '1970-01-01T00:00:01.500000+00:00'
    """
    seconds, micros = reply
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC) + dt.timedelta(microseconds=int(micros))
