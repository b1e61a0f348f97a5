"""One delivery's attempts, whatever lane it waits in: slots, circuits, the attempt log,
dead letters and auto-disable.

`Attempter.deliver` runs a delivery until it is final or must wait long: it returns
`Final`, `Park` (retry due later than `retry_inline_max_s`: the caller parks the lane) or
`Hold` (nothing was spent: the destination's circuit is open or it is paused).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

import msgspec
from msgspec import Struct

from switchboard.errors import Unavailable
from switchboard.ids import stable_id
from switchboard.kafka import ATTEMPTS, DEAD
from switchboard.model import (
    Activity,
    AttemptRecord,
    ChannelId,
    DeadLetter,
    Delivery,
    DeliveryRef,
    DeliveryStatus,
    Event,
    StatusId,
)
from switchboard.model import Sender as ActivitySender
from switchboard.outbound import SKIPPED, Attempt, Sender
from switchboard.parking import ParkedDelivery
from switchboard.ratelimit import RateLimiter
from switchboard.registry import IntegrationRecord
from switchboard.retry import Circuit, Outcome, RetryPolicy
from switchboard.services.runtime import Runtime

log = logging.getLogger("switchboard.services.deliverer")

FAILED_EVENT = "event:delivery_failed"
DISABLED_EVENT = "event:integration_disabled"
# Dead-letter reason of a record that kept failing inside the hub (a bug).
INTERNAL_ERROR = "internal_error"
# A paused (or disabled) destination's deliveries are held; this often we look again.
HOLD_RECHECK_MS = 2000
RESPONSE_LOG_BYTES = 1024
PROVEN_MAX = 100_000

_json = msgspec.json.Encoder()
SwitchboardSender = ActivitySender(id="switchboard", name="Switchboard")


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


class Slots:
    """In-flight bounds: global, per hub and per destination.

    A destination that is failing, or has not answered 2xx yet, gets one slot (a slow
    start), so endpoints that hang cost one slot each, not `per_destination`, before
    their circuit opens. And while others wait, no destination holds more than its fair
    share of the total (divided among the destinations holding or waiting for slots), so
    a crowd of slow destinations cannot take every slot from a healthy one.

    Waiters queue per destination; destinations that could take a slot now take turns
    (round robin), those held back by their own limit wait aside until one of their own
    slots comes back. Taking a free slot costs no await; a release wakes in O(1) on
    average, whatever the number of waiting lanes.
    """

    def __init__(self, total: int, per_hub: int, per_destination: int,
                 suspect: Callable[[str], bool] = lambda destination_id: False) -> None:
        self._suspect = suspect  # asked at every grant: a destination's state changes
        self._total = max(1, total)
        self._per_hub = max(1, per_hub)
        self._per_destination = max(1, per_destination)
        self._hubs: dict[str, int] = {}
        self._held: dict[str, int] = {}  # destination → slots held
        self._queues: dict[str, deque[tuple[asyncio.Future[None], str]]] = {}
        self._turns: deque[str] = deque()  # destinations with waiters that may go
        self._aside: set[str] = set()  # destinations with waiters over their own limit
        self._waiting = 0
        self.in_flight = 0

    def _own_limit_allows(self, destination_id: str) -> bool:
        held = self._held.get(destination_id, 0)
        if not held:
            return True
        if held >= self._per_destination or self._suspect(destination_id):
            return False
        if self._waiting:
            contenders = len(self._held) + len(self._queues)
            return held < max(1, self._total // contenders)
        return True

    def _free(self, hub_id: str, destination_id: str) -> bool:
        return (self.in_flight < self._total and self._hubs.get(hub_id, 0) < self._per_hub
                and self._own_limit_allows(destination_id))

    @staticmethod
    def _count(table: dict[str, int], key: str, delta: int) -> None:
        left = table.get(key, 0) + delta
        if left:
            table[key] = left
        else:
            del table[key]

    def _take(self, hub_id: str, destination_id: str) -> None:
        self.in_flight += 1
        self._count(self._hubs, hub_id, 1)
        self._count(self._held, destination_id, 1)

    async def acquire(self, hub_id: str, destination_id: str) -> None:
        """Take a slot of each kind, waiting while any is full."""
        queue = self._queues.get(destination_id)
        if queue is None and self._free(hub_id, destination_id):
            self._take(hub_id, destination_id)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if queue is None:
            queue = self._queues[destination_id] = deque()
            self._turn(destination_id)
        entry = (fut, hub_id)
        queue.append(entry)
        self._waiting += 1
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(hub_id, destination_id)  # granted as we were cancelled
            else:
                self._waiting -= 1
                with contextlib.suppress(ValueError):  # `_wake` may have dropped it
                    queue.remove(entry)
                if not queue and self._queues.get(destination_id) is queue:
                    del self._queues[destination_id]
                    self._aside.discard(destination_id)
            raise

    def _turn(self, destination_id: str) -> None:
        """Queue `destination_id` for a turn, or set it aside while its own limit holds."""
        if self._own_limit_allows(destination_id):
            self._aside.discard(destination_id)
            self._turns.append(destination_id)
        else:
            self._aside.add(destination_id)

    def release(self, hub_id: str, destination_id: str) -> None:
        self.in_flight -= 1
        self._count(self._hubs, hub_id, -1)
        self._count(self._held, destination_id, -1)
        if destination_id in self._aside:
            self._turn(destination_id)
        self._wake()

    def _wake(self) -> None:
        misses = 0
        turns = self._turns
        while turns and self.in_flight < self._total and misses <= len(turns):
            destination_id = turns.popleft()
            queue = self._queues.get(destination_id)
            if queue is None or destination_id in self._aside:
                continue  # stale turn
            while queue and queue[0][0].done():
                queue.popleft()  # cancelled; its own handler does the counting
            if not queue:
                del self._queues[destination_id]
                self._aside.discard(destination_id)
                continue
            fut, hub_id = queue[0]
            if not self._own_limit_allows(destination_id):
                self._aside.add(destination_id)
                continue
            if self._hubs.get(hub_id, 0) >= self._per_hub:
                turns.append(destination_id)  # its hub is full: let others go first
                misses += 1
                continue
            queue.popleft()
            self._waiting -= 1
            self._take(hub_id, destination_id)
            fut.set_result(None)
            misses = 0
            if queue:
                self._turn(destination_id)
            else:
                del self._queues[destination_id]


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
        self._attempts_topic = s.topic(ATTEMPTS)
        self._dead_topic = s.topic(DEAD)
        self._log_futures: list[asyncio.Future[object]] = []
        self._sync_lock = asyncio.Lock()
        self._synced_from = 0.0

    # ---- the delivery loop -------------------------------------------------------

    async def deliver(self, delivery: Delivery, source: DeliveryRef, *, attempts: int,
                      first_failed_at: int | None = None) -> Result:
        """Attempt `delivery` (after `attempts` earlier attempts) until it is final or has
        to wait longer than the in-memory stage allows."""
        inline_ms = self._settings.retry_inline_max_s * 1000
        policy = self._policy(delivery.hub_id)
        while True:
            _raise_if_cancelled()
            destination = await self._destination(delivery.destination_id)
            if destination is None:
                await self.dead_letter(delivery, source, "destination_deleted", attempts)
                return Final("failed")
            sender = self.senders.get(destination.channel_id)
            if sender is None:
                await self.dead_letter(delivery, source, "unsupported_channel", attempts)
                return Final("failed")
            if not destination.active:
                self.stats.held += 1
                return Hold(attempts, _now_ms() + HOLD_RECHECK_MS, first_failed_at)
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
                return Hold(attempts, _now_ms() + wait_ms, _ms(circuit.failing_since))
            probe = circuit.is_open  # admitted while open: this attempt is the probe
            attempts += 1
            started = time.monotonic()
            try:
                attempt = await self._attempt(sender, delivery, destination)
            except BaseException:
                if probe:
                    circuit.abandon()  # cancelled: let another delivery probe
                raise
            latency_ms = int((time.monotonic() - started) * 1000)
            circuit.record(attempt.outcome is not Outcome.RETRY, time.monotonic(), time.time())
            if attempt.outcome is Outcome.RETRY:
                self._proven.pop(destination.integration_id, None)
            if attempt.outcome is Outcome.DELIVERED:
                await self.log(delivery, source, "delivered", attempts, attempt, latency_ms)
                if attempt.reason == SKIPPED:
                    self.stats.skipped += 1
                else:
                    self.stats.delivered += 1
                self._forget_circuit(destination.integration_id)
                self._prove(destination.integration_id)
                return Final("delivered")
            if attempt.outcome is Outcome.PERMANENT:
                await self.log(delivery, source, "failed", attempts, attempt, latency_ms)
                await self.dead_letter(delivery, source, attempt.reason or "permanent_failure",
                                       attempts, attempt.status, logged=True)
                return Final("failed")
            if not policy.should_retry(attempts, attempt.outcome):
                await self.log(delivery, source, "failed", attempts, attempt, latency_ms)
                await self.dead_letter(delivery, source, "retries_exhausted", attempts,
                                       attempt.status, last_error=attempt.reason, logged=True)
                return Final("failed")
            delay_ms = int(policy.delay(attempts, attempt.retry_after) * 1000)
            due = _now_ms() + delay_ms
            await self.log(delivery, source, "pending", attempts, attempt, latency_ms, next_at=due)
            self.stats.retries += 1
            failing_since = _ms(circuit.failing_since)
            if failing_since is not None and (
                    _now_ms() - failing_since > self._settings.disable_after_s * 1000):
                await self._disable(destination, delivery)
                return Hold(attempts, _now_ms() + HOLD_RECHECK_MS)
            if delay_ms > inline_ms:
                self.stats.parked += 1
                log.info("delivery %s to %s: attempt %d failed (%s); parked for %.0fs",
                         delivery.delivery_id, delivery.destination_id, attempts,
                         attempt.reason, delay_ms / 1000)
                return Park(attempts, due, failing_since)
            # A short wait holds only this lane: later records of this destination and
            # conversation wait behind it (order), everything else proceeds.
            await asyncio.sleep(delay_ms / 1000)

    async def _attempt(self, sender: Sender, delivery: Delivery,
                       destination: IntegrationRecord) -> Attempt:
        hub_id, destination_id = delivery.hub_id, destination.integration_id
        await self.slots.acquire(hub_id, destination_id)
        try:
            # One deadline for the whole attempt, so a slow-drip endpoint cannot
            # stretch it with per-read timeouts.
            async with asyncio.timeout(self._settings.delivery_timeout_s):
                attempt = await sender.send(delivery, destination)
        except TimeoutError:
            attempt = Attempt(outcome=Outcome.RETRY, reason="timeout")
        except Exception:
            log.exception("delivery %s to %s: sender failed",
                          delivery.delivery_id, destination_id)
            attempt = Attempt(outcome=Outcome.RETRY, reason="internal_error")
        finally:
            self.slots.release(hub_id, destination_id)
        _raise_if_cancelled()
        return attempt

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
            now = _now_ms()
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
        await self._announce(Activity(
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
            at=_now_ms(), code=attempt.status if attempt is not None else None,
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
            dead_at=_now_ms(),
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
        if delivery.activity.type != FAILED_EVENT:  # never an event about an event
            await self._announce(failure_event(delivery, reason, attempts, last_status,
                                               _now_ms()))
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

    async def _announce(self, event: Activity) -> None:
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


def _raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop (revoke, shutdown).

    A timeout or a client library may turn a cancel into an ordinary failure; the lane
    must still stop rather than go on retrying after its partition was taken away.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)
