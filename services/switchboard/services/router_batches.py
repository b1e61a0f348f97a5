"""What the router keeps per batch and per partition: the batches whose deliveries are
still in flight, and the activity ids it routed recently (a provider retry is routed once).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from aiokafka.structs import OffsetAndMetadata, TopicPartition

SEEN_PER_PARTITION = 50_000


class Seen:
    """Recently routed activity ids of one partition (a provider retry is routed once)."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, activity_id: str) -> bool:
        return activity_id in self._ids

    def add(self, activity_id: str) -> None:
        self._ids[activity_id] = None
        if len(self._ids) > SEEN_PER_PARTITION:
            self._ids.popitem(last=False)

    def discard(self, activity_id: str) -> None:
        self._ids.pop(activity_id, None)


class InFlight:
    """One routed batch: the sends that make it durable, its next offsets, its new ids."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[object]] = []
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self.ids: list[tuple[int, str]] = []

    def done(self) -> bool:
        return all(fut.done() for fut in self.pending)

    async def wait(self) -> InFlight:
        """Return once every send is durable; raise the first send's failure."""
        if self.pending:
            await asyncio.gather(*self.pending)
        return self

    def forget(self, seen: dict[int, Seen]) -> None:
        """Never durable: its ids may be routed again, its failures are not news."""
        for partition, activity_id in self.ids:
            if partition in seen:
                seen[partition].discard(activity_id)
        for fut in self.pending:
            if fut.done():
                fut.exception()
            else:
                fut.cancel()
