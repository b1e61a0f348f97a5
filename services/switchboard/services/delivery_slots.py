"""In-flight slots of one deliverer process: global, per hub and per destination, shared
fairly (see `Slots`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable


class Slots:
    """In-flight bounds: global, per hub and per destination.

    A destination that is failing, or has not answered 2xx yet, gets one slot (a slow
    start), so endpoints that hang cost one slot each, not `per_destination`, before
    their circuit opens. And while others wait, no destination holds more than its fair
    share of the total (divided among the destinations holding or waiting for slots), so
    a crowd of slow destinations cannot take every slot from a healthy one.

    Waiters queue per destination; destinations that could take a slot now take turns
    (round robin), those held back by their own limit wait aside until one of their own
    slots comes back. Taking a free slot costs no await; a release wakes in O(1) on
    average, whatever the number of waiting lanes.
    """

    def __init__(self, total: int, per_hub: int, per_destination: int,
                 suspect: Callable[[str], bool] = lambda destination_id: False) -> None:
        self._suspect = suspect  # asked at every grant: a destination's state changes
        self._total = max(1, total)
        self._per_hub = max(1, per_hub)
        self._per_destination = max(1, per_destination)
        self._hubs: dict[str, int] = {}
        self._held: dict[str, int] = {}  # destination → slots held
        self._queues: dict[str, deque[tuple[asyncio.Future[None], str]]] = {}
        self._turns: deque[str] = deque()  # destinations with waiters that may go
        self._aside: set[str] = set()  # destinations with waiters over their own limit
        self._waiting = 0
        self._drained: list[asyncio.Future[None]] = []
        self.in_flight = 0

    def _own_limit_allows(self, destination_id: str) -> bool:
        held = self._held.get(destination_id, 0)
        if not held:
            return True
        if held >= self._per_destination or self._suspect(destination_id):
            return False
        if self._waiting:
            contenders = len(self._held) + len(self._queues)
            return held < max(1, self._total // contenders)
        return True

    def _free(self, hub_id: str, destination_id: str) -> bool:
        return (self.in_flight < self._total and self._hubs.get(hub_id, 0) < self._per_hub
                and self._own_limit_allows(destination_id))

    @staticmethod
    def _count(table: dict[str, int], key: str, delta: int) -> None:
        left = table.get(key, 0) + delta
        if left:
            table[key] = left
        else:
            del table[key]

    def _take(self, hub_id: str, destination_id: str) -> None:
        self.in_flight += 1
        self._count(self._hubs, hub_id, 1)
        self._count(self._held, destination_id, 1)

    async def acquire(self, hub_id: str, destination_id: str) -> None:
        """Take a slot of each kind, waiting while any is full."""
        queue = self._queues.get(destination_id)
        if queue is None and self._free(hub_id, destination_id):
            self._take(hub_id, destination_id)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if queue is None:
            queue = self._queues[destination_id] = deque()
            self._turn(destination_id)
        entry = (fut, hub_id)
        queue.append(entry)
        self._waiting += 1
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(hub_id, destination_id)  # granted as we were cancelled
            else:
                self._waiting -= 1
                with contextlib.suppress(ValueError):  # `_wake` may have dropped it
                    queue.remove(entry)
                if not queue and self._queues.get(destination_id) is queue:
                    del self._queues[destination_id]
                    self._aside.discard(destination_id)
            raise

    def _turn(self, destination_id: str) -> None:
        """Queue `destination_id` for a turn, or set it aside while its own limit holds."""
        if self._own_limit_allows(destination_id):
            self._aside.discard(destination_id)
            self._turns.append(destination_id)
        else:
            self._aside.add(destination_id)

    def release(self, hub_id: str, destination_id: str) -> None:
        self.in_flight -= 1
        self._count(self._hubs, hub_id, -1)
        self._count(self._held, destination_id, -1)
        if destination_id in self._aside:
            self._turn(destination_id)
        self._wake()
        if not self.in_flight and self._drained:
            for fut in self._drained:
                if not fut.done():
                    fut.set_result(None)
            self._drained.clear()

    async def drained(self) -> None:
        """Return once no slot is held (no attempt in flight)."""
        while self.in_flight:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drained.append(fut)
            await fut

    def _wake(self) -> None:
        misses = 0
        turns = self._turns
        while turns and self.in_flight < self._total and misses <= len(turns):
            destination_id = turns.popleft()
            queue = self._queues.get(destination_id)
            if queue is None or destination_id in self._aside:
                continue  # stale turn
            while queue and queue[0][0].done():
                queue.popleft()  # cancelled; its own handler does the counting
            if not queue:
                del self._queues[destination_id]
                self._aside.discard(destination_id)
                continue
            fut, hub_id = queue[0]
            if not self._own_limit_allows(destination_id):
                self._aside.add(destination_id)
                continue
            if self._hubs.get(hub_id, 0) >= self._per_hub:
                turns.append(destination_id)  # its hub is full: let others go first
                misses += 1
                continue
            queue.popleft()
            self._waiting -= 1
            self._take(hub_id, destination_id)
            fut.set_result(None)
            misses = 0
            if queue:
                self._turn(destination_id)
            else:
                del self._queues[destination_id]
