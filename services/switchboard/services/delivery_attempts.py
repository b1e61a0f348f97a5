"""One delivery's attempts, whatever lane it waits in: slots, circuits, the attempt log,
dead letters and auto-disable.

`Attempter.deliver` runs a delivery until it is final or must wait long: it returns
`Final`, `Park` (retry due later than `retry_inline_max_s`: the caller parks the lane) or
`Hold` (nothing was spent: the destination's circuit is open or it is paused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping

import msgspec
from msgspec import Struct

from switchboard.clock import now_ms
from switchboard.errors import Unavailable
from switchboard.ids import stable_id
from switchboard.logfmt import LOG_CONTEXT
from switchboard.model import (
    Activity,
    ChannelId,
    Delivery,
    DeliveryRef,
    DeliveryStatus,
    Event,
    StatusId,
)
from switchboard.outbound import SKIPPED, Attempt, Sender
from switchboard.parking import ParkedDelivery
from switchboard.ratelimit import RateLimiter
from switchboard.registry import IntegrationRecord
from switchboard.retry import Circuit, Outcome, RetryPolicy
from switchboard.services.delivery_records import (
    FAILED_EVENT,
    INTERNAL_ERROR,
    DelivererStats,
    DeliveryRecords,
    SwitchboardSender,
    failure_event,
)
from switchboard.services.delivery_slots import Slots
from switchboard.services.runtime import Runtime

__all__ = ["FAILED_EVENT", "INTERNAL_ERROR", "Attempter", "DelivererStats", "Final", "Hold",
           "Park", "Result", "Slots", "failure_event"]

log = logging.getLogger("switchboard.services.deliverer")

DISABLED_EVENT = "event:integration_disabled"
# A paused (or disabled) destination's deliveries are held; this often we look again.
HOLD_RECHECK_MS = 2000
PROVEN_MAX = 100_000


class Final(Struct, frozen=True):
    """Delivered or dead-lettered: nothing more to do."""

    status: DeliveryStatus


class Park(Struct, frozen=True):
    """Failed; the next attempt is due at `due_at` (ms), too far off to wait in memory."""

    attempts: int
    due_at: int
    first_failed_at: int | None = None


class Hold(Struct, frozen=True):
    """Not attempted (circuit open, destination paused); look again at `due_at` (ms)."""

    attempts: int
    due_at: int
    first_failed_at: int | None = None


Result = Final | Park | Hold


class Attempter:
    """Makes attempts for every lane of one deliverer process."""

    def __init__(self, runtime: Runtime, policy: RetryPolicy) -> None:
        self.runtime = runtime
        s = runtime.settings
        self._settings = s
        self.policy = policy
        self.senders: Mapping[ChannelId, Sender] = {}
        self.slots = Slots(s.max_in_flight, s.max_in_flight_per_hub,
                           s.max_in_flight_per_destination, suspect=self._suspect)
        self.circuits: dict[str, Circuit] = {}
        # Destinations that answered 2xx lately. Others get one slot (a slow start): an
        # endpoint that hangs from the first request holds one slot, not eight.
        self._proven: OrderedDict[str, None] = OrderedDict()
        self._rates = RateLimiter(1.0, 1, max_keys=100_000)
        self._hub_policies: dict[str, RetryPolicy] = {}
        self.stats = DelivererStats()
        self.records = DeliveryRecords(runtime, self.stats)
        # Set when the deliverer stops: lanes end before their next attempt (the record
        # stays uncommitted, for the partition's next owner).
        self.stopping = False
        self._sync_lock = asyncio.Lock()
        self._synced_from = 0.0

    # ---- the delivery loop -------------------------------------------------------

    async def deliver(self, delivery: Delivery, source: DeliveryRef, *, attempts: int,
                      first_failed_at: int | None = None, trace: bytes | None = None
                      ) -> Result:
        """Attempt `delivery` (after `attempts` earlier attempts) until it is final or has
        to wait longer than the in-memory stage allows. `trace`: the delivery record's
        raw `traceparent`, which each attempt's span continues (tracing on)."""
        LOG_CONTEXT.set({"hubId": delivery.hub_id, "integrationId": delivery.destination_id,
                         "activityId": delivery.activity.activity_id,
                         "deliveryId": delivery.delivery_id})
        inline_ms = self._settings.retry_inline_max_s * 1000
        policy = self._policy(delivery.hub_id)
        while True:
            _raise_if_cancelled()
            if self.stopping:
                raise asyncio.CancelledError()
            destination = await self._destination(delivery.destination_id)
            if destination is None:
                await self.records.dead_letter(delivery, source, "destination_deleted", attempts)
                return Final("failed")
            sender = self.senders.get(destination.channel_id)
            if sender is None:
                await self.records.dead_letter(delivery, source, "unsupported_channel", attempts)
                return Final("failed")
            if not destination.active:
                self.stats.held += 1
                return Hold(attempts, now_ms() + HOLD_RECHECK_MS, first_failed_at)
            rate = getattr(destination.configuration, "max_deliveries_per_second", None)
            if rate is not None:
                wait = self._rates.take(destination.integration_id, time.monotonic(), rate)
                if wait is not None:
                    # The destination's own cap: wait in the lane, holding no slot.
                    await asyncio.sleep(wait)
                    continue
            circuit = self._circuit(destination.integration_id)
            if not circuit.admit(time.monotonic()):
                self.stats.held += 1
                wait_ms = int(circuit.wait(time.monotonic()) * 1000) + 1
                return Hold(attempts, now_ms() + wait_ms, _ms(circuit.failing_since))
            probe = circuit.is_open  # admitted while open: this attempt is the probe
            attempts += 1
            started = time.monotonic()
            try:
                attempt = await self._attempt(sender, delivery, destination, attempts, trace)
            except BaseException:
                if probe:
                    circuit.abandon()  # cancelled: let another delivery probe
                raise
            elapsed = time.monotonic() - started
            latency_ms = int(elapsed * 1000)
            metrics = self.runtime.metrics
            metrics.attempt_seconds.labels(attempt.outcome.value).observe(elapsed)
            circuit.record(attempt.outcome is not Outcome.RETRY, time.monotonic(), time.time())
            if attempt.outcome is Outcome.RETRY:
                self._proven.pop(destination.integration_id, None)
            if attempt.outcome is Outcome.DELIVERED:
                await self.records.log(delivery, source, "delivered", attempts, attempt, latency_ms)
                if attempt.reason == SKIPPED:
                    self.stats.skipped += 1
                else:
                    self.stats.delivered += 1
                self._forget_circuit(destination.integration_id)
                self._prove(destination.integration_id)
                metrics.deliveries.labels(metrics.hub(delivery.hub_id), "delivered").inc()
                return Final("delivered")
            if attempt.outcome is Outcome.PERMANENT:
                await self.records.log(delivery, source, "failed", attempts, attempt, latency_ms)
                await self.records.dead_letter(
                    delivery, source, attempt.reason or "permanent_failure", attempts,
                    attempt.status, logged=True)
                return Final("failed")
            if not policy.should_retry(attempts, attempt.outcome):
                await self.records.log(delivery, source, "failed", attempts, attempt, latency_ms)
                await self.records.dead_letter(
                    delivery, source, "retries_exhausted", attempts, attempt.status,
                    last_error=attempt.reason, logged=True)
                return Final("failed")
            delay_ms = int(policy.delay(attempts, attempt.retry_after) * 1000)
            due = now_ms() + delay_ms
            await self.records.log(delivery, source, "pending", attempts, attempt, latency_ms,
                                   next_at=due)
            self.stats.retries += 1
            failing_since = _ms(circuit.failing_since)
            if failing_since is not None and (
                    now_ms() - failing_since > self._settings.disable_after_s * 1000):
                await self._disable(destination, delivery)
                return Hold(attempts, now_ms() + HOLD_RECHECK_MS)
            if delay_ms > inline_ms:
                self.stats.parked += 1
                log.info("delivery %s to %s: attempt %d failed (%s); parked for %.0fs",
                         delivery.delivery_id, delivery.destination_id, attempts,
                         attempt.reason, delay_ms / 1000)
                metrics.deliveries.labels(metrics.hub(delivery.hub_id), "parked").inc()
                return Park(attempts, due, failing_since)
            # A short wait holds only this lane: later records of this destination and
            # conversation wait behind it (order), everything else proceeds.
            await asyncio.sleep(delay_ms / 1000)

    async def _attempt(self, sender: Sender, delivery: Delivery,
                       destination: IntegrationRecord, number: int = 1,
                       trace: bytes | None = None) -> Attempt:
        hub_id, destination_id = delivery.hub_id, destination.integration_id
        await self.slots.acquire(hub_id, destination_id)
        tracing = self.runtime.tracing
        try:
            if tracing is None:
                attempt = await self._send(sender, delivery, destination)
            else:
                # The span holds the whole attempt, its timeout included.
                attempt = await tracing.attempt(
                    trace, delivery, destination, number,
                    lambda: self._send(sender, delivery, destination))
        finally:
            self.slots.release(hub_id, destination_id)
        _raise_if_cancelled()
        return attempt

    async def _send(self, sender: Sender, delivery: Delivery,
                    destination: IntegrationRecord) -> Attempt:
        """One call of `sender`, its failures turned into a retry."""
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

    def _policy(self, hub_id: str) -> RetryPolicy:
        """The hub's own retry schedule if it has one, else the deployment's."""
        hub = self.runtime.registry.view.hubs.get(hub_id)
        text = hub.retry_schedule if hub is not None else None
        if text is None:
            return self.policy
        policy = self._hub_policies.get(text)
        if policy is None:
            try:
                policy = RetryPolicy.parse_tenant(text, self.policy.jitter)
            except ValueError:  # checked by the API; a bad record must not stop delivery
                policy = self.policy
            if len(self._hub_policies) >= 1024:
                self._hub_policies.clear()
            self._hub_policies[text] = policy
        return policy

    # ---- circuits ------------------------------------------------------------------

    def _circuit(self, destination_id: str) -> Circuit:
        circuit = self.circuits.get(destination_id)
        if circuit is None:
            s = self._settings
            circuit = self.circuits[destination_id] = Circuit(
                threshold=s.circuit_failures, cooldown_s=s.circuit_cooldown_s,
                max_cooldown_s=max(s.circuit_cooldown_s, self.policy.longest))
        return circuit

    def _suspect(self, destination_id: str) -> bool:
        """Failing, or not known to answer 2xx: one request at a time."""
        circuit = self.circuits.get(destination_id)
        return destination_id not in self._proven or (circuit is not None
                                                      and circuit.failures > 0)

    def _prove(self, destination_id: str) -> None:
        proven = self._proven
        if destination_id in proven:
            proven.move_to_end(destination_id)
            return
        proven[destination_id] = None
        if len(proven) > PROVEN_MAX:
            proven.popitem(last=False)

    def _forget_circuit(self, destination_id: str) -> None:
        circuit = self.circuits.get(destination_id)
        if circuit is not None and not circuit.is_open and not circuit.failures:
            del self.circuits[destination_id]

    def note_parked(self, record: ParkedDelivery) -> None:
        """A parked record was read (maybe after a restart): its destination has been
        failing at least since the record says, which the 5-day disable clock needs."""
        if record.first_failed_at is None:
            return
        circuit = self._circuit(record.delivery.destination_id)
        since = record.first_failed_at / 1000
        if circuit.failing_since is None or since < circuit.failing_since:
            circuit.failing_since = since

    async def _disable(self, destination: IntegrationRecord, delivery: Delivery) -> None:
        """Failing too long: pause the integration and tell the hub's System integrations.

        Its deliveries are held (not dropped) and flow again once it is re-enabled.
        """
        self.circuits.pop(destination.integration_id, None)  # a new clock after re-enable
        registry = self.runtime.registry
        for _ in range(3):
            current = registry.view.integrations.get(destination.integration_id)
            if current is None or not current.active:
                return
            now = now_ms()
            try:
                outcome = await registry.put(msgspec.structs.replace(
                    current, status_id=int(StatusId.PAUSED), version=current.version + 1,
                    updated_at=now))
            except Unavailable:
                return  # the next failure tries again
            if outcome.accepted:
                break
        else:
            return
        self.stats.disabled += 1
        log.warning("integration %s disabled after failing for %.0f days",
                    destination.integration_id, self._settings.disable_after_s / 86400)
        await self.records.announce(Activity(
            activity_id=stable_id("integration_disabled", destination.integration_id,
                                  str(now)),
            hub_id=destination.hub_id, integration_id=destination.integration_id,
            channel_id=delivery.activity.channel_id, type=DISABLED_EVENT,
            conversation_id=delivery.conversation_id, sender=SwitchboardSender,
            timestamp=now,
            event=Event(name="integration_disabled", data={
                "integrationId": destination.integration_id, "reason": "failing",
                "statusId": int(StatusId.PAUSED)}),
        ))

    # ---- the registry ----------------------------------------------------------------

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


def _raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop (revoke, shutdown).

    A timeout or a client library may turn a cancel into an ordinary failure; the lane
    must still stop rather than go on retrying after its partition was taken away.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)
