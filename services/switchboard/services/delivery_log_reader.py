"""Keeps a `DeliveryLog` current from every partition of `deliveries.attempts`.

Each API process reads the whole topic itself (no consumer group), so any of them can
answer for any delivery; `sync()` gives read-your-writes like `TableReader.sync`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.delivery_log import DeliveryLog
from switchboard.kafka import ATTEMPTS, make_consumer, run_with_broker_retry, stop_consuming
from switchboard.model import AttemptRecord, attempt_decoder
from switchboard.pacing import Pacer
from switchboard.settings import Settings
from switchboard.supervision import supervised

log = logging.getLogger(__name__)


class DeliveryLogReader:
    def __init__(self, settings: Settings, delivery_log: DeliveryLog,
                 partitions_for: Callable[[str], Awaitable[set[int]]],
                 observe: Callable[[AttemptRecord], None] | None = None) -> None:
        self._settings = settings
        self._observe = observe  # also sees every record (the hub's per-minute counters)
        self._partitions_for = partitions_for
        self._topic = settings.topic(ATTEMPTS)
        self.log = delivery_log
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        self._tps: list[TopicPartition] = []
        self._position: dict[TopicPartition, int] = {}  # next offset to apply
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        """Assign every partition from the beginning. Does not wait for the catch-up: a big
        topic must not hold the API's start; queries wait in `sync()` instead."""
        await run_with_broker_retry("delivery log", self._connect)
        self._task = supervised(self._run(), name="delivery-log")

    async def _connect(self) -> None:
        # A consumer without subscriptions knows no topic's partitions; a producer asks.
        parts = await self._partitions_for(self._topic)
        consumer = make_consumer(self._settings, group_id=None, max_poll_records=2000)
        try:
            await consumer.start()
            tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            # Records below the log start are gone: count them as applied.
            starts = await consumer.beginning_offsets(tps)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer, self._tps = consumer, tps
        self._pacer = Pacer(consumer, self._settings, [self._topic])
        self._position = {tp: int(starts[tp]) for tp in tps}

    async def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.close()
        await stop_consuming(self._task, self._consumer)

    async def _run(self) -> None:
        assert self._pacer is not None
        while True:
            try:
                batch = await self._pacer.getmany(timeout_ms=500)
            except KafkaError as exc:  # broker blip: keep following
                log.warning("delivery log: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if not batch:
                continue
            for tp, records in batch.items():
                for rec in records:
                    try:
                        attempt = attempt_decoder.decode(rec.value or b"")
                        self.log.apply(attempt)
                        if self._observe is not None:
                            self._observe(attempt)
                    except msgspec.DecodeError:  # one bad record must not stop the fold
                        log.error("delivery log: undecodable record at %s:%d",
                                  tp.partition, rec.offset)
                self._position[tp] = records[-1].offset + 1
            async with self._changed:
                self._changed.notify_all()

    async def sync(self, timeout: float = 10.0) -> None:
        """Wait until every record written before this call has been applied."""
        assert self._consumer is not None and self._pacer is not None, "start() first"
        self._pacer.wake()
        async with asyncio.timeout(timeout):
            listed = await self._consumer.end_offsets(self._tps)
            # The embedded Tansu lists a partition's end as its last batch's base offset + 1;
            # the high watermark of the latest fetch is never past the true end either.
            ends = {tp: max(int(listed[tp]), self._consumer.highwater(tp) or 0)
                    for tp in self._tps}
            async with self._changed:
                await self._changed.wait_for(
                    lambda: all(self._position[tp] >= ends[tp] for tp in self._tps))
