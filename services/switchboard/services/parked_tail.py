"""The deliverer's read of `deliveries.parked` (`ParkedTail`): each parked partition's
records folded into its parked lanes as the group consumer reads them, and the catch-up
after an assignment.

Partition p of both topics belongs to the same deliverer (range assignment). A new owner
of p cannot tell whether a new record of `deliveries` p belongs behind a parked lane
until it has folded parked p up to its end, so it holds `deliveries` p paused until then
(see `switchboard.parking` for the fold itself, `lanes` for draining what it finds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.parking import LaneKey, ParkedDelivery, ParkedLane, parked_decoder
from switchboard.services.delivery_attempts import Attempter
from switchboard.services.lanes import ParkedLanes, Partition

__all__ = ["ParkedTail"]

# Logged as the deliverer, like its other parts: one logger to follow a deliverer by.
log = logging.getLogger("switchboard.services.deliverer")

# Pauses between attempts to read a new partition's parked offsets (a broker blip, often
# the rebalance itself, should not hold the partition until the next rebalance).
OFFSETS_RETRY_S = (0.2, 0.5, 1.0, 2.0)


class ParkedTail:
    """Folds parked records for one deliverer and says when a partition caught up.

    `consumer` gives the group consumer (None while there is none), `admit` whether a
    record was written by this hub (`switchboard.record_mac`), `pause` pauses or resumes
    a partition's fetch (`Backpressure.pause`).
    """

    def __init__(self, consumer: Callable[[], AIOKafkaConsumer | None],
                 attempter: Attempter, parked: ParkedLanes,
                 admit: Callable[[ConsumerRecord[bytes, bytes]], bool],
                 pause: Callable[[Partition, bool], None]) -> None:
        self._consumer = consumer
        self._attempter = attempter
        self._parked = parked
        self._admit = admit
        self._pause = pause

    async def hold(self, consumer: AIOKafkaConsumer, new: Sequence[Partition]) -> None:
        """Hold new work of each newly assigned partition until its parked lanes are known."""
        tps = [p.parked_tp for p in new]
        ends: dict[TopicPartition, int] | None = None
        committed: dict[TopicPartition, int | None] = {}
        for delay in (*OFFSETS_RETRY_S, None):
            try:
                ends = await consumer.end_offsets(tps)
                committed = {tp: await consumer.committed(tp) for tp in tps}
                break
            except KafkaError as exc:
                if delay is None:
                    # Held until a fetch of the parked partition says where its end is
                    # (its high watermark, see check_caught_up).
                    log.warning("deliverer: cannot read parked offsets (%r); holding "
                                "partitions", exc)
                    ends = None
                    break
                await asyncio.sleep(delay)
        for part in new:
            start = committed.get(part.parked_tp) or 0
            part.parked_position = start
            end = start if ends is None else int(ends.get(part.parked_tp, 0))
            if ends is None or end > start:
                part.catching_up = end
                consumer.pause(part.tp)
                part.paused = True

    def fold(self, part: Partition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Fold parked records of `part` into its parked lanes; wake the lanes they touch."""
        touched: dict[LaneKey, ParkedLane] = {}
        for rec in records:
            try:
                record = parked_decoder.decode(rec.value or b"") if self._admit(rec) else None
            except msgspec.DecodeError:
                log.error("deliverer: skipping malformed parked record %d@%d",
                          part.parked_tp.partition, rec.offset)
                record = None
            try:
                lane = part.parked.apply(rec.offset, record)
            except ValueError:
                continue  # already folded
            if lane is not None:
                touched[lane.key] = lane
                if isinstance(record, ParkedDelivery):
                    self._attempter.note_parked(record)
        for lane in touched.values():
            if not lane.busy:
                self._parked.schedule(part, lane)
            part.parked.drop_if_drained(lane)
        if records:
            part.parked_position = records[-1].offset + 1
        self.check_caught_up(part)

    def check_caught_up(self, part: Partition) -> None:
        """Resume new work of a partition once its parked lanes are all known."""
        if part.catching_up is None:
            return
        consumer = self._consumer()
        if consumer is None:
            return
        # Tansu lists a partition's end as its last batch's base offset + 1, so the high
        # watermark of a fetch is the better word on where the end is.
        highwater = consumer.highwater(part.parked_tp)
        if highwater is None or part.parked_position < max(part.catching_up, highwater):
            return
        part.catching_up = None
        self._pause(part, False)
