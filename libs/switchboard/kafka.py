"""Kafka plumbing: topic names, producer, consumer and admin factories, consumer groups,
table readers, one place for each. Creating and checking the topics is
`switchboard.kafka_topics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import TopicPartition

from switchboard import kafka_logs, supervision
from switchboard.broker_config import (
    kafka_kwargs,
)
from switchboard.errors import ConfigError
from switchboard.pacing import Pacer, RebalanceWaker, WakingProducer
from switchboard.record_mac import guard_for
from switchboard.settings import Settings
from switchboard.supervision import supervised

log = logging.getLogger(__name__)

REGISTRY = "registry"
CONVERSATIONS = "conversations"
ACTIVITIES = "activities"
DELIVERIES = "deliveries"
DEAD = "deliveries.dead"
# Activities the router gave up on (undecodable, or routing kept failing): kept, not lost.
ACTIVITIES_DEAD = "activities.dead"
# Lanes waiting for a retry: same partition count and key as `deliveries`, so partition p
# of both is owned by the same deliverer (range assignment).
PARKED = "deliveries.parked"
# One record per delivery attempt (and status change), keyed by destination.
ATTEMPTS = "deliveries.attempts"
# Redeliver / replay job progress, keyed by job id.
JOBS = "jobs"
STREAM_CURSORS = "stream-cursors"
# Syncro's request budget shared by every process: claims and 429 blocks, keyed by account
# (switchboard.providers.syncro_budget). Short-lived; stamped by the broker's clock.
SYNCRO_SLOTS = "syncro.slots"
# Two-way record sync (#13): profiles (key: profile id), their run status and review
# reports, every module's pair index and watermark (tables); run requests (a log keyed by
# profile, consumed by the `sync` group).
SYNC_PROFILES = "sync.profiles"
SYNC_STATUS = "sync.status"
SYNC_PAIRS = "sync.pairs"
SYNC_JOBS = "sync.jobs"
# The hub's sync runs, one record per run (key: its job id; switchboard.sync.runs): the
# history `GET …/syncJobs` lists, which `sync.status` (one record per profile) cannot keep.
SYNC_RUNS = "sync.runs"


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka_kwargs(settings))


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer with acks=all: acknowledged means durable (invariant 1).

    It wakes this process's idle readers of the topics it writes (`switchboard.pacing`).
    """
    kafka_logs.install()  # aiokafka's retried errors are warnings (every client passes here)

    kwargs: dict[str, object] = {
        **kafka_kwargs(settings),
        "acks": "all",
        "enable_idempotence": settings.idempotent_producer,
        "linger_ms": 2,
        "request_timeout_ms": max(1000, int(settings.produce_timeout_s * 1000)),
        "max_batch_size": 256 * 1024,
        "max_request_size": 2 * 1024 * 1024,
    }
    kwargs.update(overrides)
    # Every record it writes to a checked topic carries its MAC (switchboard.record_mac).
    return WakingProducer(guard=guard_for(settings), **kwargs)


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: object
                  ) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: stages commit only offsets whose outcome is final."""
    kafka_logs.install()
    kwargs: dict[str, object] = {
        **kafka_kwargs(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "rebalance_timeout_ms": max(settings.session_timeout_ms, 10_000),
        "max_poll_interval_ms": 300_000,
        "max_partition_fetch_bytes": 1024 * 1024,
        # How often aiokafka's fetch routine wakes with nothing to do (default 200 ms):
        # new data, resumes and assignments wake it anyway; idle, it is pure overhead.
        # (5000 saved 0.3 % of a core in an idle `dev`, but a restarted process's Syncro
        # budget reader once stalled for a minute under it in CI: not worth it untested.)
        "consumer_timeout_ms": 1000,
        # Short even on Kafka, which answers a fetch as soon as data arrives: aiokafka sends
        # every request of a consumer on one connection, so a commit or an end-offsets
        # query waits behind a long fetch (measured: the Kafka test tier 3.5x slower).
        "fetch_max_wait_ms": settings.fetch_wait_ms,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


async def start_group_consumer(
    settings: Settings,
    topic: str | list[str],
    group: str,
    listener: Callable[[AIOKafkaConsumer], ConsumerRebalanceListener],
    **overrides: object,
) -> AIOKafkaConsumer:
    """Join consumer group `group` (prefixed like the topics) on `topic` (or several),
    retrying until the broker answers. A fresh consumer per try: aiokafka cannot restart
    a failed one.

    `listener` is built for the consumer, since the first assignment may arrive before
    this function returns it; each assignment also wakes the consumer's `Pacer`.
    """

    consumer: AIOKafkaConsumer | None = None
    topics = [topic] if isinstance(topic, str) else topic

    async def attempt() -> None:
        nonlocal consumer
        candidate = make_consumer(settings, group_id=settings.topic_prefix + group, **overrides)
        candidate.subscribe(topics, listener=RebalanceWaker(candidate, listener(candidate)))
        try:
            await candidate.start()
        except BaseException:
            await candidate.stop()
            raise
        consumer = candidate

    await run_with_broker_retry(f"{group} consumer", attempt)
    assert consumer is not None
    return consumer


async def stop_consuming(task: asyncio.Task[None] | None,
                         consumer: AIOKafkaConsumer | None) -> None:
    """Cancel a consume loop, then close its consumer (the loop must never touch a closed
    consumer, so the order matters)."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if consumer is not None:
        await consumer.stop()


