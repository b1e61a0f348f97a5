"""Delivery slots: bounds hold, nobody waits forever, a healthy destination gets its turn."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from switchboard.services.delivery_slots import Slots


async def test_bounds_hold_and_every_waiter_is_served_under_churn() -> None:
    rng = random.Random(5)
    slots = Slots(total=8, per_hub=5, per_destination=3,
                  suspect=lambda d: d.endswith("7"))
    held: Counter[str] = Counter()
    hubs: Counter[str] = Counter()
    peak = {"total": 0}
    finished = 0

    async def lane(dest: str, hub: str) -> None:
        nonlocal finished
        for _ in range(5):
            await slots.acquire(hub, dest)
            held[dest] += 1
            hubs[hub] += 1
            try:
                peak["total"] = max(peak["total"], sum(held.values()))
                assert held[dest] <= (1 if dest.endswith("7") else 3)
                assert hubs[hub] <= 5
                await asyncio.sleep(rng.random() / 1000)
            finally:  # as the attempter does: a cancelled holder gives its slot back
                held[dest] -= 1
                hubs[hub] -= 1
                slots.release(hub, dest)
        finished += 1

    tasks = [asyncio.create_task(lane(f"d{i % 20}", f"h{i % 3}")) for i in range(120)]
    # Cancel some while they wait or hold: their slots must come back.
    await asyncio.sleep(0.002)
    for task in rng.sample(tasks, 15):
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
    assert peak["total"] <= 8
    assert finished >= 105
    assert slots.in_flight == 0
    # Everything released: a new request is served at once.
    await asyncio.wait_for(slots.acquire("h0", "d0"), 1)


async def test_a_crowd_of_busy_destinations_leaves_a_turn_to_a_new_one() -> None:
    slots = Slots(total=4, per_hub=100, per_destination=4)
    for _ in range(4):
        await slots.acquire("h", "busy")  # busy holds everything
    crowd = [asyncio.create_task(slots.acquire("h", "busy")) for _ in range(10)]
    newcomer = asyncio.create_task(slots.acquire("h", "new"))
    await asyncio.sleep(0)
    slots.release("h", "busy")  # one slot back: the newcomer's turn, not the crowd's
    await asyncio.wait_for(newcomer, 1)
    assert not any(t.done() for t in crowd)
    for t in crowd:
        t.cancel()
    await asyncio.gather(*crowd, return_exceptions=True)
