"""Router: reads `activities`, decides who sees each one, writes one delivery per destination.

Offsets are committed only after every delivery of a batch is durable on `deliveries`
(invariant 3). Activities are keyed by conversation, so one router instance sees a
conversation's activities in order and can deduplicate a provider's retries (see
`switchboard.services.router_partitions` for that state across rebalances).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from switchboard import clock
from switchboard.conversations import CONVERSATION_CLOSED, ConversationRecord, reopened_by
from switchboard.greetings import start_deliveries
from switchboard.kafka import (
    ACTIVITIES,
    ACTIVITIES_DEAD,
    DELIVERIES,
    consumer_lag,
    start_group_consumer,
    stop_consuming,
)
from switchboard.model import (
    Activity,
    DeadActivity,
    Delivery,
    activity_decoder,
)
from switchboard.pacing import Pacer
from switchboard.record_mac import guard_for
from switchboard.retry import Strikes
from switchboard.routing import conversation_allowed, deliveries_for
from switchboard.services.router_batches import InFlight, Seen
from switchboard.services.router_partitions import PartitionOwnership
from switchboard.services.runtime import Runtime
from switchboard.supervision import supervised

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.2
# Routed batches whose deliveries may be unacknowledged at once: their produce round
# trips overlap the routing of the next ones.
MAX_BATCHES_IN_FLIGHT = 4
# Records routed between two yields to the event loop (the ingress shares it).
YIELD_EVERY = 64
GROUP = "switchboard-router"
_encoder = msgspec.json.Encoder()


class Router:
    """The `switchboard-router` consumer group."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self._activities = s.topic(ACTIVITIES)
        self._deliveries = s.topic(DELIVERIES)
        self._dead_topic = s.topic(ACTIVITIES_DEAD)
        self._strikes = Strikes(s.internal_error_tries)
        self._seen: dict[int, Seen] = {}
        self._guard = guard_for(s)  # refuses activities the hub did not write
        self._tracing = runtime.tracing  # None: tracing off
        # Routed (deliveries durable) but not committed yet: committed on stop and revoke
        # too, so a successor does not route them again.
        self._final: dict[TopicPartition, OffsetAndMetadata] = {}
        self._table_stale = True
        # Cleared while a new assignment re-reads its recent past: aiokafka keeps
        # fetching during the assignment callback, and routing must wait for it.
        self._seeded = asyncio.Event()
        self._seeded.set()
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.ended = 0  # conversations ended for inactivity
        self._unobserve: Callable[[], None] = lambda: None
        self.running = False

    async def start(self) -> None:
        await self.runtime.start()
        self._consumer = await start_group_consumer(
            self.runtime.settings, self._activities, GROUP, lambda c: PartitionOwnership(self, c),
            max_poll_records=500,
        )
        self._pacer = Pacer(self._consumer, self.runtime.settings, [self._activities])
        consumer = self._consumer
        self._unobserve = self.runtime.metrics.observe_async(
            "switchboard_consumer_lag", "Records not yet read by a consumer group member, "
            "per partition.", ("group", "topic", "partition"),
            lambda: consumer_lag(consumer, GROUP))
        self._task = supervised(self._run(), name="router")
        self._sweeper = supervised(self._sweep(), name="router-sweep")
        self.running = True

    async def stop(self) -> None:
        self.running = False
        self._unobserve()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await stop_consuming(self._task, None)
        if self._pacer is not None:
            self._pacer.close()
        if self._consumer is not None:
            try:
                async with asyncio.timeout(5):
                    await self._commit_final(self._consumer)
            except Exception as exc:  # the successor redoes them: at-least-once
                log.warning("router: final commit failed: %r", exc)
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None and self._pacer is not None
        consumer, pacer = self._consumer, self._pacer
        # Batches routed but not yet durable on `deliveries`, oldest first. The next batch
        # is routed while earlier ones are in flight (their acks overlap its work); a
        # batch's offsets become final only when it and every batch before it are durable.
        window: collections.deque[InFlight] = collections.deque()
        next_commit = 0.0
        while True:
            try:
                while window and (len(window) >= MAX_BATCHES_IN_FLIGHT or window[0].done()):
                    await self._settle_oldest(window)
                timeout = 0 if window else 500
                batch = await pacer.getmany(timeout_ms=timeout, max_records=500)
                if not batch:
                    if window:
                        await self._settle_oldest(window)
                    elif self._final:
                        await self._commit_final(consumer)
                    continue
                await self._seeded.wait()
                if self._table_stale:
                    # New partitions: include every conversation their previous owner
                    # recorded. Afterwards this router writes its own conversations.
                    await self.runtime.conversations.sync()
                    self._table_stale = False
                window.append(await self._route_batch(batch))
                # Not per batch: a commit is a broker round trip the next batch would wait
                # for. What is final is committed within COMMIT_INTERVAL_S (and on stop and
                # revoke), and a redo before that is recognised by the seen ids.
                if self._final and time.monotonic() >= next_commit:
                    await self._commit_final(consumer)
                    next_commit = time.monotonic() + COMMIT_INTERVAL_S
            except asyncio.CancelledError:
                raise
            except (KafkaError, TimeoutError) as exc:
                log.warning("router: %r; resuming from the last committed offsets", exc)
                await self._abandon(window)
            except Exception:
                log.exception("router: unexpected error; resuming from the last commit")
                await self._abandon(window)

    async def _route_batch(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
                           ) -> InFlight:
        """Route every record of `batch`; what is returned is durable once it is done."""
        flight = InFlight()
        try:
            for tp, records in batch.items():
                seen = self._seen.setdefault(tp.partition, Seen())
                for i, rec in enumerate(records):
                    flight.pending.extend(await self._route_or_give_up(tp, rec, seen, flight))
                    if i % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)  # a big batch must not stall the ingress
                flight.offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
        except BaseException:
            flight.forget(self._seen)  # redone from the last commit
            raise
        return flight

    async def _route_or_give_up(
        self, tp: TopicPartition, rec: ConsumerRecord[bytes, bytes], seen: Seen,
        flight: InFlight,
    ) -> list[asyncio.Future[object]]:
        try:
            if self._tracing is None:
                return await self._route(tp, rec, seen, flight)
            # Continues the trace named by the record's `traceparent`; the deliveries
            # written meanwhile name this span (`_send`).
            with self._tracing.consuming(ACTIVITIES, tp.topic, tp.partition, rec.offset,
                                         rec.headers):
                return await self._route(tp, rec, seen, flight)
        except (KafkaError, TimeoutError):
            raise
        except Exception as exc:
            # A bug, not a broker blip: redo from the last commit a bounded number of
            # times, then keep the record on `activities.dead` and move on.
            strike = (tp, rec.offset)
            n = self._strikes.strike(strike)
            if not self._strikes.out(strike):
                raise
            log.exception("router: activity at %s:%d failed %d times; dead-lettered",
                          tp.topic, rec.offset, n)
            self._strikes.clear(strike)
            return [await self._dead(tp, rec, f"internal_error: {type(exc).__name__}")]

    async def _settle_oldest(self, window: collections.deque[InFlight]) -> None:
        """Wait for the oldest batch to be durable, then count it final. It leaves the
        window only then: if a send failed, `_abandon` must still see (and forget) it."""
        await window[0].wait()
        self._settle(window.popleft())

    def _settle(self, flight: InFlight) -> None:
        """`flight` is durable: its offsets are final (committed within the interval).

        Only for partitions still ours: a revoked one is redone by its new owner.
        """
        assert self._consumer is not None
        ours = self._consumer.assignment()
        for tp, om in flight.offsets.items():
            if tp in ours:
                self._final[tp] = om

    async def _abandon(self, window: collections.deque[InFlight]) -> None:
        """A send failed: forget what was routed but is not durable, and redo it from the
        last commit (at-least-once; the seen ids skip what did become durable)."""
        for flight in window:
            flight.forget(self._seen)
        window.clear()
        await asyncio.sleep(0.5)
        await self._rewind()

    async def _sweep(self) -> None:
        """End the conversations of our partitions that saw no activity for the timeout.

        The owner of a conversation's `activities` partition is the one that notes its
        activity, so it alone decides; after a rebalance the new owner takes over.
        """
        store = self.runtime.conversations
        while True:
            await asyncio.sleep(self.runtime.settings.conversation_sweep_s)
            try:
                assert self._consumer is not None
                ours = {tp.partition for tp in self._consumer.assignment()}
                for conv in store.inactive(clock.now_ms()):
                    key = conv.conversation_id.encode()
                    if await self.runtime.activities_partition(key) in ours:
                        await store.end(conv.conversation_id)
                        self.ended += 1
            except Exception as exc:  # the next sweep tries again
                log.warning("router: ending inactive conversations failed: %r", exc)

    async def _commit_final(self, consumer: AIOKafkaConsumer,
                            only: set[TopicPartition] | None = None) -> None:
        """Commit the offsets whose deliveries are durable (all, or those of `only`)."""
        offsets = {tp: om for tp, om in self._final.items() if only is None or tp in only}
        if not offsets:
            return
        with contextlib.suppress(CommitFailedError):
            # A rebalance in between: the new owner redoes from the last commit.
            await consumer.commit(offsets)
        for tp, om in offsets.items():
            if self._final.get(tp) == om:
                del self._final[tp]

    async def _rewind(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def admit(self, rec: ConsumerRecord[bytes, bytes]) -> bool:
        """Written by this hub (a valid MAC, `switchboard.record_mac`); else refused."""
        return self._guard is None or self._guard.admit_record(rec)

    async def _route(
        self, tp: TopicPartition, rec: ConsumerRecord[bytes, bytes], seen: Seen,
        flight: InFlight,
    ) -> list[asyncio.Future[object]]:
        if not self.admit(rec):
            return []  # not written by this hub (switchboard.record_mac)
        try:
            activity = activity_decoder.decode(rec.value or b"")
        except msgspec.DecodeError:
            log.error("router: undecodable activity at %s:%d dead-lettered",
                      tp.topic, rec.offset)
            return [await self._dead(tp, rec, "undecodable")]
        if activity.activity_id in seen:
            return []
        # Seen at once, so a provider retry in the next batch is skipped even while this
        # one is in flight; forgotten again if this batch never becomes durable.
        seen.add(activity.activity_id)
        flight.ids.append((tp.partition, activity.activity_id))
        if self._tracing is not None:
            self._tracing.note_activity(activity)
        view = self.runtime.registry.view
        if activity.hub_id not in view.hubs:
            # Written by an ingress whose view is ahead of ours: catch up once.
            view = await self.runtime.registry.sync()
            if activity.hub_id not in view.hubs:
                return []
        now_ms = clock.now_ms()
        futures: list[asyncio.Future[object]] = []
        conversation = self.runtime.conversations.get(activity.conversation_id)
        if not conversation_allowed(activity, conversation):
            log.warning("router: activity %s of integration %s names a conversation that is "
                        "not its own; dropped", activity.activity_id, activity.integration_id)
            return []
        if conversation is not None and reopened_by(conversation, activity.type):
            # Written after its close: a new conversation (new tickets, greeted again).
            conversation = await self._open_conversation(activity, now_ms)
            futures.extend(await self._start_messages(activity, conversation))
        elif conversation is not None:
            touched = await self.runtime.conversations.touch(conversation, now_ms)
            if touched is not None:
                futures.append(touched)
        elif activity.type == "message:customer":
            conversation = await self._open_conversation(activity, now_ms)
            futures.extend(await self._start_messages(activity, conversation))
        hub_integrations = view.integrations_of(activity.hub_id)
        for delivery in deliveries_for(activity, hub_integrations, conversation, now_ms):
            futures.append(await self._send(delivery))
        if activity.type == CONVERSATION_CLOSED and conversation is not None:
            await self._close(conversation, now_ms)
        return futures

    async def _close(self, conversation: ConversationRecord, now_ms: int) -> None:
        """Mark `conversation` closed, after everything routed before in it. Not a
        tombstone: deliveries still on their way to the customer need the record."""
        store = self.runtime.conversations
        # Other processes write to the record too (a provider thread, a cursor): start
        # from the latest, not from this process's possibly older copy.
        await store.sync()
        current = store.get(conversation.conversation_id)
        if current is None or current.closed_at or current.created_at != conversation.created_at:
            return
        await store.put(msgspec.structs.replace(current, closed_at=now_ms))

    async def _open_conversation(self, activity: Activity, now_ms: int) -> ConversationRecord:
        conv = ConversationRecord(
            conversation_id=activity.conversation_id,
            hub_id=activity.hub_id,
            customer_integration_id=activity.integration_id,
            customer_id=activity.sender.id,
            created_at=now_ms,
        )
        # Durable before any delivery, so an agent's answer always finds its way back.
        await self.runtime.conversations.put(conv)
        return conv

    async def _start_messages(
        self, activity: Activity, conversation: ConversationRecord
    ) -> list[asyncio.Future[object]]:
        """A new conversation's greetings: the `start` messages of the customer's own
        integration, then of the hub's Agent and Bot integrations (switchboard.greetings)."""
        view = self.runtime.registry.view
        return [await self._send(d) for d in start_deliveries(
            activity, conversation, view.integrations_of(activity.hub_id))]

    async def _dead(self, tp: TopicPartition, rec: ConsumerRecord[bytes, bytes],
                    reason: str) -> asyncio.Future[object]:
        """Keep an activity the router gives up on, as it was, on `activities.dead`."""
        value = _encoder.encode(DeadActivity(
            value=base64.b64encode(rec.value or b"").decode(), reason=reason,
            partition=tp.partition, offset=rec.offset, dead_at=clock.now_ms()))
        fut: asyncio.Future[object] = await self.runtime.producer.send(
            self._dead_topic, value, key=rec.key)
        return fut

    async def _send(self, delivery: Delivery) -> asyncio.Future[object]:
        # Traced: the delivery carries the routing span's `traceparent` to its attempts.
        headers = None if self._tracing is None else self._tracing.current_headers()
        fut: asyncio.Future[object] = await self.runtime.producer.send(
            self._deliveries, _encoder.encode(delivery), key=delivery.destination_id.encode(),
            headers=headers)
        return fut
