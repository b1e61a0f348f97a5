"""Deliverer: reads `deliveries`, sends each to its destination, retries, dead-letters.

Work is split into lanes keyed by (destination, conversation): a lane sends its records
one at a time, retrying its head until it is final, so one destination sees one
conversation in order (invariant 4); lanes run in parallel. In-flight sends are bounded
globally, per hub and per destination, so a slow endpoint holds at most its own share
(invariants 5 and 8).

Retries: a retry due soon (`retry_inline_max_s`) waits in its lane. A later one parks
the lane on `deliveries.parked` (see `switchboard.parking`): the head and every later
record of the lane are written there, the main partition's commit point moves on, and
the lane holds no task, slot or payload until its head is due. Partition p of both topics
belongs to the same deliverer (range assignment), which folds parked partition p back
into its parked lanes on every assignment before it takes new work from partition p.

An offset is committed only when every record below it in its partition is final:
delivered, parked (durably), or dead-lettered (invariant 3); see `switchboard.offsets`.

This module holds the `Deliverer`: its lifecycle, the consume loop and the in-memory
lanes (the per-delivery path). Its parts: `delivery_attempts` (attempts, retries,
circuits), `lanes` (parking and draining lanes), `parked_tail` (folding the parked topic,
catching up after an assignment), `delivery_backpressure` (overflow and pausing),
`delivery_commits` (offset commits), `delivery_ownership` (rebalances).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.kafka import (
    DELIVERIES,
    PARKED,
    consumer_lag,
    make_consumer,
    start_group_consumer,
)
from switchboard.model import ChannelId, DeliveryRef, delivery_decoder
from switchboard.outbound import Attempt, Sender
from switchboard.pacing import Pacer
from switchboard.parking import ParkedDelivery
from switchboard.record_mac import guard_for
from switchboard.retry import RetryPolicy, Strikes
from switchboard.services.delivery_attempts import (
    FAILED_EVENT,
    Attempter,
    Hold,
    Park,
    failure_event,
)
from switchboard.services.delivery_backpressure import Backpressure
from switchboard.services.delivery_commits import DeliveryCommits
from switchboard.services.delivery_ownership import PartitionOwnership, cancel_lanes
from switchboard.services.http_client import HttpClient
from switchboard.services.lanes import Lane, ParkedLanes, Partition
from switchboard.services.parked_tail import ParkedTail
from switchboard.services.runtime import Runtime
from switchboard.services.webhook_sender import USER_AGENT, WebhookSender, envelope
from switchboard.supervision import supervised
from switchboard.tracing import traceparent_of

__all__ = ["FAILED_EVENT", "GROUP", "Attempt", "Deliverer", "Sender", "WebhookSender",
           "envelope", "failure_event"]

log = logging.getLogger(__name__)

GROUP = "switchboard-deliverer"


class Deliverer:
    """The `switchboard-deliverer` consumer group: one instance per process.

    Needs the runtime's producer and registry view; `start()` starts the runtime if needed.
    `senders` add or replace a channel's sender (providers register theirs).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        senders: Mapping[ChannelId, Sender] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.runtime = runtime
        s = runtime.settings
        self._settings = s
        self.policy = policy or RetryPolicy.parse(s.retry_schedule, s.retry_jitter)
        # Prefixed like the topics, so deployments sharing a cluster keep separate groups.
        self.group_id = s.topic_prefix + GROUP
        self._topic = s.topic(DELIVERIES)
        self._parked_topic = s.topic(PARKED)
        self._extra_senders = dict(senders or {})
        self._guard = guard_for(s)  # refuses records without a valid MAC
        self._tracing = runtime.tracing  # None: tracing off
        self._http: HttpClient | None = None
        self._partitions: dict[int, Partition] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        self._unobserve: list[Callable[[], None]] = []
        self._strikes = Strikes(s.internal_error_tries)
        self.attempter = Attempter(runtime, self.policy)
        self._parked = ParkedLanes(runtime, self.attempter, self._parked_topic,
                                   self._partitions.get)
        self.stats = self.attempter.stats

        # The parts below share `_partitions` and read the consumer at call time: it
        # exists only between start and stop, and a rebalance may come before start returns.
        def consumer() -> AIOKafkaConsumer | None:
            return self._consumer

        self._backpressure = Backpressure(self._partitions, consumer, self.stats)
        self._tail = ParkedTail(consumer, self.attempter, self._parked, self._admit,
                                self._backpressure.pause)
        self._commits = DeliveryCommits(consumer, self._partitions.values,
                                        self.attempter.records, self.stats)
        self._ownership = PartitionOwnership(self._partitions, self._topic,
                                             self._parked_topic, consumer, self._parked,
                                             self._tail, self._commits)

    # ---- lifecycle -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started, and its consume loop is alive."""
        return self._task is not None and not self._task.done()

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The `deliveries` partitions this instance owns right now."""
        return frozenset(p.tp for p in self._partitions.values())

    @property
    def paused(self) -> frozenset[TopicPartition]:
        """Partitions not fetched right now because too much of them is unfinished."""
        return frozenset(p.tp for p in self._partitions.values() if p.paused)

    @property
    def in_flight(self) -> int:
        """Sends happening right now."""
        return self.attempter.slots.in_flight

    @property
    def parked(self) -> int:
        """Deliveries waiting on the parked topic in the partitions we own."""
        return sum(p.parked.parked for p in self._partitions.values())

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.runtime.start()
        s = self._settings
        # No client-side timeout: the attempter bounds every attempt as a whole.
        # Traced, webhooks carry `traceparent`: a receiver with tracing joins the trace.
        self._http = HttpClient(timeout_s=None, limit=s.max_in_flight,
                                allow_private=s.allow_private_destinations,
                                user_agent=USER_AGENT, tracing=self._tracing, propagate=True)
        await self._http.start()
        webhook = WebhookSender(self._http, self.runtime.sealer, key_grace_s=s.key_grace_s)
        self.attempter.senders = {ChannelId.DIRECT: webhook, ChannelId.SYSTEM: webhook,
                                  **self._extra_senders}
        fetch_consumer = make_consumer(s, group_id=None, fetch_max_wait_ms=50)
        await fetch_consumer.start()
        await self._parked.start(fetch_consumer)
        self._consumer = await start_group_consumer(
            s, [self._topic, self._parked_topic], GROUP, lambda _: self._ownership,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self._pacer = Pacer(self._consumer, s, [self._topic, self._parked_topic],
                            hold=self._backpressure.held)
        self._task = supervised(self._run(), name="deliverer")
        self._commits.start()
        self._unobserve = self._observe()

    def _observe(self) -> list[Callable[[], None]]:
        """Gauges read at scrape time: what this deliverer holds, and its consumer lag."""
        metrics, consumer = self.runtime.metrics, self._consumer
        assert consumer is not None
        return [
            metrics.observe("switchboard_parked_deliveries", "Deliveries waiting on "
                            "deliveries.parked in the partitions this deliverer owns.", (),
                            lambda: [((), float(self.parked))]),
            metrics.observe("switchboard_deliveries_in_flight", "Delivery attempts in "
                            "flight in this process.", (), lambda: [((), float(self.in_flight))]),
            metrics.observe("switchboard_open_circuits", "Destinations whose circuit is "
                            "open (deliveries held until a probe succeeds).", (),
                            lambda: [((), float(sum(c.is_open for c in
                                                    self.attempter.circuits.values())))]),
            metrics.observe_async("switchboard_consumer_lag", "Records not yet read by a "
                                  "consumer group member, per partition.",
                                  ("group", "topic", "partition"),
                                  lambda: consumer_lag(consumer, GROUP)),
        ]

    async def stop(self) -> None:
        """Stop taking records, let attempts in flight finish (within
        `shutdown_timeout_s`), abandon the rest (redone by the next owner), commit what is
        final, leave the group."""
        for stop_observing in self._unobserve:
            stop_observing()
        self._unobserve = []
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.attempter.stopping = True  # no new attempt starts
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.shutdown_timeout_s):
                await self.attempter.slots.drained()
        await self._commits.stop()
        self._task = None
        if self._pacer is not None:
            self._pacer.close()
        parts = list(self._partitions.values())
        self._partitions.clear()
        await cancel_lanes(parts)
        if self._consumer is not None:
            await self._commits.commit(parts)
            await self._consumer.stop()
            self._consumer = None
        await self._parked.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---- consuming -------------------------------------------------------------

    async def _run(self) -> None:
        assert self._pacer is not None
        pacer, tail = self._pacer, self._tail
        while True:
            try:
                batch = await pacer.getmany(timeout_ms=100, max_records=1000)
                for tp, records in batch.items():
                    part = self._partitions.get(tp.partition)
                    if part is None:
                        continue  # revoked since the fetch; its new owner redoes it
                    if tp.topic == self._parked_topic:
                        tail.fold(part, records)
                    else:
                        self._take(part, records)
                for part in self._partitions.values():
                    tail.check_caught_up(part)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                # A broker blip: aiokafka reconnects by itself; keep polling.
                log.warning("deliverer: %r; continuing", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("deliverer: unexpected error in the consume loop; continuing")
                await asyncio.sleep(0.5)

    def _take(self, part: Partition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            try:
                part.offsets.add(rec.offset)
            except ValueError:
                continue  # already taken
            if not self._admit(rec):
                # Not written by this hub (record_mac): never sent; skipped, not wedged.
                part.offsets.done(rec.offset)
                self.stats.skipped += 1
                continue
            try:
                delivery = delivery_decoder.decode(rec.value or b"")
            except msgspec.DecodeError:
                # Nothing can ever deliver it; holding it would block the partition.
                log.error("deliverer: skipping malformed record %s[%d]@%d",
                          part.tp.topic, part.tp.partition, rec.offset)
                part.offsets.done(rec.offset)
                self.stats.skipped += 1
                continue
            key = (delivery.destination_id, delivery.conversation_id)
            lane = part.lanes.get(key)
            if lane is None:
                lane = part.lanes[key] = Lane(key, spill=key in part.parked.lanes)
                lane.task = asyncio.create_task(self._run_lane(part, lane))
            # The record's trace context (traced only): its attempts continue that trace.
            trace = None if self._tracing is None else traceparent_of(rec.headers)
            lane.queue.append((rec.offset, delivery, trace))
        if part.offsets.pending > self._settings.max_pending_per_partition:
            self._backpressure.overflow(part)

    def _admit(self, rec: ConsumerRecord[bytes, bytes]) -> bool:
        """Written by this hub (a valid MAC, `switchboard.record_mac`); else refused."""
        return self._guard is None or self._guard.admit_record(rec)

    # ---- in-memory lanes -----------------------------------------------------------

    async def _run_lane(self, part: Partition, lane: Lane) -> None:
        try:
            while lane.queue:
                if lane.spill:
                    await self._spill(part, lane)
                    continue
                offset, delivery, trace = lane.queue[0]
                source = DeliveryRef(partition=part.tp.partition, offset=offset)
                try:
                    result = await self.attempter.deliver(delivery, source, attempts=0,
                                                          trace=trace)
                except Exception:
                    # A bug, not a delivery failure: keep the head (order, invariant 3) and
                    # try again, a bounded number of times, then dead-letter it and move on.
                    strike = (part.tp, offset)
                    n = self._strikes.strike(strike)
                    if not self._strikes.out(strike):
                        log.exception("delivery %s: unexpected error (try %d); retrying",
                                      delivery.delivery_id, n)
                        await asyncio.sleep(self._strikes.backoff_s(strike))
                        continue
                    log.exception("delivery %s: unexpected error %d times; dead-lettered",
                                  delivery.delivery_id, n)
                    self._strikes.clear(strike)
                    await self.attempter.records.give_up(delivery, source)
                    lane.queue.popleft()
                    self._finish(part, offset)
                    continue
                if isinstance(result, Park | Hold):
                    # Park the head, then let the rest of the lane follow it.
                    parked = part.parked.lane(lane.key)
                    await self._parked.write(part, parked, ParkedDelivery(
                        delivery=delivery, attempts=result.attempts, due_at=result.due_at,
                        source=source, first_failed_at=result.first_failed_at), trace)
                    lane.spill = True
                elif lane.overflow:
                    lane.spill = True
                lane.queue.popleft()
                self._finish(part, offset)
        finally:
            if part.lanes.get(lane.key) is lane:
                del part.lanes[lane.key]

    async def _spill(self, part: Partition, lane: Lane) -> None:
        """Move every queued record of a parked lane to the parked partition, in order."""
        parked = part.parked.lane(lane.key)
        batch = list(lane.queue)
        futures = []
        for offset, delivery, trace in batch:
            futures.append(await self._parked.send(part, parked, ParkedDelivery(
                delivery=delivery, attempts=0, due_at=0,
                source=DeliveryRef(partition=part.tp.partition, offset=offset)), trace))
            await self.attempter.records.log_status(delivery, "pending", error="parked_behind_lane",
                                      source=DeliveryRef(partition=part.tp.partition,
                                                         offset=offset))
        await self._parked.await_durable(futures)
        for offset, *_ in batch:
            lane.queue.popleft()
            self._finish(part, offset)

    def _finish(self, part: Partition, offset: int) -> None:
        part.offsets.done(offset)
        # Inline, not in Backpressure: this runs for every delivery.
        if part.paused and part.catching_up is None and (
                part.offsets.pending <= self._settings.max_pending_per_partition // 2):
            self._backpressure.pause(part, False)
