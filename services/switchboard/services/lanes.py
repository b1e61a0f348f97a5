"""A deliverer's lanes and its parked lanes: the machinery that parks and drains them.

`Lane` is an in-memory lane of one `deliveries` partition; `ParkedLanes` writes lanes to
`deliveries.parked`, keeps a timer per parked lane's head, reads a due head's payload
back (`ParkedFetcher`) and delivers the lane from there (see `switchboard.parking` for
the fold that says what is parked, and the deliverer for when a lane parks).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.clock import now_ms
from switchboard.model import Delivery
from switchboard.offsets import PartitionOffsets
from switchboard.parking import (
    LaneKey,
    ParkedDelivery,
    ParkedLane,
    ParkedPartition,
    Resolved,
    parked_decoder,
    parked_encoder,
)
from switchboard.retry import Strikes
from switchboard.services.delivery_attempts import Attempter, Final, Hold
from switchboard.services.runtime import Runtime
from switchboard.supervision import supervised
from switchboard.tracing import traceparent_header, traceparent_of

__all__ = ["Lane", "ParkedFetcher", "ParkedLanes", "Partition"]

log = logging.getLogger("switchboard.services.deliverer")

FETCH_TIMEOUT_MS = 5000


class Lane:
    """An in-memory lane: records of one (destination, conversation) from `deliveries`,
    as (offset, delivery, raw `traceparent` or None).

    `spill` lanes belong to a parked lane: they only move their records to the parked
    partition, in order, so they wait behind the parked head.
    """

    __slots__ = ("key", "overflow", "queue", "spill", "task")

    def __init__(self, key: LaneKey, spill: bool) -> None:
        self.key = key
        self.queue: deque[tuple[int, Delivery, bytes | None]] = deque()
        self.spill = spill
        self.overflow = False  # spill after the record in hand (backlog moved to Kafka)
        self.task: asyncio.Task[None] | None = None


class Partition:
    """What we hold for partition p of `deliveries` and `deliveries.parked`."""

    __slots__ = ("catching_up", "drains", "lanes", "offsets", "parked", "parked_position",
                 "parked_tp", "paused", "tp")

    def __init__(self, tp: TopicPartition, parked_tp: TopicPartition) -> None:
        self.tp = tp
        self.parked_tp = parked_tp
        self.offsets = PartitionOffsets()
        self.lanes: dict[LaneKey, Lane] = {}
        self.parked = ParkedPartition()
        self.drains: set[asyncio.Task[None]] = set()  # parked lanes being delivered
        self.paused = False
        # Until the parked partition is folded up to this offset, new records of `tp`
        # could belong to a parked lane we do not know yet: `tp` stays paused.
        self.catching_up: int | None = None
        self.parked_position = 0  # next offset of the parked partition to fold


class ParkedFetcher:
    """Reads a parked record's payload back by offset when its lane's head is due.

    A consumer of its own (no group), so seeking never disturbs the group consumer. The
    last batch read is kept: the records of a draining lane usually sit close together.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._lock = asyncio.Lock()
        self._cache: dict[TopicPartition, dict[int, ConsumerRecord[bytes, bytes]]] = {}

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        async with self._lock:
            wanted = set(tps)
            self._consumer.assign(list(wanted))
            # Paused except while reading: an idle fetcher must not poll (nor buffer).
            self._consumer.pause(*wanted)
            for tp in list(self._cache):
                if tp not in wanted:
                    del self._cache[tp]

    async def get(self, tp: TopicPartition, offset: int
                  ) -> ConsumerRecord[bytes, bytes] | None:
        """The record at `offset`, or None if it is gone (past retention)."""
        async with self._lock:
            cached = self._cache.get(tp, {})
            if offset in cached:
                return cached[offset]
            if tp not in self._consumer.assignment():
                self._consumer.assign([*self._consumer.assignment(), tp])
            self._consumer.seek(tp, offset)
            self._consumer.resume(tp)
            try:
                batch = await self._consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS,
                                                     max_records=200)
            finally:
                self._consumer.pause(tp)
            records = batch.get(tp, [])
            self._cache[tp] = {r.offset: r for r in records}
            if not records:
                raise TimeoutError(f"no parked record at {tp.partition}@{offset}")
            return self._cache[tp].get(offset)

    async def stop(self) -> None:
        await self._consumer.stop()


