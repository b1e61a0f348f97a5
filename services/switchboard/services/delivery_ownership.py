"""What the deliverer does when its partitions change owner (`PartitionOwnership`): on
assignment, take up partition p of `deliveries` and `deliveries.parked` and hold new work
until the parked lanes are known; on revoke, end the partition's lanes and commit what
is final. `cancel_lanes` ends lanes on stop too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from switchboard.services.delivery_commits import DeliveryCommits
from switchboard.services.lanes import ParkedLanes, Partition
from switchboard.services.parked_tail import ParkedTail

__all__ = ["PartitionOwnership", "cancel_lanes"]


class PartitionOwnership(ConsumerRebalanceListener):  # type: ignore[misc]
    """One deliverer's rebalance listener. `partitions` is the deliverer's own table
    (partition number → what it holds), shared, not copied: this is what fills and
    empties it. `consumer` gives the group consumer, or None while there is none."""

    def __init__(self, partitions: dict[int, Partition], topic: str, parked_topic: str,
                 consumer: Callable[[], AIOKafkaConsumer | None], parked: ParkedLanes,
                 tail: ParkedTail, commits: DeliveryCommits) -> None:
        self._partitions = partitions
        self._topic = topic
        self._parked_topic = parked_topic
        self._consumer = consumer
        self._parked = parked
        self._tail = tail
        self._commits = commits

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Read before any await: the consumer of this assignment, as the deliverer had it.
        consumer = self._consumer()
        new: list[Partition] = []
        for tp in assigned:
            if tp.topic != self._topic or tp.partition in self._partitions:
                continue
            part = Partition(tp, TopicPartition(self._parked_topic, tp.partition))
            self._partitions[tp.partition] = part
            new.append(part)
        if self._parked.fetcher is not None:
            await self._parked.fetcher.assign(p.parked_tp for p in self._partitions.values())
        if not new or consumer is None:
            return
        await self._tail.hold(consumer, new)

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        parts = [p for p in (self._partitions.pop(tp.partition, None) for tp in revoked
                             if tp.topic == self._topic) if p is not None]
        # Cancel first so nothing finishes after the commit (it would be redone anyway).
        await cancel_lanes(parts)
        await self._commits.commit(parts)


async def cancel_lanes(parts: Iterable[Partition]) -> None:
    """Cancel the in-memory lanes and parked-lane drains of `parts`, and wait for them."""
    tasks = [lane.task for part in parts for lane in part.lanes.values() if lane.task]
    tasks += [task for part in parts for task in part.drains]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
