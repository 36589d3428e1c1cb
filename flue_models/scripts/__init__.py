"""Lua scripts: one ``.lua`` file per operation, loaded once, called by EVALSHA.

Each file starts with a ``#!lua`` line (Redis 7 script flags), then a comment listing its
KEYS and ARGV. Everything a script touches is passed in KEYS (DESIGN invariant 7).

* Read-only scripts say ``#!lua flags=no-writes``.
* Write scripts say ``#!lua`` with no ``allow-oom``, so a server at ``maxmemory`` refuses
  them before they run. The loader inserts the helpers of ``_checks.lua`` a script names
  after its first line: the check phase a write script runs before its first write (and
  a read script before it reads), and the server's clock.

A call goes through the client's :meth:`~flue_models.client.FlueCommands.run_script`:
it sends EVALSHA and, on a NOSCRIPT reply (after ``SCRIPT FLUSH`` or a server restart),
sends it again as ``EVAL`` with its text (NOSCRIPT means it did not run; EVAL caches the
script again and cannot meet NOSCRIPT, however often another client flushes). It goes
through the client's retries: a script that is not safe to repeat is called with
``unsafe=True``. Every error reply becomes a :class:`~flue_models.errors.ScriptError` (a
refusal of the check phase a :class:`~flue_models.errors.CorruptDataError`), with
redis-py's error chained.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flue_models.client import FlueClient, Script
from flue_models.errors import ConfigurationError, ScriptError
from flue_models.slots import check_slots_from_environment, one_slot

#: Folder holding the package's own scripts.
SCRIPTS_DIR = Path(__file__).parent


#: A helper of ``_checks.lua``: the paragraph (lines up to a blank one) defining it.
_HELPER = re.compile(r"^local function (flue_\w+)", re.MULTILINE)
#: A name a script (or a helper) may call a helper by.
_NAMED = re.compile(r"\bflue_\w+")


@functools.cache
def check_helpers() -> dict[str, str]:
    """The helpers of ``_checks.lua`` by name, each the paragraph that defines it (its
    comment and its code), in the file's order.

    Example:
        ```python
        "flue_expect" in check_helpers()   # True
        ```
    """
    helpers: dict[str, str] = {}
    for paragraph in (SCRIPTS_DIR / "_checks.lua").read_text().split("\n\n"):
        found = _HELPER.search(paragraph)
        if found is not None:
            helpers[found.group(1)] = paragraph.rstrip("\n") + "\n\n"
    return helpers


def helpers_for(body: str) -> str:
    """The helpers of ``_checks.lua`` that ``body`` names, with those they name in turn,
    in the file's order (each one a script defines is a closure the server makes on every
    call, so a script gets only what it uses).

    Example:
        ```python
        helpers_for("bad = flue_expect(KEYS[1], 'zset')")   # flue_wrong's and flue_expect's
        ```
    """
    helpers = check_helpers()
    wanted: set[str] = set()
    pending = [body]
    while pending:
        for name in _NAMED.findall(pending.pop()):
            if name in helpers and name not in wanted:
                wanted.add(name)
                pending.append(helpers[name])
    return "".join(text for name, text in helpers.items() if name in wanted)


@functools.cache
def read_script(path: Path) -> str:
    """Return the text to load for a ``.lua`` file, read from disk once per process.

    Every script gets the check-phase helpers of ``_checks.lua`` it names after that line
    (see :func:`helpers_for`).

    Raises:
        ConfigurationError: the file does not start with a ``#!lua`` line.

    Example:
        ```python
        text = read_script(SCRIPTS_DIR / "save.lua")
        assert text.startswith("#!lua")
        ```
    """
    text = path.read_text()
    shebang, _, body = text.partition("\n")
    if not shebang.startswith("#!lua"):
        raise ConfigurationError(
            f"{path} must start with a '#!lua' line (with flags=no-writes if it only reads)."
        )
    return f"{shebang}\n{helpers_for(body)}{body}"


#: What each status of a script reply must come with: its least number of elements.
ReplyShape = dict[str, int]


def checked_reply(name: str, reply: Any, shapes: ReplyShape) -> tuple[str, list[Any]]:
    """Return a script's ``(status, reply)`` after checking its shape, before any use.

    ``shapes`` maps each status the script may answer with to the least number of
    elements that reply has (the status included).

    Raises:
        ScriptError: the reply is not a list, has an unknown status, or is too short (a
            script and library that do not match: nothing is guessed).

    Example:
        >>> checked_reply("stream_append", [b"ok", 7], {"ok": 2, "closed": 1})
        ('ok', [b'ok', 7])
    """
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes | str):
        raise ScriptError(name, f"a reply of another shape: {reply!r:.200}")
    status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
    least = shapes.get(status)
    if least is None or len(reply) < least:
        raise ScriptError(name, f"a reply of another shape: {reply!r:.200}")
    return status, reply


class Scripts:
    """The scripts of one client, by name (the file name without ``.lua``).

    Example:
        ```python
        reply = await db.scripts.call("save", keys=[...], args=[...])
        ```
    """

    def __init__(self, client: FlueClient, directories: Sequence[Path] = (SCRIPTS_DIR,)) -> None:
        self._client = client
        self._directories = list(directories)
        #: The scripts registered so far, by name (:meth:`get` registers on first use).
        self.loaded: dict[str, Script] = {}
        #: Refuse a call whose keys span Cluster slots before sending it (see
        #: :mod:`flue_models.slots`); a cluster refuses it anyway.
        self.check_slots = check_slots_from_environment()

    def add_directory(self, directory: Path) -> None:
        """Make the ``.lua`` files of another folder callable by name.

        Example:
            ```python
            db.scripts.add_directory(Path("my_app/lua"))
            ```
        """
        self._directories.append(directory)

    def get(self, name: str) -> Script:
        """Return the registered script ``name``, registering it on first use.

        Raises:
            ConfigurationError: no folder holds ``<name>.lua``.

        Example:
            ```python
            script = db.scripts.get("save")
            ```
        """
        script = self.loaded.get(name)
        if script is None:
            for directory in self._directories:
                path = directory / f"{name}.lua"
                if path.is_file():
                    text = read_script(path)
                    script = Script(name, text, hashlib.sha1(text.encode()).hexdigest())
                    break
            else:
                raise ConfigurationError(
                    f"No Lua script named {name!r} in {[str(d) for d in self._directories]}."
                )
            self.loaded[name] = script
        return script

    async def call(
        self,
        name: str,
        keys: Sequence[Any] = (),
        args: Sequence[Any] = (),
        *,
        unsafe: bool = False,
        any_slots: bool = False,
    ) -> Any:
        """Run script ``name`` with EVALSHA (loading it on NOSCRIPT) and return its reply.

        ``unsafe``: the script is not safe to repeat after a lost reply (see
        :class:`~flue_models.client.FlueRedis`). ``any_slots``: the script touches keys
        of several slots by design (a move between buckets, on a standalone server), so
        the slot check does not apply to this call.

        Raises:
            ConfigurationError: the slot check is on and ``keys`` span several slots.

        Example:
            ```python
            reply = await db.scripts.call("save", keys=["flue::{ticket:0}:dC0x"], args=["1"])
            ```
        """
        script = self.get(name)
        if self.check_slots and not any_slots:
            one_slot(name, keys)
        return await self._client.run_script(script, keys, args, unsafe=unsafe)
