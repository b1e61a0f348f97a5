"""What the deliverer writes about deliveries: the attempt log (`deliveries.attempts`),
dead letters (`deliveries.dead`) and the events that announce them, with its counters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import msgspec

from switchboard.clock import now_ms
from switchboard.errors import Unavailable
from switchboard.ids import stable_id
from switchboard.kafka import ATTEMPTS, DEAD
from switchboard.model import (
    Activity,
    AttemptRecord,
    DeadLetter,
    Delivery,
    DeliveryRef,
    DeliveryStatus,
    Event,
)
from switchboard.model import Sender as ActivitySender
from switchboard.outbound import Attempt
from switchboard.services.runtime import Runtime

log = logging.getLogger("switchboard.services.deliverer")

FAILED_EVENT = "event:delivery_failed"
# Dead-letter reason of a record that kept failing inside the hub (a bug).
INTERNAL_ERROR = "internal_error"
RESPONSE_LOG_BYTES = 1024

_json = msgspec.json.Encoder()
SwitchboardSender = ActivitySender(id="switchboard", name="Switchboard")


@dataclasses.dataclass
class DelivererStats:
    """Counters since start, for logs, health and tests."""

    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    retries: int = 0
    parked: int = 0
    held: int = 0
    commits: int = 0
    disabled: int = 0
    overflowed: int = 0  # records moved to deliveries.parked because memory was full


class DeliveryRecords:
    """Writes the attempt log, dead letters and their events for one deliverer."""

    def __init__(self, runtime: Runtime, stats: DelivererStats) -> None:
        self.runtime = runtime
        self.stats = stats
        self._settings = runtime.settings
        self._attempts_topic = runtime.settings.topic(ATTEMPTS)
        self._dead_topic = runtime.settings.topic(DEAD)
        self._log_futures: list[asyncio.Future[object]] = []

    # ---- the attempt log -----------------------------------------------------------------

    async def log(self, delivery: Delivery, source: DeliveryRef, status: DeliveryStatus,
            attempt_no: int, attempt: Attempt | None = None, latency_ms: int | None = None,
            *, next_at: int | None = None, error: str | None = None) -> None:
        """Record an attempt (or a status change) on `deliveries.attempts`; written before
        the offsets it concerns are committed (see `flush_log`)."""
        response = None
        if attempt is not None and attempt.response:
            response = attempt.response[:RESPONSE_LOG_BYTES].decode("utf-8", "replace")
        record = AttemptRecord(
            delivery_id=delivery.delivery_id, activity_id=delivery.activity.activity_id,
            hub_id=delivery.hub_id, destination_id=delivery.destination_id,
            conversation_id=delivery.conversation_id, status=status, attempt=attempt_no,
            at=now_ms(), code=attempt.status if attempt is not None else None,
            error=error or (attempt.reason if attempt is not None and attempt.reason
                            and status != "delivered" else None),
            latency_ms=latency_ms, response=response, next_at=next_at, source=source)
        try:
            # Batched by the producer; `flush_log` waits for the acks before a commit.
            self._log_futures.append(await self.runtime.producer.send(
                self._attempts_topic, _json.encode(record),
                key=delivery.destination_id.encode()))
        except Exception as exc:  # KafkaError: the log is best effort, delivery goes on
            log.warning("deliverer: attempt record not written (%r)", exc)

    async def log_status(self, delivery: Delivery, status: DeliveryStatus, *, error: str,
                         source: DeliveryRef) -> None:
        """A status change without a request (e.g. parked behind its lane's head)."""
        await self.log(delivery, source, status, 0, error=error)

    async def flush_log(self) -> None:
        """Wait until every attempt record so far is durable (bounded)."""
        futures, self._log_futures = self._log_futures, []
        if not futures:
            return
        try:
            async with asyncio.timeout(self._settings.produce_timeout_s):
                await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            log.warning("deliverer: attempt log writes are slow; continuing")

    # ---- dead letters and events -------------------------------------------------------

    async def dead_letter(self, delivery: Delivery, source: DeliveryRef, reason: str,
                          attempts: int, last_status: int | None = None, *,
                          last_error: str = "", logged: bool = False) -> None:
        """Write to `deliveries.dead` (acks=all) and return only once it is durable."""
        if not logged:
            await self.log(delivery, source, "failed", attempts, error=reason)
        value = _json.encode(DeadLetter(
            delivery=delivery, reason=reason, attempts=attempts, last_status=last_status,
            dead_at=now_ms(),
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
            except Exception as exc:  # KafkaError, TimeoutError
                # Not final until durable: keep the record (and its lane) until it is.
                log.warning("delivery %s: dead-letter write failed (%r); retrying",
                            delivery.delivery_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.stats.dead_lettered += 1
        metrics = self.runtime.metrics
        metrics.dead_letters.labels(reason).inc()
        metrics.deliveries.labels(metrics.hub(delivery.hub_id), "failed").inc()
        if delivery.activity.type != FAILED_EVENT:  # never an event about an event
            await self.announce(failure_event(delivery, reason, attempts, last_status,
                                               now_ms()))
        log.warning("delivery %s to %s dead-lettered: %s after %d attempts (last: %s)",
                    delivery.delivery_id, delivery.destination_id, reason, attempts,
                    last_error or last_status)

    async def give_up(self, delivery: Delivery, source: DeliveryRef) -> None:
        """Dead-letter a delivery that keeps failing inside the hub (reason
        `internal_error`). Best effort: a failure here is logged, and the stage moves on
        anyway, since retrying is what failed."""
        try:
            await self.dead_letter(delivery, source, INTERNAL_ERROR, attempts=0)
        except Exception:
            log.exception("delivery %s: could not dead-letter it; dropped",
                          delivery.delivery_id)

    async def announce(self, event: Activity) -> None:
        """Publish an event activity for the hub's System integrations (retrying)."""
        delay = 0.2
        while True:
            try:
                await self.runtime.publish(event)
                return
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def failure_event(delivery: Delivery, reason: str, attempts: int, last_status: int | None,
                  now_ms: int) -> Activity:
    """The `event:delivery_failed` activity for a dead-lettered delivery (stable id).

    It says why in a short code only: nothing an endpoint answered, no address, so the
    event cannot be used to scan a network.
    """
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
