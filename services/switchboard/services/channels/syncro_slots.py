"""Syncro's request budget across every process: the I/O shell of
`switchboard.providers.syncro_budget`.

Before each request to an account the process writes a claim to `syncro.slots` (key: the
account, ``acks=all``) and reads the topic back with a plain consumer (manual assignment,
no group) until it meets its own claim; the fold says whether it was granted. All
processes read the same partitions in the same order, so they agree without talking to
each other. A 429 is written as a block record, which every process honours.

Costs: one claim, one broker round trip per Syncro request; nothing on any other channel's
path. The reader starts with the first Syncro request of the process (from one lookback
ago, so it sees the claims of processes that ran before it) and stops once no request
has been made for `IDLE_STOP_S`: a hub without Syncro integrations never reads the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections import Counter
from itertools import count

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.errors import BadRequest, Unavailable
from switchboard.kafka import SYNCRO_SLOTS, make_consumer
from switchboard.pacing import Pacer
from switchboard.providers.syncro_budget import (
    Block,
    Claim,
    Ledgers,
    Rule,
    Verdict,
    decode,
    encode,
    usable,
)
from switchboard.record_mac import guard_for
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

# Claims one process has in flight per account: enough to keep Syncro's 3 a second (or a
# compressed test budget) busy across a broker round trip, few enough that a full window
# does not make every waiting request claim in vain at once.
CLAIMS_IN_FLIGHT = 8
# The longest a claim may take to be written and read back before the request fails.
VERDICT_TIMEOUT_S = 10.0
# The reader stops this long after the process's last Syncro request.
IDLE_STOP_S = 120.0


_PER_RUNTIME: weakref.WeakKeyDictionary[Runtime, SyncroSlots] = weakref.WeakKeyDictionary()


def _unavailable() -> Unavailable:
    return Unavailable("provider_unavailable",
                       "Syncro's request budget could not be reached; retry", retry_after=5)


class SyncroSlots:
    """One per process (`for_runtime`): `acquire(account)` returns when a request may go."""

    def __init__(self, runtime: Runtime, rule: Rule | None = None,
                 idle_stop_s: float = IDLE_STOP_S) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.rule = rule or Rule.for_budget(s.syncro_rate_limit, s.syncro_rate_window_s)
        self._topic = s.topic(SYNCRO_SLOTS)
        self._idle_stop_s = idle_stop_s
        self._guard = guard_for(s)
        self._me = secrets.token_hex(8)
        self._seq = count()
        self._waiting: dict[int, asyncio.Future[Verdict]] = {}
        self._ledgers = Ledgers(self.rule)
        self._pending: Counter[str] = Counter()  # own claims written, not yet read back
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._active = 0  # acquires in progress: the reader must not stop under them
        self._last_used = time.monotonic()
        self._skew = 0.0  # broker clock minus ours, from our own claims' timestamps
        self._next_sweep = 0.0
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        # Written by this process (for tests and metrics).
        self.claims = 0
        self.blocks = 0

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> SyncroSlots:
        """The process's one budget reader, stopped with the runtime."""
        slots = _PER_RUNTIME.get(runtime)
        if slots is None:
            slots = _PER_RUNTIME[runtime] = cls(runtime)
            runtime.on_stop(slots.stop)
        return slots

    @property
    def reading(self) -> bool:
        return self._task is not None and not self._task.done()

    async def acquire(self, account: str) -> None:
        """Return when one request to `account` may be sent at once (send it right away).
        Unavailable if the broker cannot be reached."""
        self._active += 1
        self._last_used = time.monotonic()
        try:
            await self._ensure_reading()
            gate = self._gates.get(account)
            if gate is None:
                gate = self._gates[account] = asyncio.Semaphore(CLAIMS_IN_FLIGHT)
            async with gate:
                await self._until_granted(account)
        finally:
            self._active -= 1
            self._last_used = time.monotonic()
            if not self._active:
                self._gates.clear()

    async def block(self, account: str, seconds: float) -> None:
        """Syncro said 429 with ``Retry-After`` `seconds`: every process waits."""
        await self._write(account, encode(Block(seconds)))
        self.blocks += 1

    async def _until_granted(self, account: str) -> None:
        while True:
            ledger = self._ledgers.peek(account)
            if ledger is not None:
                # The fold may already know the window is full: wait rather than claim.
                now = self._broker_now()
                wait = ledger.next_free(now, self._pending[account]) - now
                if wait > 0:
                    await asyncio.sleep(wait)
            started = time.monotonic()
            verdict = await self._claim(account)
            waited = time.monotonic() - started
            if usable(verdict, waited, self.rule):
                return
            if not verdict.granted:
                await asyncio.sleep(max(0.0, verdict.retry_at - verdict.at - waited))
            # Granted but read back too late: it counts, unused; claim again.

    async def _claim(self, account: str) -> Verdict:
        n = next(self._seq)
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting[n] = fut
        self._pending[account] += 1
        try:
            wall = time.time()
            at = await self._write(account, encode(Claim(self._me, n)))
            self._skew = at - wall
            self.claims += 1
            try:
                async with asyncio.timeout(VERDICT_TIMEOUT_S):
                    return await fut
            except TimeoutError:
                log.warning("syncro budget: claim not read back within %.0fs",
                            VERDICT_TIMEOUT_S)
                raise _unavailable() from None
        finally:
            self._waiting.pop(n, None)
            self._pending[account] -= 1
            if self._pending[account] <= 0:
                del self._pending[account]

    async def _write(self, account: str, value: bytes) -> float:
        """Write one record durably; its timestamp (seconds, the broker's clock)."""
        try:
            async with asyncio.timeout(self.runtime.settings.produce_timeout_s):
                meta = await self.runtime.producer.send_and_wait(
                    self._topic, value, key=account.encode())
        except Exception as exc:  # KafkaError, TimeoutError: the request must not go
            log.warning("syncro budget: cannot write to %s: %r", self._topic, exc)
            raise _unavailable() from None
        # (The producer wakes this process's paced reader of the topic.)
        return float(meta.timestamp) / 1000

    def _broker_now(self) -> float:
        return time.time() + self._skew

    # ---- the reader ------------------------------------------------------------------

    async def _ensure_reading(self) -> None:
        if self.reading:
            return
        async with self._lock:
            if self.reading:
                return
            try:
                await self._start_reader()
            except Exception as exc:
                log.warning("syncro budget: cannot read %s: %r", self._topic, exc)
                raise _unavailable() from None

    async def _start_reader(self) -> None:
        s = self.runtime.settings
        await self._close_reader()
        # Kafka answers a fetch as soon as a record arrives, so a long wait costs no
        # latency and keeps an idle reader quiet; Tansu waits every fetch out.
        extra: dict[str, object] = {} if s.broker_kind == "tansu" else {"fetch_max_wait_ms": 500}
        consumer = make_consumer(s, group_id=None, **extra)
        await consumer.start()
        try:
            parts = await self.runtime.producer.partitions_for(self._topic)
            tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            # End offsets first: a record written between the two questions is read.
            ends = await consumer.end_offsets(tps)
            since = int((time.time() - self.rule.lookback) * 1000)
            found = await consumer.offsets_for_times({tp: since for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        except BaseException:
            await consumer.stop()
            raise
        self._ledgers = Ledgers(self.rule)
        self._consumer = consumer
        self._pacer = Pacer(consumer, s, [self._topic])
        self._task = asyncio.create_task(self._read(consumer, tps), name="syncro-slots")

    async def _read(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        pacer = self._pacer
        assert pacer is not None
        while True:
            if not self._active and not self._waiting \
                    and time.monotonic() - self._last_used > self._idle_stop_s:
                async with self._lock:
                    if not self._active and not self._waiting:
                        self._task = None
                        await self._close_reader()
                        return
            try:
                batch = await pacer.getmany(*tps, timeout_ms=500)
            except KafkaError as exc:  # broker blip: keep following
                log.warning("syncro budget: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for rec in records:
                    self._fold(rec)
            if time.monotonic() >= self._next_sweep:  # not every batch: O(accounts)
                self._next_sweep = time.monotonic() + self.rule.span
                self._ledgers.forget_idle(self._broker_now())

    def _fold(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        if self._guard is not None and not self._guard.admit_record(rec):
            return
        if rec.key is None or rec.value is None:
            return
        try:
            record = decode(rec.value)
            account = rec.key.decode()
        except (BadRequest, UnicodeDecodeError):
            log.warning("syncro budget: unreadable record %s[%d]@%d", rec.topic,
                        rec.partition, rec.offset)
            return
        verdict = self._ledgers.apply(account, rec.timestamp / 1000, record)
        if verdict is not None and isinstance(record, Claim) and record.by == self._me:
            fut = self._waiting.get(record.n)
            if fut is not None and not fut.done():
                fut.set_result(verdict)

    async def _close_reader(self) -> None:
        if self._pacer is not None:
            self._pacer.close()
            self._pacer = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_reader()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(_unavailable())
