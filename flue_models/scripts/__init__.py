"""Lua scripts: one ``.lua`` file per operation, loaded once, called by EVALSHA.

Each file starts with a comment listing its KEYS and ARGV. Everything a script touches
is passed in KEYS (DESIGN invariant 7). Calls go through redis-py's ``AsyncScript``,
which sends EVALSHA and, on a NOSCRIPT reply (after ``SCRIPT FLUSH`` or a server
restart), loads the text once more and retries.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from flue_models.errors import ConfigurationError

#: Folder holding the package's own scripts.
SCRIPTS_DIR = Path(__file__).parent


@functools.cache
def read_script(path: Path) -> str:
    """Return the text of a ``.lua`` file, read from disk once per process.

    Example:
        ```python
        text = read_script(SCRIPTS_DIR / "save.lua")
        ```
    """
    return path.read_text()


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
        return await self.get(name)(keys=list(keys), args=list(args))
