"""Lua scripts: one ``.lua`` file per operation, loaded once, called by EVALSHA.

Each file starts with a ``#!lua`` line (Redis 7 script flags), then a comment listing its
KEYS and ARGV. Everything a script touches is passed in KEYS (DESIGN invariant 7).

* Read-only scripts say ``#!lua flags=no-writes``.
* Write scripts say ``#!lua`` with no ``allow-oom``, so a server at ``maxmemory`` refuses
  them before they run. The loader inserts ``_checks.lua`` after their first line: the
  helpers of the check phase each runs before its first write.

Calls go through redis-py's ``AsyncScript``, which sends EVALSHA and, on a NOSCRIPT reply
(after ``SCRIPT FLUSH`` or a server restart), loads the text once more and retries. Every
error reply becomes a :class:`~flue_models.errors.ScriptError` (a refusal of the check
phase a :class:`~flue_models.errors.CorruptDataError`), with redis-py's error chained.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import ResponseError

from flue_models.errors import (
    ConfigurationError,
    CorruptValueError,
    FlueModelsError,
    OutOfMemoryError,
    ScriptError,
    WrongKeyTypeError,
)

#: Folder holding the package's own scripts.
SCRIPTS_DIR = Path(__file__).parent


@functools.cache
def read_script(path: Path) -> str:
    """Return the text to load for a ``.lua`` file, read from disk once per process.

    A write script (a ``#!lua`` line without ``no-writes``) gets the check-phase helpers
    of ``_checks.lua`` after that line.

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
    if "no-writes" in shebang:
        return text
    return f"{shebang}\n{(SCRIPTS_DIR / '_checks.lua').read_text()}{body}"


def script_error(name: str, exc: ResponseError) -> FlueModelsError:
    """Turn a script's error reply into the library's error for it.

    Example:
        >>> script_error("save", ResponseError("FLUE_WRONGTYPE p:t:all string zset")).found
        'string'
    """
    message = str(exc)
    words = message.split(" ", 4)
    if words[0] == "FLUE_WRONGTYPE" and len(words) >= 4:
        return WrongKeyTypeError(name, words[1], words[2], words[3])
    if words[0] == "FLUE_CORRUPT" and len(words) >= 4:
        return CorruptValueError(name, words[1], words[2], " ".join(words[3:]))
    if isinstance(exc, RedisOutOfMemoryError) or message.startswith("OOM"):
        return OutOfMemoryError(name)
    return ScriptError(name, message)


class Scripts:
    """The scripts of one client, by name (the file name without ``.lua``).

    Example:
        ```python
        reply = await db.scripts.call("save", keys=[...], args=[...])
        ```
    """

    def __init__(self, client: Redis, directories: Sequence[Path] = (SCRIPTS_DIR,)) -> None:
        self._client = client
        self._directories = list(directories)
        self._loaded: dict[str, AsyncScript] = {}

    def add_directory(self, directory: Path) -> None:
        """Make the ``.lua`` files of another folder callable by name.

        Example:
            ```python
            db.scripts.add_directory(Path("my_app/lua"))
            ```
        """
        self._directories.append(directory)

    def get(self, name: str) -> AsyncScript:
        """Return the registered script ``name``, registering it on first use.

        Raises:
            ConfigurationError: no folder holds ``<name>.lua``.

        Example:
            ```python
            script = db.scripts.get("save")
            ```
        """
        script = self._loaded.get(name)
        if script is None:
            for directory in self._directories:
                path = directory / f"{name}.lua"
                if path.is_file():
                    script = self._client.register_script(read_script(path))
                    break
            else:
                raise ConfigurationError(
                    f"No Lua script named {name!r} in {[str(d) for d in self._directories]}."
                )
            self._loaded[name] = script
        return script

    async def call(self, name: str, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run script ``name`` with EVALSHA (reloading it on NOSCRIPT) and return its reply.

        Example:
            ```python
            reply = await db.scripts.call("save", keys=["flue:ticket:dC0x"], args=["1"])
            ```
        """
        try:
            return await self.get(name)(keys=list(keys), args=list(args))
        except ResponseError as exc:
            raise script_error(name, exc) from exc
