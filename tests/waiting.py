"""Waits with deadlines: a test that waits fails with a message instead of hanging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: How long any single wait of a test may take.
DEADLINE = 30.0


async def within(awaitable: Awaitable[T], what: str, seconds: float = DEADLINE) -> T:
    """Await ``awaitable``; fail the test naming ``what`` if it takes over ``seconds``."""
    try:
        return await asyncio.wait_for(awaitable, timeout=seconds)
    except TimeoutError:
        raise AssertionError(f"gave up after {seconds:g} s waiting for {what}") from None


async def poll_until(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = DEADLINE
) -> None:
    """Call ``check`` until it returns True; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def child_process(*args: str, **options: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start a subprocess and kill it on the way out, whether the test passed or not."""
    child = await asyncio.create_subprocess_exec(*args, **options)
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
