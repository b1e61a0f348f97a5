"""One Kafka consumer per process follows the live end of `deliveries` for every socket.

The stream gateway used to open a consumer per websocket; a thousand sockets were a
thousand consumers. Now one `Fanout` per process holds one consumer, assigned the
partitions its sockets have asked for, with only those that have a subscribed socket
resumed (the others are paused: no fetches). Each record is handed, by key, to the
subscribers of that key: each has its own bounded queue, so a slow socket fills only its
own queue and is then closed (it reconnects and resumes from its last ack); the fan-out
never waits for a socket.

`subscribe` returns the offset from which the fan-out feeds the subscriber; everything
below it the socket reads itself (a short-lived catch-up reader, bounded in number).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from switchboard.kafka import make_consumer, stop_consuming
from switchboard.settings import Settings
from switchboard.supervision import Supervisor, supervised

log = logging.getLogger(__name__)

MAX_RECORDS_PER_POLL = 500
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
START_TIMEOUT_S = 10.0


class Subscriber:
    """One socket's side of the fan-out: a bounded queue of its key's records."""

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self.queue: deque[ConsumerRecord[bytes, bytes]] = deque()
        self.wake = asyncio.Event()
        self.overflow = False  # more than max_queued were waiting: the socket must go
        self.failed = False  # the fan-out's reader died: the socket must reconnect
        # Set with either: the socket is closed even while a send to it is blocked.
        self.gone = asyncio.Event()

    def push(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        if len(self.queue) >= self.max_queued:
            self.overflow = True
            self.queue.clear()  # it is closed anyway; free the memory now
            self.gone.set()
        elif not self.overflow:
            self.queue.append(rec)
        self.wake.set()

    def fail(self) -> None:
        self.failed = True
        self.gone.set()
        self.wake.set()


class Fanout:
    """Follows `topic` for this process's sockets; one consumer whatever their number."""

    def __init__(self, settings: Settings, topic: str,
                 supervisor: Supervisor | None = None) -> None:
        self._settings = settings
        self._supervisor = supervisor  # watches the reader: liveness fails if it dies
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # partition → key → subscribers; a partition is here iff it is resumed.
        self._subs: dict[int, dict[bytes, set[Subscriber]]] = {}
        self._position: dict[int, int] = {}  # partition → the next offset handed out
        self._assigned: set[TopicPartition] = set()
        # One poll may hand a socket this many records at once: keep it well under what a
        # socket may queue, or a burst would drop a socket that keeps up.
        self._max_records = max(1, min(MAX_RECORDS_PER_POLL, settings.stream_max_queued // 2))
        self.failed = False

    @property
    def consumer_count(self) -> int:
        """Kafka consumers this fan-out holds: 0 or 1."""
        return 1 if self._consumer is not None else 0

    def subscriber_count(self) -> int:
        return sum(len(subs) for keys in self._subs.values() for subs in keys.values())

    def queued(self) -> int:
        """Records waiting in all subscribers' queues."""
        return sum(len(s.queue) for keys in self._subs.values()
                   for subs in keys.values() for s in subs)

    async def stop(self) -> None:
        task, consumer = self._task, self._consumer
        self._task = self._consumer = None
        if task is not None and self._supervisor is not None:
            self._supervisor.release(task)  # stopped on purpose: not a dead loop
        await stop_consuming(task, consumer)

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        consumer = make_consumer(self._settings, group_id=None,
                                 max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = supervised(self._run(consumer), name=f"stream-fanout:{self.topic}",
                                supervisor=self._supervisor)
        return consumer

    def _assign(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        """Add `tp` to the assignment (which only grows, up to the topic's partitions),
        paused, as is every partition without subscribers."""
        tps = self._assigned | {tp}
        consumer.assign(list(tps))
        # assign() forgets positions: put back those of resumed partitions (no await
        # here, so the run loop never fetches from a forgotten position).
        consumer.pause(*(t for t in tps if t.partition not in self._subs))
        for p, pos in self._position.items():
            consumer.seek(TopicPartition(self.topic, p), pos)
        self._assigned = tps

    async def subscribe(self, sub: Subscriber, tp: TopicPartition, key: bytes) -> int:
        """Feed `sub` every record of `key` in `tp` from the returned offset on."""
        async with self._lock:
            consumer = await self._start()
            if tp not in self._assigned:
                self._assign(consumer, tp)
            if tp.partition not in self._subs:
                async with asyncio.timeout(START_TIMEOUT_S):
                    end = int((await consumer.end_offsets([tp]))[tp])
                # From here no await: the run loop sees the position, seek and resume at once.
                consumer.seek(tp, end)
                self._position[tp.partition] = end
                self._subs[tp.partition] = {}
                consumer.resume(tp)
            self._subs[tp.partition].setdefault(key, set()).add(sub)
            return self._position[tp.partition]

    def unsubscribe(self, sub: Subscriber, tp: TopicPartition, key: bytes) -> None:
        keys = self._subs.get(tp.partition)
        if keys is None:
            return
        subs = keys.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del keys[key]
        if not keys:
            del self._subs[tp.partition]
            self._position.pop(tp.partition, None)
            if self._consumer is not None and tp in self._assigned:
                self._consumer.pause(tp)

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=1000,
                                                   max_records=self._max_records)
                except KafkaError as exc:  # broker blip: the consumer keeps its positions
                    log.warning("stream fan-out %s: %r", self.topic, exc)
                    await asyncio.sleep(0.5)
                    continue
                # No await in here: subscribe() sees positions consistent with dispatch.
                for tp, recs in batch.items():
                    self._dispatch(tp.partition, recs)
                # Let the sockets' pumps run before the next poll (it may return at once
                # from the prefetch buffer): a burst must not outrun sockets that keep up.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream fan-out %s failed", self.topic)
            self.failed = True
            for keys in self._subs.values():
                for subs in keys.values():
                    for s in subs:
                        s.fail()

    def _dispatch(self, partition: int, recs: list[Any]) -> None:
        keys = self._subs.get(partition)
        if keys is None:
            return  # paused since the fetch: nobody is listening any more
        position = self._position[partition]
        for rec in recs:
            if rec.offset < position:
                continue  # already handed out (a broker answered from below the position)
            position = rec.offset + 1
            for s in keys.get(rec.key, ()):
                s.push(rec)
        self._position[partition] = position
