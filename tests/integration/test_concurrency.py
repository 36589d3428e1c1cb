"""Many writers on two clients: indexes stay exact and no update is lost."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import flue_models as fm
from tests.integration.models import Ticket

CHURN_IDS = [f"churn-{i}" for i in range(8)]
COUNTER_IDS = [f"counter-{i}" for i in range(4)]
STATUSES = ["open", "closed", "pending"]
TASKS, OPS_PER_TASK = 50, 40


async def test_concurrent_writers_leave_exact_indexes_and_lose_no_update(
    db: fm.Database, redis_url: str, protocol: int
) -> None:
    other = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    clients = [db, other]
    await Ticket.using(db).save_many(
        [Ticket(id=i, status="open", priority=0, owner="count") for i in COUNTER_IDS]
    )
    increments: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        held: list[Ticket] = []  # copies kept around to go stale
        for _ in range(OPS_PER_TASK):
            tickets = Ticket.using(rng.choice(clients))
            action = rng.choice(["create", "update", "delete", "stale", "increment"])
            try:
                if action == "create":
                    await tickets.create(
                        id=rng.choice(CHURN_IDS),
                        status=rng.choice(STATUSES),
                        priority=rng.randint(0, 5),
                        owner=rng.choice([None, "ann", "bo"]),
                    )
                elif action in ("update", "delete"):
                    current = await tickets.get(rng.choice(CHURN_IDS))
                    if current is None:
                        continue
                    held.append(current)
                    await asyncio.sleep(0)  # let other writers interleave
                    if action == "update":
                        await current.update(
                            status=rng.choice(STATUSES), owner=rng.choice([None, "ann"])
                        )
                    else:
                        await current.delete()
                        held.remove(current)  # a deleted copy saves as a new record
                elif action == "stale" and held:
                    copy = held.pop(rng.randrange(len(held)))
                    taken_at = copy.version
                    before = await tickets.get(copy.id)
                    copy.priority = rng.randint(0, 5)
                    await copy.save()
                    # Success is only allowed when nobody wrote since the copy was taken
                    # (not even a delete followed by a create of the same id).
                    assert before is not None
                    assert before.version == taken_at
                elif action == "increment":
                    counter = await tickets.get(rng.choice(COUNTER_IDS))
                    assert counter is not None
                    await asyncio.sleep(0)
                    await counter.update(priority=counter.priority + 1)
                    increments[counter.id] += 1
                outcomes[f"{action}:ok"] += 1
            except fm.ConflictError:
                outcomes[f"{action}:conflict"] += 1

    try:
        async with asyncio.TaskGroup() as group:  # a failure cancels the other workers
            for seed in range(TASKS):
                group.create_task(worker(seed))
        report = await fm.verify_collection(Ticket, db=db)
        assert report.ok, report.drift[:10]
        for counter_id in COUNTER_IDS:
            stored = await Ticket.using(other).get(counter_id)
            assert stored is not None
            assert stored.priority == increments[counter_id], "an increment was lost"
        assert outcomes["increment:conflict"] > 0, "the race this test is about never happened"
        assert outcomes["update:ok"] + outcomes["create:ok"] > 0
    finally:
        await other.close()
