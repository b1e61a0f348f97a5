"""Deliverer: reads `deliveries`, sends each to its destination, retries, dead-letters.

Work is split into lanes keyed by (destination, conversation): a lane sends its records
one at a time, retrying its head until it is final, so one destination sees one
conversation in order (invariant 4); lanes run in parallel. In-flight sends are bounded
globally and per destination, so a slow endpoint holds at most its own share (invariant 5).
An offset is committed only when every record below it in its partition is final
(invariant 3); see `switchboard.offsets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from switchboard.errors import SwitchboardError, Unavailable
from switchboard.ids import stable_id
from switchboard.kafka import DEAD, DELIVERIES, start_group_consumer
from switchboard.keys import Sealer
from switchboard.model import (
    Activity,
    ChannelId,
    DeadLetter,
    Delivery,
    DirectEnvelope,
    Event,
    SystemEnvelope,
    delivery_decoder,
)
from switchboard.model import Sender as ActivitySender
from switchboard.offsets import PartitionOffsets
from switchboard.outbound import SKIPPED, Attempt, Sender
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome, RetryPolicy, classify_status, parse_retry_after
from switchboard.services.runtime import Runtime
from switchboard.webhooks import Signer

__all__ = ["GROUP", "Attempt", "Deliverer", "DelivererStats", "Sender", "WebhookSender"]

log = logging.getLogger(__name__)

GROUP = "switchboard-deliverer"
USER_AGENT = "Switchboard/0.1"
COMMIT_INTERVAL_S = 0.2
RESPONSE_DRAIN_BYTES = 64 * 1024
COMMIT_TIMEOUT_S = 10.0
# Parsed signers kept per set of sealed secrets; a key rotation simply makes a new entry.
SIGNER_CACHE_SIZE = 1024

# Built once: msgspec encoders are reusable and cheap to call, not to build.
_json = msgspec.json.Encoder()


class WebhookSender:
    """POSTs Standard Webhooks signed JSON to a Direct or System integration's webhookUrl."""

    def __init__(self, http: httpx.AsyncClient, sealer: Sealer, *, key_grace_s: float) -> None:
        self._http = http
        self._sealer = sealer
        self._grace_ms = int(key_grace_s * 1000)
        self._signers: dict[tuple[tuple[str, str | None], ...], Signer] = {}

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        url = destination.webhook_url
        if url is None:
            # A Direct integration without a webhook is served over its websocket by the
            # stream gateway; nothing for us to do.
            return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)
        body = envelope(delivery, destination)
        now = time.time()
        try:
            signer = self._signer(destination, int(now * 1000))
        except (SwitchboardError, ValueError) as exc:
            # Unseal or key parse failure. Log the type only: nothing about the key.
            log.error("delivery %s: signing key of %s unusable (%s)",
                      delivery.delivery_id, destination.integration_id, type(exc).__name__)
            return Attempt(outcome=Outcome.RETRY, reason="signing_key_invalid")
        if signer is None:
            return Attempt(outcome=Outcome.RETRY, reason="no_signing_key")
        timestamp = int(now)
        try:
            signature = signer.sign(delivery.delivery_id, timestamp, body)
        except ValueError:  # a delivery id no receiver could accept as webhook-id
            return Attempt(outcome=Outcome.PERMANENT, reason="invalid_delivery_id")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        try:
            async with self._http.stream("POST", url, content=body, headers=headers) as resp:
                status = resp.status_code
                retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
                # Drain a small answer so the connection is kept alive for the next
                # delivery; stop at a cap, since a hostile endpoint may send an endless
                # body (leaving the rest unread just closes that connection).
                read = 0
                async for chunk in resp.aiter_raw():
                    read += len(chunk)
                    if read > RESPONSE_DRAIN_BYTES:
                        break
        except httpx.TimeoutException:
            return Attempt(outcome=Outcome.RETRY, reason="timeout")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            return Attempt(outcome=Outcome.PERMANENT, reason="invalid_url")
        except httpx.HTTPError as exc:
            # The exception text may contain the URL, which may carry a token: log the type.
            return Attempt(outcome=Outcome.RETRY, reason=_snake(type(exc).__name__))
        outcome = classify_status(status)
        reason = "gone" if status == 410 else f"http_{status}"
        return Attempt(outcome=outcome, status=status, retry_after=retry_after, reason=reason)

    def _signer(self, destination: IntegrationRecord, now_ms: int) -> Signer | None:
        # Every valid key signs: during the rotation grace window a delivery carries the
        # old and the new signature, so receivers can switch keys at their own pace.
        keys = destination.valid_keys(now_ms, self._grace_ms)
        if not keys:
            return None
        cache_key = tuple((k.outbound_secret_sealed, k.hmac_secret_sealed) for k in keys)
        signer = self._signers.get(cache_key)
        if signer is None:
            secrets = [self._sealer.open(k.outbound_secret_sealed).decode() for k in keys]
            hmacs = [self._sealer.open(k.hmac_secret_sealed).decode() for k in keys
                     if k.hmac_secret_sealed]
            signer = Signer(ed25519=secrets, hmac=hmacs)
            if len(self._signers) >= SIGNER_CACHE_SIZE:
                self._signers.pop(next(iter(self._signers)))
            self._signers[cache_key] = signer
        return signer


