"""How many of the library's modules a save and a get walk through (DESIGN.md, "The hot
path"): each module on the path is another room a reader must visit and another layer of
calls a request pays for. Counted with ``sys.setprofile`` over one call after warm-up."""

from __future__ import annotations

import collections
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Annotated, Any, TypeVar

import pytest

import flue_models as fm
from flue_models import Indexed, Model

T = TypeVar("T")

#: The most modules of ours each operation may enter (issue 29's targets): on a save the
#: model, its spec, codec and writes, the key space and the client; on a get the same
#: but writes. Picking the database, the span check and the script call are answered on
#: the way (``model.base``, the client), not by a call into the connection layer or the
#: scripts package.
SAVE_MODULES, GET_MODULES = 6, 5


class Traced(Model):
    """Five fields, two of them indexed (one by equality, one by range)."""

    class Meta:
        collection = "hot_traced"
        order_by = "created_at"

    id: str = fm.new_id()
    status: Annotated[str, Indexed()]
    priority: Annotated[int, Indexed(range=True)]
    title: str = ""
    created_at: dt.datetime = fm.now()


async def modules_entered(call: Callable[[], Awaitable[T]]) -> tuple[T, dict[str, int]]:
    """Run ``call`` under a profiler; return its result and the calls of each module of
    ``flue_models`` it entered."""
    calls: collections.Counter[str] = collections.Counter()

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module == "flue_models" or module.startswith("flue_models."):
                calls[module] += 1

    sys.setprofile(profile)
    try:
        result = await call()
    finally:
        sys.setprofile(None)
    return result, dict(calls)


async def test_a_save_and_a_get_enter_few_modules(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suite's slot check (FLUE_CHECK_SLOTS, see tests/conftest.py) is a test mode:
    # off here, as in production, so the trace is of the path users run.
    monkeypatch.setattr(db.scripts, "check_slots", False)
    for priority in range(3):  # warm-up: scripts loaded, the bucket count checked
        saved = await Traced(status="open", priority=priority).save()
        assert await Traced.get(saved.id) is not None
    record = Traced(status="open", priority=7, title="traced")
    saved, on_save = await modules_entered(record.save)
    assert len(on_save) <= SAVE_MODULES, sorted(on_save)
    found, on_get = await modules_entered(lambda: Traced.get(saved.id))
    assert found is not None
    assert found.title == "traced"
    assert len(on_get) <= GET_MODULES, sorted(on_get)
    # The trace sees the path: the model, its spec and the client are on both.
    for module in ("flue_models.model.base", "flue_models.model.spec", "flue_models.client"):
        assert module in on_save
        assert module in on_get
