"""Declare a model, save records, query them with a keyset cursor."""

import asyncio
from datetime import datetime
from typing import Annotated

import flue_models as fm
from flue_models import Indexed, Model


class Ticket(Model):
    class Meta:
        collection = "ticket"  # stable name of the key space; never the class path
        order_by = "created_at"  # default ordering, the score of every index

    id: str = fm.new_id()
    status: Annotated[str, Indexed()]
    priority: Annotated[int, Indexed(range=True)]
    created_at: datetime = fm.now()


async def main() -> None:
    async with fm.connect(key_prefix="tickets-example"):
        for priority in range(5):
            await Ticket(status="open", priority=priority).save()

        query = Ticket.find(Ticket.status == "open", Ticket.priority >= 2).sort_by("-created_at")
        page = await query.page(limit=2)
        more = await query.page(limit=2, cursor=page.next_cursor)
        print("first page:", [t.priority for t in page.items])
        print("second page:", [t.priority for t in more.items])

        ticket = page.items[0]
        await ticket.update(status="closed")
        print("open now:", await Ticket.find(Ticket.status == "open").count())
        print(await Ticket.find(Ticket.status == "open").explain())

        stale = await Ticket.get(ticket.id)
        assert stale is not None
        await ticket.update(priority=9)
        try:
            await stale.update(priority=0)
        except fm.ConflictError as exc:
            print("refused:", exc)

        for old in await Ticket.find().all():  # leave the example's store empty
            await old.delete()


if __name__ == "__main__":
    asyncio.run(main())
