"""Indexes, saving, conflicts, queries, pagination, binding and verification."""

import asyncio
from datetime import datetime
from typing import Annotated

import flue_models as fm
from flue_models import Indexed, Model, Unique


# --8<-- [start:declare]
class Customer(Model):
    class Meta:
        collection = "customer"
        order_by = "joined_at"
        indexes = (("country", "plan"),)  # a compound equality index

    id: str = fm.new_id()
    email: Annotated[str, Unique()]  # one record per value; also equality-indexed
    country: Annotated[str, Indexed()]  # ==, !=, in_
    plan: Annotated[str, Indexed()]
    seats: Annotated[int, Indexed(range=True)]  # also <, <=, >, >= and sort_by
    note: str | None = None  # stored, not queryable
    joined_at: datetime = fm.now()


# --8<-- [end:declare]


async def main() -> None:
    async with fm.connect(key_prefix="models-example") as db:
        # --8<-- [start:save]
        ada = await Customer(email="ada@example.com", country="UK", plan="pro", seats=5).save()
        ada.seats = 7
        await ada.save()  # writes the changed field and moves its index entry
        await ada.update(plan="team", note="upgraded")  # set and save in one call
        await ada.update(note=None)  # None removes the field and its index entry
        await Customer.create(id="c-2", email="bo@example.com", country="FR", plan="pro", seats=2)
        await Customer.save_many(
            [
                Customer(email=f"user{i}@example.com", country="DE", plan="free", seats=i)
                for i in range(10)
            ]
        )  # up to 500 records per round trip, all or nothing
        # --8<-- [end:save]

        # --8<-- [start:conflicts]
        stale = await Customer.get(ada.id)
        await ada.update(seats=8)
        try:
            await stale.update(seats=1)  # type: ignore[union-attr]
        except fm.ConflictError as exc:
            print("refused:", exc.expected, "<", exc.found)
        try:
            await Customer.create(email="ada@example.com", country="UK", plan="pro", seats=1)
        except fm.UniqueViolationError as exc:
            print("taken by", exc.holder)
        # --8<-- [end:conflicts]

        # --8<-- [start:query]
        query = Customer.find(Customer.country == "DE", Customer.seats >= 3)
        query = query.sort_by("-seats").limit(100)
        print([c.seats for c in await query.all()])  # [9, 8, 7, 6, 5, 4, 3]
        print(await Customer.find(fm.in_(Customer.country, ["UK", "FR"])).count())  # 2
        print(await Customer.find((Customer.plan == "free") & (Customer.seats < 2)).first())
        async for customer in Customer.find(Customer.plan != "free"):
            print(customer.email)
        print(await Customer.find(Customer.country == "DE", Customer.plan == "free").explain())
        # --8<-- [end:query]

        # --8<-- [start:alternatives]
        big_or_uk = (Customer.seats >= 8) | (Customer.country == "UK")
        print(sorted(c.seats for c in await Customer.find(big_or_uk).all()))  # [8, 8, 9]
        not_free = Customer.find(~(Customer.plan == "free"), ~(Customer.seats < 5))
        print([c.email for c in await not_free.all()])  # ['ada@example.com']
        print(await Customer.find(fm.any_of(Customer.plan == "team", fm.not_(big_or_uk))).count())
        print(await Customer.find(big_or_uk).explain())  # one walk per alternative
        # --8<-- [end:alternatives]

        # --8<-- [start:pages]
        page = await Customer.find().sort_by("-joined_at").page(limit=4)
        while page.next_cursor is not None:
            page = (
                await Customer.find().sort_by("-joined_at").page(limit=4, cursor=page.next_cursor)
            )
        # --8<-- [end:pages]

        # --8<-- [start:bind]
        other = await fm.connect(key_prefix="models-example-tenant-b")
        await Customer.using(other).create(
            email="ada@example.com", country="UK", plan="pro", seats=1
        )
        print(await Customer.using(other).find().count())  # 1: its own records only
        # --8<-- [end:bind]

        # --8<-- [start:verify]
        report = await fm.verify_collection(Customer)
        assert report.ok, report.drift
        # --8<-- [end:verify]

        for database in (db, other):  # leave the example's keys behind for nobody
            keys = [k async for k in database.client.scan_iter(match=database.keys.pattern())]
            if keys:
                await database.client.delete(*keys)
        await other.close()


if __name__ == "__main__":
    asyncio.run(main())
