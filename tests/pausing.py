"""A forced pause between a library call's read and its write, as a slow network or a GC
pause would make one: the test's racing action runs just before the write is sent.

The hook wraps the three ways the library talks to the server (a command, a batch, a
script call) on one ``Database``; it fires once, before the first command the test's
``when`` accepts, then steps aside.

Example:
    ```python
    async with paused_before(db, script("stream_drop"), recreate_the_stream):
        await prune(policy)
    ```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import flue_models as fm
from flue_models.client import Script

#: What a hook is shown: a command and its arguments (a script call as
#: ``("SCRIPT", name, *keys, *args)``).
Command = tuple[Any, ...]


def script(name: str) -> Callable[[Command], bool]:
    """Accept the call of the library's script ``name``."""
    return lambda command: command[:2] == ("SCRIPT", name)


def command(name: str, *args: Any) -> Callable[[Command], bool]:
    """Accept a command by its name (and its first arguments, when given)."""
    wanted = (name.upper(), *args)
    return lambda sent: tuple(_text(p) for p in sent[: len(wanted)]) == wanted


def either(*matchers: Callable[[Command], bool]) -> Callable[[Command], bool]:
    """Accept what any of ``matchers`` accepts."""
    return lambda sent: any(m(sent) for m in matchers)


def _text(part: Any) -> Any:
    if isinstance(part, bytes):
        return part.decode("utf-8", "replace")
    return part.upper() if isinstance(part, str) and part.isalpha() else part


@asynccontextmanager
async def paused_before(
    db: fm.Database,
    when: Callable[[Command], bool],
    action: Callable[[], Awaitable[Any]],
) -> AsyncIterator[list[Command]]:
    """Run ``action`` once, just before the first command ``when`` accepts is sent.

    Yields the list of commands seen (for a test that also checks what was sent); the
    test fails if the pause never came (``when`` accepted nothing).
    """
    seen: list[Command] = []
    fired: list[bool] = []
    client = db.client
    send, batch, run_script = client.execute_command, db.run_batch, client.run_script

    async def before(commands: Sequence[Command]) -> None:
        seen.extend(commands)
        if not fired and any(when(c) for c in commands):
            fired.append(True)
            await action()

    async def paused_send(*args: Any, **options: Any) -> Any:
        await before([tuple(args)])
        return await send(*args, **options)

    async def paused_batch(commands: Sequence[Sequence[Any]], **options: Any) -> Any:
        await before([tuple(c) for c in commands])
        return await batch(commands, **options)

    async def paused_script(
        script: Script, keys: Sequence[Any], args: Sequence[Any], **options: Any
    ) -> Any:
        await before([("SCRIPT", script.name, *keys, *args)])
        return await run_script(script, keys, args, **options)

    patches = [
        (client, "execute_command", paused_send),
        (db, "run_batch", paused_batch),
        (client, "run_script", paused_script),
    ]
    saved = [(target, name, vars(target).get(name)) for target, name, _ in patches]
    for target, name, replacement in patches:
        setattr(target, name, replacement)
    try:
        yield seen
    finally:
        for target, name, before_patch in saved:
            if before_patch is None:
                delattr(target, name)
            else:
                setattr(target, name, before_patch)
    assert fired, "the pause never came: no command matched"


@asynccontextmanager
async def recorded(db: fm.Database) -> AsyncIterator[list[Command]]:
    """Yield the list of commands the library sends through ``db`` meanwhile."""

    async def nothing() -> None:
        return None

    async with paused_before(db, lambda _command: True, nothing) as seen:
        yield seen
