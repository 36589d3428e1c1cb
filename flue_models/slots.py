"""Redis Cluster hash slots: which slot a key is in, and the one-slot rule.

A script call or a MULTI may only touch keys of one slot on a cluster (the server
answers ``CROSSSLOT`` otherwise). The slot check applies that rule on every server, so a
key layout mistake fails on a standalone server too: it is on when the environment sets
``FLUE_CHECK_SLOTS=1`` (the test suite does), or when a :class:`~flue_models.Database`
is given ``check_slots=True``.

Example:
    >>> slot_of("p::{ticket:0}:dC0x") == slot_of("p::{ticket:0}:all")
    True
    >>> one_slot("save", ["p::{ticket:0}:dC0x", "p::{ticket:0}:all"])
    15934
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from redis.crc import key_slot

from flue_models.errors import cross_slot

#: The environment variable that turns the slot check on (``1``).
CHECK_SLOTS_ENV = "FLUE_CHECK_SLOTS"

#: Commands whose every argument after the name is a key.
_ALL_KEYS = frozenset({"DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH", "MGET"})
#: Commands that name no key.
_NO_KEYS = frozenset({"TIME", "PING", "INFO", "MULTI", "EXEC", "DISCARD", "SCRIPT", "CLIENT"})


def check_slots_from_environment() -> bool:
    """Whether ``FLUE_CHECK_SLOTS=1`` is set.

    Example:
        >>> isinstance(check_slots_from_environment(), bool)
        True
    """
    return os.environ.get(CHECK_SLOTS_ENV, "") == "1"


def slot_of(key: str | bytes) -> int:
    """Return the Cluster hash slot of ``key`` (CRC16 of its hash tag, or of the key).

    Example:
        >>> slot_of("{user1000}.following") == slot_of("{user1000}.followers")
        True
    """
    return int(key_slot(key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key))


def command_keys(command: Sequence[Any]) -> list[Any]:
    """Return the keys a command of a batch names (the commands the library batches).

    Example:
        >>> command_keys(("DEL", "a", "b")), command_keys(("HSET", "h", "f", "v"))
        (['a', 'b'], ['h'])
        >>> command_keys(("EVALSHA", "0" * 40, 2, "k1", "k2", "arg"))
        ['k1', 'k2']
    """
    name = str(command[0]).upper()
    if name in _NO_KEYS:
        return []
    if name in _ALL_KEYS:
        return list(command[1:])
    if name in ("EVALSHA", "EVAL", "FCALL"):
        return list(command[3 : 3 + int(command[2])])
    return [command[1]] if len(command) > 1 else []


def one_slot(call: str, keys: Iterable[Any]) -> int | None:
    """Return the one slot of ``keys`` (``None`` for no key).

    Raises:
        ConfigurationError: the keys are in more than one slot.

    Example:
        >>> one_slot("noop", []) is None
        True
    """
    slots = {str(key) if not isinstance(key, bytes) else key.decode(): slot_of(key) for key in keys}
    found = set(slots.values())
    if len(found) > 1:
        raise cross_slot(call, slots)
    return found.pop() if found else None