def envelope(delivery: Delivery, destination: IntegrationRecord) -> bytes:
    """The JSON body a webhook destination receives."""
    if destination.channel_id is ChannelId.SYSTEM:
        return _json.encode(SystemEnvelope(
            hub_id=delivery.hub_id,
            integration_id=destination.integration_id,
            conversation_id=delivery.conversation_id,
            activities=[delivery.activity],
        ))
    return _json.encode(DirectEnvelope(
        hub_id=delivery.hub_id,
        integration_id=destination.integration_id,
        conversation_id=delivery.conversation_id,
        activity=delivery.activity,
    ))


FAILED_EVENT = "event:delivery_failed"


def failure_event(delivery: Delivery, reason: str, attempts: int, last_status: int | None,
                  now_ms: int) -> Activity:
    """The `event:delivery_failed` activity for a dead-lettered delivery (stable id)."""
    return Activity(
        activity_id=stable_id("delivery_failed", delivery.delivery_id),
        hub_id=delivery.hub_id,
        integration_id=delivery.destination_id,
        channel_id=delivery.activity.channel_id,
        type=FAILED_EVENT,
        conversation_id=delivery.conversation_id,
        sender=SwitchboardSender,
        timestamp=now_ms,
        event=Event(name="delivery_failed", ref=delivery.activity.activity_id, data={
            "deliveryId": delivery.delivery_id, "destinationId": delivery.destination_id,
            "reason": reason, "attempts": attempts, "status": last_status}),
    )


SwitchboardSender = ActivitySender(id="switchboard", name="Switchboard")


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@dataclasses.dataclass
class DelivererStats:
    """Counters since start, for logs, health and tests."""

    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0


class _Slots:
    """In-flight bounds: one global semaphore, one per destination (made on demand)."""

    def __init__(self, total: int, per_destination: int) -> None:
        self._total = asyncio.Semaphore(max(1, total))
        self._per_destination = max(1, per_destination)
        # destination → [semaphore, users]; dropped when unused so the dict stays small.
        self._by_destination: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def hold(self, destination_id: str) -> AsyncIterator[None]:
        entry = self._by_destination.get(destination_id)
        if entry is None:
            entry = (asyncio.Semaphore(self._per_destination), [0])
            self._by_destination[destination_id] = entry
        sem, users = entry
        users[0] += 1
        try:
            # Destination slot first: a lane queued behind its own slow destination must
            # not sit on a global slot that another destination could use.
            async with sem, self._total:
                self.in_flight += 1
                try:
                    yield
                finally:
                    self.in_flight -= 1
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._by_destination[destination_id]


