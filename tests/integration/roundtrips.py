"""Count round trips to the server: each write of a request (or pipeline) is one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import flue_models as fm


@contextmanager
def count_round_trips(db: fm.Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Yield a one-item list holding the number of requests sent on ``db`` so far."""
    counter = [0]
    connection_class = db.client.connection_pool.connection_class
    original = connection_class.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    with monkeypatch.context() as patch:
        patch.setattr(connection_class, "send_packed_command", counting)
        yield counter