class ParkedLanes:
    """Parked-lane writes, timers and drains for every partition a deliverer owns."""

    def __init__(self, runtime: Runtime, attempter: Attempter, topic: str,
                 owner: Callable[[int], Partition | None]) -> None:
        self._runtime = runtime
        self._attempter = attempter
        self._settings = runtime.settings
        self._parked_topic = topic
        self._owner = owner  # partition number → what we hold for it, if we own it
        self.fetcher: ParkedFetcher | None = None
        # (due ms, seq, partition, lane key): when a parked lane's head is due.
        self._timers: list[tuple[int, int, int, LaneKey]] = []
        self._timer_seq = 0
        self._timer_wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._strikes = Strikes(self._settings.internal_error_tries)

    async def start(self, fetch_consumer: AIOKafkaConsumer) -> None:
        self.fetcher = ParkedFetcher(fetch_consumer)
        self._task = supervised(self._run_timers(), name="deliverer-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.fetcher is not None:
            await self.fetcher.stop()
            self.fetcher = None

    async def send(self, part: Partition, lane: ParkedLane,
                   record: ParkedDelivery | Resolved, trace: bytes | None = None
                   ) -> asyncio.Future[object]:
        """Queue a write to the parked partition; the future says when it is durable.
        `trace`: the delivery's `traceparent`, kept in the parked record's headers."""
        if isinstance(record, ParkedDelivery):
            lane.expected.add(record.delivery.delivery_id)
        fut: asyncio.Future[object] = await self._runtime.producer.send(
            self._parked_topic, parked_encoder.encode(record),
            key=lane.key[0].encode(), partition=part.tp.partition,
            headers=traceparent_header(trace))
        return fut

    async def write(self, part: Partition, lane: ParkedLane,
                    record: ParkedDelivery | Resolved, trace: bytes | None = None) -> None:
        """Write to the parked partition and return once it is durable (retrying)."""
        await self.await_durable([await self.send(part, lane, record, trace)],
                                  retry=(part, lane, record, trace))

    async def await_durable(
        self, futures: list[asyncio.Future[object]],
        retry: tuple[Partition, ParkedLane, ParkedDelivery | Resolved, bytes | None]
        | None = None,
    ) -> None:
        """Wait for parked writes; with `retry`, write that record again until it lands."""
        delay = 0.2
        while True:
            try:
                async with asyncio.timeout(max(1.0, self._settings.produce_timeout_s * 2)):
                    for fut in futures:
                        await fut
                return
            except (KafkaError, TimeoutError) as exc:
                # Not parked until durable: keep the records (and the lane) until they are.
                log.warning("deliverer: parking write failed (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                if retry is None:
                    raise
                futures = [await self.send(*retry)]

    def schedule(self, part: Partition, lane: ParkedLane, due_at: int | None = None) -> None:
        """Wake the lane's drain when its head is due (or at `due_at`)."""
        head = lane.head
        if head is None:
            return
        due = head.due_at if due_at is None else due_at
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, part.tp.partition, lane.key))
        if self._timers[0][1] == self._timer_seq:
            self._timer_wake.set()

    async def _run_timers(self) -> None:
        while True:
            now = now_ms()
            while self._timers and self._timers[0][0] <= now:
                _due, _seq, p, key = heapq.heappop(self._timers)
                part = self._owner(p)
                lane = part.parked.lanes.get(key) if part is not None else None
                if part is None or lane is None or lane.busy:
                    continue  # stale: revoked, drained or already running
                head = lane.head
                if head is None or head.due_at > now:
                    continue  # a newer timer stands for it
                lane.busy = True
                task = asyncio.create_task(self._drain(part, lane))
                part.drains.add(task)
                task.add_done_callback(part.drains.discard)
            self._timer_wake.clear()
            wait = (self._timers[0][0] - now) / 1000 if self._timers else 3600.0
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    await self._timer_wake.wait()
            except TimeoutError:
                pass

    async def _drain(self, part: Partition, lane: ParkedLane) -> None:
        """Deliver a parked lane from its head while its records are due."""
        assert self.fetcher is not None
        record: ParkedDelivery | None = None
        try:
            while self._owner(part.tp.partition) is part:
                head = lane.head
                if head is None:
                    break
                if head.due_at > now_ms():
                    self.schedule(part, lane)
                    break
                stored = await self.fetcher.get(part.parked_tp, head.offset)
                trace = None if stored is None else traceparent_of(stored.headers)
                record = None
                with contextlib.suppress(msgspec.DecodeError):
                    decoded = parked_decoder.decode(stored.value or b"" if stored else b"")
                    record = decoded if isinstance(decoded, ParkedDelivery) else None
                if record is None:
                    log.error("deliverer: parked record %d@%d unreadable; dropped",
                              part.parked_tp.partition, head.offset)
                    part.parked.resolve(lane, head.delivery_id)
                    continue
                result = await self._attempter.deliver(
                    record.delivery, record.source, attempts=head.attempts,
                    first_failed_at=head.first_failed_at, trace=trace)
                if isinstance(result, Final):
                    await self.send(part, lane, Resolved(
                        delivery_id=head.delivery_id, destination_id=lane.key[0],
                        conversation_id=lane.key[1]))
                    part.parked.resolve(lane, head.delivery_id)
                    continue
                if isinstance(result, Hold):
                    # Nothing was spent: wait in memory; the parked record stays as it is.
                    self.schedule(part, lane, due_at=result.due_at)
                    break
                head.attempts, head.due_at = result.attempts, result.due_at
                head.first_failed_at = result.first_failed_at
                await self.write(part, lane, msgspec.structs.replace(
                    record, attempts=result.attempts, due_at=result.due_at,
                    first_failed_at=result.first_failed_at), trace)
                self.schedule(part, lane)
                break
        except asyncio.CancelledError:
            raise
        except (KafkaError, TimeoutError) as exc:
            log.warning("deliverer: draining a parked lane failed (%r); retrying in 1 s", exc)
            self.schedule(part, lane, due_at=now_ms() + 1000)
        except Exception:
            # Kafka blips pass; a head that always fails (a bug) must not hold its lane
            # forever: after `internal_error_tries` it is dead-lettered and resolved.
            head = lane.head
            key = (part.parked_tp, head.offset if head is not None else -1)
            n = self._strikes.strike(key)
            if head is not None and record is not None and self._strikes.out(key):
                log.exception("deliverer: parked delivery %s failed %d times; dead-lettered",
                              head.delivery_id, n)
                self._strikes.clear(key)
                await self._attempter.records.give_up(record.delivery, record.source)
                await self.write(part, lane, Resolved(
                    delivery_id=head.delivery_id, destination_id=lane.key[0],
                    conversation_id=lane.key[1]))
                part.parked.resolve(lane, head.delivery_id)
                self.schedule(part, lane, due_at=now_ms())
            else:
                log.exception("deliverer: draining a parked lane failed (try %d); retrying", n)
                self.schedule(part, lane, due_at=now_ms() + int(
                    1000 * max(1.0, self._strikes.backoff_s(key))))
        finally:
            lane.busy = False
            part.parked.drop_if_drained(lane)