class _Lane:
    __slots__ = ("key", "queue", "task")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.queue: deque[tuple[int, Delivery]] = deque()
        self.task: asyncio.Task[None] | None = None


class _Partition:
    """What we hold for one assigned partition; dropped wholesale on revoke."""

    __slots__ = ("lanes", "offsets", "paused", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.offsets = PartitionOffsets()
        self.lanes: dict[tuple[str, str], _Lane] = {}
        self.paused = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._deliverer._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._deliverer._on_assigned(assigned)


class Deliverer:
    """The `switchboard-deliverer` consumer group: one instance per process.

    Needs the runtime's producer and registry view; `start()` starts the runtime if needed.
    `http` is for tests and embedding; by default the deliverer owns its client.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        http: httpx.AsyncClient | None = None,
        senders: Mapping[ChannelId, Sender] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.runtime = runtime
        s = runtime.settings
        self._settings = s
        self.policy = policy or RetryPolicy(
            max_attempts=s.delivery_max_attempts, base_s=s.retry_base_s, max_s=s.retry_max_s
        )
        # Prefixed like the topics, so deployments sharing a cluster keep separate groups.
        self.group_id = s.topic_prefix + GROUP
        self._topic = s.topic(DELIVERIES)
        self._dead_topic = s.topic(DEAD)
        self._http = http
        self._own_http = http is None
        self._extra_senders = dict(senders or {})
        self._senders: dict[ChannelId, Sender] = {}
        self._slots = _Slots(s.max_in_flight, s.max_in_flight_per_destination)
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._synced_from = 0.0
        self.stats = DelivererStats()

    # ---- lifecycle -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started, and its consume loop is alive."""
        return self._task is not None and not self._task.done()

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this instance owns right now."""
        return frozenset(self._partitions)

    @property
    def paused(self) -> frozenset[TopicPartition]:
        """Partitions not fetched right now because too much of them is unfinished."""
        return frozenset(p.tp for p in self._partitions.values() if p.paused)

    @property
    def in_flight(self) -> int:
        """Sends happening right now."""
        return self._slots.in_flight

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.runtime.start()
        s = self._settings
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(s.delivery_timeout_s),
                follow_redirects=False,  # a redirect is a non-2xx like any other
                limits=httpx.Limits(max_connections=s.max_in_flight,
                                    max_keepalive_connections=min(s.max_in_flight, 64)),
            )
        webhook = WebhookSender(self._http, self.runtime.sealer, key_grace_s=s.key_grace_s)
        self._senders = {ChannelId.DIRECT: webhook, ChannelId.SYSTEM: webhook,
                         **self._extra_senders}
        self._consumer = await start_group_consumer(
            self._settings, self._topic, GROUP, lambda _: _Listener(self)
        )
        self._task = asyncio.create_task(self._run(), name="deliverer")

    async def stop(self) -> None:
        """Stop consuming, abandon unfinished sends, commit what is final, leave the group."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        parts = list(self._partitions.values())
        self._partitions.clear()
        await self._cancel_lanes(parts)
        if self._consumer is not None:
            await self._commit(parts)
            await self._consumer.stop()
            self._consumer = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- consuming -------------------------------------------------------------

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=100, max_records=1000)
                for tp, records in batch.items():
                    self._take(tp, records)
                if time.monotonic() >= next_commit:
                    await self._commit(list(self._partitions.values()))
                    next_commit = time.monotonic() + COMMIT_INTERVAL_S
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                # A broker blip: aiokafka reconnects by itself; keep polling.
                log.warning("deliverer: %r; continuing", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("deliverer: unexpected error in the consume loop; continuing")
                await asyncio.sleep(0.5)

    def _take(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        part = self._partitions.get(tp)
        if part is None:
            return  # revoked since the fetch; the new owner reads it from the last commit
        for rec in records:
            try:
                part.offsets.add(rec.offset)
            except ValueError:
                continue  # already taken
            try:
                delivery = delivery_decoder.decode(rec.value or b"")
            except msgspec.DecodeError:
                # Nothing can ever deliver it; holding it would block the partition.
                log.error("deliverer: skipping malformed record %s[%d]@%d",
                          tp.topic, tp.partition, rec.offset)
                part.offsets.done(rec.offset)
                self.stats.skipped += 1
                continue
            key = (delivery.destination_id, delivery.conversation_id)
            lane = part.lanes.get(key)
            if lane is None:
                lane = part.lanes[key] = _Lane(key)
                lane.task = asyncio.create_task(self._run_lane(part, lane))
            lane.queue.append((rec.offset, delivery))
        if not part.paused and part.offsets.pending > self._settings.max_pending_per_partition:
            self._pause(part, True)

    def _pause(self, part: _Partition, paused: bool) -> None:
        consumer = self._consumer
        if consumer is None or self._partitions.get(part.tp) is not part:
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

    async def _commit(self, parts: Iterable[_Partition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        owners: list[tuple[_Partition, int]] = []
        for part in parts:
            offset = part.offsets.committable()
            if offset is not None:
                offsets[part.tp] = offset
                owners.append((part, offset))
        if not offsets:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us. aiokafka rejoins; our revoke handler drops
            # the partitions and their new owner (maybe us) redoes them from the last commit.
            log.info("deliverer: commit failed after a rebalance; redoing from last commit")
            return
        except (KafkaError, TimeoutError) as exc:
            log.warning("deliverer: commit failed (%r); will retry", exc)
            return
        for part, offset in owners:
            part.offsets.mark_committed(offset)
        self.stats.commits += 1

    # ---- rebalancing -------------------------------------------------------------

    def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._partitions:
                self._partitions[tp] = _Partition(tp)

    async def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        parts = [p for p in (self._partitions.pop(tp, None) for tp in revoked) if p is not None]
        # Cancel first so nothing finishes after the commit (it would be redone anyway).
        await self._cancel_lanes(parts)
        await self._commit(parts)

    @staticmethod
    async def _cancel_lanes(parts: Iterable[_Partition]) -> None:
        tasks = [lane.task for part in parts for lane in part.lanes.values() if lane.task]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- delivering ----------------------------------------------------------------

    async def _run_lane(self, part: _Partition, lane: _Lane) -> None:
        try:
            while lane.queue:
                offset, delivery = lane.queue[0]
                try:
                    await self._deliver(delivery)
                except Exception:
                    # A bug, not a delivery failure: keep the head (order, invariant 3),
                    # say so loudly, and try it again rather than wedge the partition.
                    log.exception("delivery %s: unexpected error; retrying",
                                  delivery.delivery_id)
                    await asyncio.sleep(1.0)
                    continue
                lane.queue.popleft()
                part.offsets.done(offset)
                if part.paused and (part.offsets.pending
                                    <= self._settings.max_pending_per_partition // 2):
                    self._pause(part, False)
        finally:
            if part.lanes.get(lane.key) is lane:
                del part.lanes[lane.key]

    async def _deliver(self, delivery: Delivery) -> None:
        """Deliver one record until it is final: sent, dead-lettered or nothing to do."""
        attempts = 0
        while True:
            destination = await self._destination(delivery.destination_id)
            if destination is None:
                await self._dead_letter(delivery, "destination_deleted", attempts, None)
                return
            sender = self._senders.get(destination.channel_id)
            if sender is None:
                await self._dead_letter(delivery, "unsupported_channel", attempts, None)
                return
            attempts += 1
            attempt = await self._attempt(sender, delivery, destination)
            if attempt.outcome is Outcome.DELIVERED:
                if attempt.reason == SKIPPED:
                    self.stats.skipped += 1
                else:
                    self.stats.delivered += 1
                return
            if attempt.outcome is Outcome.PERMANENT:
                await self._dead_letter(delivery, attempt.reason or "permanent_failure",
                                        attempts, attempt.status)
                return
            if not self.policy.should_retry(attempts, attempt.outcome):
                await self._dead_letter(delivery, "retries_exhausted", attempts, attempt.status,
                                        last_error=attempt.reason)
                return
            delay = self.policy.delay(attempts, attempt.retry_after)
            log.info("delivery %s to %s: attempt %d failed (%s); retrying in %.2fs",
                     delivery.delivery_id, delivery.destination_id, attempts, attempt.reason,
                     delay)
            self.stats.retries += 1
            # Sleeping here holds only this lane: later records of this destination and
            # conversation wait behind it (order), everything else proceeds.
            await asyncio.sleep(delay)

    async def _attempt(self, sender: Sender, delivery: Delivery,
                       destination: IntegrationRecord) -> Attempt:
        async with self._slots.hold(destination.integration_id):
            try:
                # One deadline for the whole attempt, so a slow-drip endpoint cannot
                # stretch it with per-read timeouts.
                async with asyncio.timeout(self._settings.delivery_timeout_s):
                    return await sender.send(delivery, destination)
            except TimeoutError:
                return Attempt(outcome=Outcome.RETRY, reason="timeout")
            except Exception:
                log.exception("delivery %s to %s: sender failed",
                              delivery.delivery_id, destination.integration_id)
                return Attempt(outcome=Outcome.RETRY, reason="internal_error")

    async def _destination(self, destination_id: str) -> IntegrationRecord | None:
        """The destination as the registry says now (so URL edits and key rotations apply).

        On a miss, sync with the registry topic once before calling it deleted: the router
        may have routed to an integration our view has not applied yet.
        """
        registry = self.runtime.registry
        delay = 0.2
        while True:
            rec = registry.view.integrations.get(destination_id)
            if rec is not None:
                return rec
            missed_at = time.monotonic()
            try:
                async with self._sync_lock:
                    # A sync that started after our miss already answers for us.
                    if self._synced_from < missed_at:
                        started = time.monotonic()
                        await registry.sync()
                        self._synced_from = started
            except Unavailable as exc:
                log.warning("deliverer: registry unavailable (%s); retrying", exc.description)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            return registry.view.integrations.get(destination_id)

    async def _announce_failure(self, delivery: Delivery, reason: str, attempts: int,
                                last_status: int | None) -> None:
        """Tell System integrations (filter ``event:delivery_failed``) what was not delivered."""
        event = failure_event(delivery, reason, attempts, last_status, int(time.time() * 1000))
        delay = 0.2
        while True:
            try:
                await self.runtime.publish(event)
                return
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dead_letter(self, delivery: Delivery, reason: str, attempts: int,
                           last_status: int | None, *, last_error: str = "") -> None:
        """Write to `deliveries.dead` (acks=all) and return only once it is durable."""
        value = _json.encode(DeadLetter(
            delivery=delivery, reason=reason, attempts=attempts, last_status=last_status,
            dead_at=int(time.time() * 1000),
        ))
        key = delivery.destination_id.encode()
        producer = self.runtime.producer
        timeout = max(1.0, self._settings.produce_timeout_s * 2)
        delay = 0.2
        while True:
            try:
                async with asyncio.timeout(timeout):
                    await producer.send_and_wait(self._dead_topic, value, key=key)
                break
            except (KafkaError, TimeoutError) as exc:
                # Not final until durable: keep the record (and its lane) until it is.
                log.warning("delivery %s: dead-letter write failed (%r); retrying",
                            delivery.delivery_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.stats.dead_lettered += 1
        if delivery.activity.type != FAILED_EVENT:  # never an event about an event
            await self._announce_failure(delivery, reason, attempts, last_status)
        log.warning("delivery %s to %s dead-lettered: %s after %d attempts (last: %s)",
                    delivery.delivery_id, delivery.destination_id, reason, attempts,
                    last_error or last_status)
