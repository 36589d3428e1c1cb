"""Only type-checked (mypy --strict in .ci/run): what the query API returns."""

from __future__ import annotations

from typing import assert_type

import flue_models as fm
from tests.integration.models import Ticket


async def query_types() -> None:
    assert_type(await Ticket.find(Ticket.status == "open").all(), list[Ticket])
    assert_type(await Ticket.get("t-1"), Ticket | None)
    assert_type(await Ticket.get_many(["t-1"]), list[Ticket | None])
    assert_type(await Ticket.find().first(), Ticket | None)
    assert_type(await Ticket.find().page(limit=10), fm.Page[Ticket])
    assert_type(await Ticket.create(status="open", priority=1), Ticket)
    assert_type(await Ticket(status="open", priority=1).save(), Ticket)
    assert_type(await Ticket.find().count(), int)
    assert_type(Ticket.find(fm.in_(Ticket.status, ["a"])).sort_by("-created_at"), fm.Query[Ticket])
    either = fm.any_of(Ticket.status == "open", fm.not_(Ticket.priority >= 3))
    assert_type(await Ticket.find(either).all(), list[Ticket])
    assert_type(await Ticket.using(await fm.connect()).get("t-1"), Ticket | None)
    async for ticket in Ticket.find():
        assert_type(ticket, Ticket)
