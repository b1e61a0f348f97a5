"""`GET /api/v1/hubs/{hubId}/stats`: a hub's own counters for the last hour, per minute
(the console's charts; no Prometheus needed).

Attempts and dead letters come from the delivery log this process already folds
(`DeliveryLogReader` hands each record here too); activities in come from the
`activities` topic, read by one consumer of this process from an hour back and then
followed, keeping only counters (`switchboard.hub_stats`): memory is bounded by hubs times
minutes, never by traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.clock import now_ms
from switchboard.hub_stats import WINDOW_MS, HubStats
from switchboard.kafka import ACTIVITIES, make_consumer, run_with_broker_retry, stop_consuming
from switchboard.model import AttemptRecord
from switchboard.pacing import Pacer
from switchboard.services.http import JSON
from switchboard.services.runtime import Runtime
from switchboard.supervision import supervised

if TYPE_CHECKING:
    from switchboard.services.api import Api

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 60.0


class _ActivityHead(Struct, rename="camel"):
    """The two fields of an activity the counters need (msgspec skips the rest unread)."""

    hub_id: str
    timestamp: int


_head_decoder = msgspec.json.Decoder(_ActivityHead)


class StatsApi:
    """The counters of one API process, their activities reader, and the route."""

    def __init__(self, runtime: Runtime, api: Api) -> None:
        self.runtime = runtime
        self.api = api
        self.stats = HubStats()
        self._topic = runtime.settings.topic(ACTIVITIES)
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        self._pruned = 0.0

    def routes(self) -> list[Route]:
        return [Route("/api/v1/hubs/{hubId}/stats", self.get_stats, methods=["GET"])]

    def observe_attempt(self, rec: AttemptRecord) -> None:
        """One record of the delivery log (called by its reader for every record)."""
        self.stats.record_attempt(rec, now_ms())

    async def start(self) -> None:
        await run_with_broker_retry("hub stats", self._connect)
        self._task = supervised(self._run(), name="hub-stats")

    async def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.close()
        await stop_consuming(self._task, self._consumer)

    async def _connect(self) -> None:
        parts = await self.runtime.producer.partitions_for(self._topic)
        consumer = make_consumer(self.runtime.settings, group_id=None, max_poll_records=2000)
        try:
            await consumer.start()
            tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            # Only the last hour counts: start there, not at the beginning of the topic.
            found = await consumer.offsets_for_times({tp: now_ms() - WINDOW_MS for tp in tps})
            for tp in tps:
                at = found.get(tp)
                if at is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, at.offset)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._pacer = Pacer(consumer, self.runtime.settings, [self._topic])

    async def _run(self) -> None:
        assert self._pacer is not None
        guard = self.runtime.records
        while True:
            try:
                batch = await self._pacer.getmany(timeout_ms=1000)
            except KafkaError as exc:  # broker blip: keep following
                log.warning("hub stats: %s", exc)
                await asyncio.sleep(0.5)
                continue
            now = now_ms()
            for records in batch.values():
                for rec in records:
                    if guard is not None and not guard.admit_record(rec):
                        continue
                    try:
                        head = _head_decoder.decode(rec.value or b"")
                    except msgspec.DecodeError:
                        continue  # the router dead-letters it; nothing to count
                    self.stats.record_activity(head.hub_id, head.timestamp, now)
            if time.monotonic() - self._pruned > PRUNE_EVERY_S:
                self._pruned = time.monotonic()
                self.stats.prune(now)

    async def get_stats(self, request: Request) -> Response:
        principal, view = await self.api._session(request)
        hub = self.api.hubs._visible(principal, view, request)
        return JSON(self.stats.window(hub.hub_id, now_ms()))