class TableReader:
    """Follows one single-partition topic from the beginning and feeds every record to `apply`.

    Gives read-your-writes: `wait_for(offset)` returns once that offset is applied, and
    `sync()` waits until everything written before the call is applied.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        apply: Callable[[ConsumerRecord[bytes, bytes]], object],
    ) -> None:
        self._settings = settings
        self._tp = TopicPartition(topic, 0)
        self._apply = apply
        self._guard = guard_for(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._pacer: Pacer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._sync_lock = asyncio.Lock()
        self.position = 0  # next offset to apply
        self.caught_up = False

    async def start(self) -> None:
        """Read the topic from the beginning, and return once caught up. A start that
        fails closes what it opened, so a later start (a retry) leaks no consumer."""
        consumer = make_consumer(self._settings, group_id=None)
        try:
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._pacer = Pacer(consumer, self._settings, [self._tp.topic])
        self._task = supervised(self._run(), name=f"table:{self._tp.topic}")
        try:
            await self.sync(timeout=60)
        except BaseException:
            # Stopped on purpose: not a dead loop for the liveness probe.
            supervisor = supervision.current.get()
            if supervisor is not None:
                supervisor.release(self._task)
            await self.stop()
            self._consumer, self._pacer, self._task = None, None, None
            raise
        self.caught_up = True

    async def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.close()
        await stop_consuming(self._task, self._consumer)

    async def _run(self) -> None:
        assert self._pacer is not None
        while True:
            try:
                batch = await self._pacer.getmany(self._tp, timeout_ms=500)
            except KafkaError as exc:  # broker blip: keep following
                log.warning("table %s: %s", self._tp.topic, exc)
                await asyncio.sleep(0.5)
                continue
            records = batch.get(self._tp, [])
            if not records:
                continue
            for rec in records:
                if self._guard is not None and not self._guard.admit_record(rec):
                    self.position = rec.offset + 1  # not written by this hub: refused
                    continue
                try:
                    self._apply(rec)
                except Exception:  # one bad record must not stop the fold
                    log.exception("table %s: cannot apply offset %d", self._tp.topic, rec.offset)
                self.position = rec.offset + 1
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, offset: int, timeout: float = 10.0) -> None:
        """Return once `offset` has been applied (TimeoutError otherwise)."""
        if self.position <= offset and self._pacer is not None:
            self._pacer.wake()
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.position > offset)

    async def end_offset(self) -> int:
        assert self._consumer is not None
        ends = await self._consumer.end_offsets([self._tp])
        return int(ends[self._tp])

    async def sync(self, timeout: float = 10.0) -> None:
        """Wait until every record written before this call has been applied."""
        end = await self.end_offset()
        if end > self.position:
            await self.wait_for(end - 1, timeout)


_NOT_ALLOWED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError,
                ClusterAuthorizationFailedError)


async def run_with_broker_retry(what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Start `step`, retrying while the broker is not reachable yet (processes may start first).

    A missing ACL is not retried: waiting will not grant it (ConfigError).
    """
    delay = 0.2
    while True:
        try:
            await step()
            return
        except _NOT_ALLOWED as exc:
            raise ConfigError(f"{what}: Kafka refused ({exc.__class__.__name__}: {exc}); see "
                              "the README (Kafka security) for the ACLs each service "
                              "needs") from None
        except KafkaError as exc:
            log.warning("%s: broker not ready (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def consumer_lag(consumer: AIOKafkaConsumer, group: str
                       ) -> list[tuple[tuple[str, ...], float]]:
    """Records not yet read per assigned partition (end of log minus position), as metric
    samples labelled (group, topic, partition). Partitions without a known end or
    position yet are left out."""
    out: list[tuple[tuple[str, ...], float]] = []
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            async with asyncio.timeout(1.0):
                position = await consumer.position(tp)
        except Exception as exc:  # resetting, or no longer ours: skip this scrape
            log.debug("consumer lag of %s: %r", tp, exc)
            continue
        out.append(((group, tp.topic, str(tp.partition)), float(max(0, high - position))))
    return out
