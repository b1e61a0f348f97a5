"""Idle consumers that cost next to nothing, busy ones that wait for nothing (invariant 10).

The embedded broker (Tansu) answers a fetch only when its wait runs out, so consumers use
a short wait (`fetch_wait_ms`, 10 ms): right under load, but idle it means 50 fetches
a second per consumer, for nothing. A `Pacer` pauses its consumer's partitions after a
few empty polls and then looks only every `fetch_idle_poll_ms`, or at once when woken:
a producer of this process that writes to a topic wakes every pacer reading it as soon
as the write is durable, and a reader that is asked to catch up wakes itself. A group
consumer's rebalance wakes its pacer too (`RebalanceWaker`): the partitions it takes over
may hold what another process wrote, and no wake-up crosses processes; it counts as busy
again, so it does not pause them before their first fetch (which waits for the committed
offsets) had time to answer.

On Apache Kafka consumers are never paused: there the processes of a deployment are
separate, so a paused consumer would hear of new records only at its next look, and idle
fetches cost the broker little.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.structs import TopicPartition

from switchboard.record_mac import RecordGuard
from switchboard.settings import Settings

__all__ = ["WAKEUPS", "Pacer", "RebalanceWaker", "WakingProducer"]

# Seconds without a record before a consumer counts as idle.
IDLE_AFTER_S = 1.0


class _Wakeups:
    """Process-wide: topic → the pacers reading it."""

    def __init__(self) -> None:
        self._by_topic: defaultdict[str, set[Pacer]] = defaultdict(set)

    def add(self, topic: str, pacer: Pacer) -> None:
        self._by_topic[topic].add(pacer)

    def discard(self, topic: str, pacer: Pacer) -> None:
        pacers = self._by_topic.get(topic)
        if pacers is not None:
            pacers.discard(pacer)
            if not pacers:
                del self._by_topic[topic]

    def notify(self, topic: str) -> None:
        for pacer in self._by_topic.get(topic, ()):
            pacer.wake()


WAKEUPS = _Wakeups()
# Consumer → its pacer, for `RebalanceWaker` (weak: a stopped consumer is forgotten).
_PACERS: weakref.WeakKeyDictionary[AIOKafkaConsumer, Pacer] = weakref.WeakKeyDictionary()


class RebalanceWaker(ConsumerRebalanceListener):  # type: ignore[misc]
    """`listener`, and then a wake-up for `consumer`'s pacer once partitions are assigned."""

    def __init__(self, consumer: AIOKafkaConsumer, listener: ConsumerRebalanceListener
                 ) -> None:
        self._consumer = consumer
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._listener.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._listener.on_partitions_assigned(assigned)
        pacer = _PACERS.get(self._consumer)
        if pacer is not None:
            pacer.rebalanced()


class WakingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A producer that wakes this process's idle readers of a topic it wrote to.

    With a `guard` it is also the one place records get their MAC (`switchboard.record_mac`):
    every record written to a topic whose readers check it carries ``sb-mac``.
    """

    def __init__(self, *, guard: RecordGuard | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        if self._guard is not None:
            headers = self._guard.sign_headers(topic, key, value, headers)
        fut: asyncio.Future[Any] = await super().send(
            topic, value, key, partition, timestamp_ms, headers)
        fut.add_done_callback(functools.partial(_notify, topic))
        return fut


def _notify(topic: str, _done: asyncio.Future[Any]) -> None:
    WAKEUPS.notify(topic)


Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class Pacer:
    """Wraps one consumer's `getmany` (see the module docstring).

    `hold(tp)` says whether the owner wants `tp` paused for reasons of its own
    (backpressure): the pacer never resumes such a partition.
    """

    def __init__(self, consumer: AIOKafkaConsumer, settings: Settings, topics: Iterable[str],
                 hold: Callable[[TopicPartition], bool] | None = None) -> None:
        self._consumer = consumer
        self._topics = list(topics)
        self._hold = hold or (lambda tp: False)
        self._enabled = settings.broker_kind == "tansu"
        self._idle_poll_s = settings.fetch_idle_poll_ms / 1000
        self._look_ms = 3 * settings.fetch_wait_ms + 20
        self._last_data = time.monotonic()
        self._ours: set[TopicPartition] = set()
        self._woken = asyncio.Event()
        for topic in self._topics:
            WAKEUPS.add(topic, self)
        _PACERS[consumer] = self

    @property
    def idle(self) -> bool:
        return bool(self._ours)

    def wake(self) -> None:
        self._woken.set()

    def rebalanced(self) -> None:
        """Partitions were assigned: look now, and count as busy for a while."""
        self._last_data = time.monotonic()
        self._woken.set()

    def close(self) -> None:
        for topic in self._topics:
            WAKEUPS.discard(topic, self)
        if _PACERS.get(self._consumer) is self:
            del _PACERS[self._consumer]

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int,
                      max_records: int | None = None) -> Batch:
        """`consumer.getmany`, but paced: while idle, it first waits to be woken."""
        if self._ours:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_poll_s):
                    await self._woken.wait()
            self._resume()
            if self._woken.is_set():
                self._last_data = time.monotonic()  # woken: busy again, for a while
            else:
                # A slow poll: one short look (a fetch or two), then back to sleep.
                timeout_ms = min(timeout_ms, self._look_ms)
        self._woken.clear()
        batch: Batch = await self._consumer.getmany(*partitions, timeout_ms=timeout_ms,
                                                    max_records=max_records)
        now = time.monotonic()
        if any(batch.values()):
            self._last_data = now
        elif (self._enabled and now - self._last_data >= IDLE_AFTER_S
              and not self._woken.is_set()):
            self._pause()
        return batch

    def _pause(self) -> None:
        consumer = self._consumer
        already = consumer.paused()
        mine = [tp for tp in consumer.assignment() if tp not in already]
        if mine:
            consumer.pause(*mine)
            self._ours.update(mine)

    def _resume(self) -> None:
        assigned = self._consumer.assignment()
        again = [tp for tp in self._ours if tp in assigned and not self._hold(tp)]
        self._ours.clear()
        if again:
            self._consumer.resume(*again)
