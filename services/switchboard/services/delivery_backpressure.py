"""The deliverer's backpressure (`Backpressure`): what it does when too much of a
`deliveries` partition waits in memory, and pausing or resuming the fetch of a partition.

First the backlog of the destination holding the most of it moves to the parked partition
(due at once), so one slow destination does not stop the partition for the others; only
when no backlog can move is the partition paused. The deliverer resumes it once half of
the limit is left (checked as each record finishes, inline there: a per-delivery path).
The catch-up after an assignment (`parked_tail`) pauses and resumes through here too, and
a partition it holds is not resumed for backpressure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.services.delivery_records import DelivererStats
from switchboard.services.lanes import Lane, Partition

__all__ = ["Backpressure"]

# Logged as the deliverer, like its other parts: one logger to follow a deliverer by.
log = logging.getLogger("switchboard.services.deliverer")


class Backpressure:
    """Pauses what one deliverer owns. `partitions` is the deliverer's own table
    (partition number → what it holds), shared, not copied; `consumer` gives the group
    consumer, or None while there is none."""

    def __init__(self, partitions: dict[int, Partition],
                 consumer: Callable[[], AIOKafkaConsumer | None],
                 stats: DelivererStats) -> None:
        self._partitions = partitions
        self._consumer = consumer
        self._stats = stats

    def overflow(self, part: Partition) -> None:
        """Too much of this partition is waiting in memory: move the backlog of the
        destination with the most of it to the parked partition (due at once), so one
        slow destination does not stop the partition for the others. Only if no backlog
        can move is the partition paused."""
        backlog: dict[str, list[Lane]] = {}
        for lane in part.lanes.values():
            if not lane.spill and not lane.overflow and len(lane.queue) > 1:
                backlog.setdefault(lane.key[0], []).append(lane)
        if backlog:
            lanes = max(backlog.values(), key=lambda ls: sum(len(x.queue) for x in ls))
            for lane in lanes:
                # After the record in hand, the rest of the lane follows it on Kafka.
                lane.overflow = True
            self._stats.overflowed += sum(len(x.queue) - 1 for x in lanes)
        elif not part.paused:
            self.pause(part, True)

    def held(self, tp: TopicPartition) -> bool:
        """Whether we keep `tp` paused ourselves (backpressure, catching up)."""
        part = self._partitions.get(tp.partition)
        return part is not None and tp == part.tp and part.paused

    def pause(self, part: Partition, paused: bool) -> None:
        consumer = self._consumer()
        if consumer is None or self._partitions.get(part.tp.partition) is not part:
            return
        if not paused and part.catching_up is not None:
            return
        try:
            if paused:
                consumer.pause(part.tp)
            else:
                consumer.resume(part.tp)
        except KafkaError as exc:  # not assigned any more: the rebalance cleans up
            log.debug("deliverer: cannot (un)pause %s: %r", part.tp, exc)
            return
        part.paused = paused
