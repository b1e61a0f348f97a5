"""What feeds a WebChat visitor's socket: its state, the shared live tail of its
integration's partition, and the history replay of its conversation.

- one **tail** reader per (integration, process) follows the live end of that partition
  and hands each record to the sockets of its conversation (so a thousand visitors cost
  one consumer, not a thousand);
- a socket that opens first subscribes to the tail, which fixes the offset N from which
  the tail feeds it, then **replays** its conversation's deliveries below N with a
  short-lived reader of its own (`History`). A replay is bounded three ways: to the
  visitor's own conversation (a browser's cursor counts only if the record it names is a
  delivery of that conversation, and the replay never starts before the conversation was
  created, nor more than `HISTORY_WINDOW_MS` back), in number (at most
  `webchat_replay_concurrency` per process, each waiting at most `webchat_replay_wait_s`
  for its turn: then 1013) and in time (`webchat_replay_timeout_s`). It sends at most the
  last `HISTORY_MAX_MESSAGES` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from starlette.websockets import WebSocket

from switchboard import clock
from switchboard.errors import Unavailable
from switchboard.kafka import make_consumer, stop_consuming
from switchboard.model import Delivery, delivery_decoder
from switchboard.providers import webchat as wc
from switchboard.record_mac import RecordGuard
from switchboard.services.runtime import Runtime
from switchboard.services.stream_protocol import (
    CLOSE_TRY_AGAIN,
    MAX_PARTITION_FETCH_BYTES,
    Cursor,
)
from switchboard.socket_policy import replay_start
from switchboard.supervision import Supervisor, supervised

log = logging.getLogger(__name__)

# Live deliveries queued for one socket while it is slow (or still replaying); past this
# the socket is closed with 1013 and the widget reconnects with its cursor.
MAX_QUEUED = 1000
CURSOR_CHECK_TIMEOUT_S = 3.0
CURSOR_CHECK_ROUNDS = 2  # fetches of up to 500 ms each
HISTORY_MAX_MESSAGES = 500
HISTORY_WINDOW_MS = 30 * 24 * 3600 * 1000
# Conversation records and delivery records are stamped by different processes.
CLOCK_SKEW_MS = 60_000
# A visitor may send this many messages in a burst, then this many per second.
MESSAGE_BURST = 20
MESSAGE_RATE_PER_S = 2.0


class Closed(Exception):
    """Ends a socket with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Visitor:
    """One visitor socket."""

    def __init__(self, ws: WebSocket, integration_id: str, hub_id: str, origin: str,
                 address: str) -> None:
        self.ws = ws
        self.address = address  # what per-address limits count it under
        self.integration_id = integration_id
        self.hub_id = hub_id
        self.origin = origin
        self.visitor_id = ""
        self.conversation_id = ""
        self.name: str | None = None
        self.high = -1  # highest offset sent (or skipped as already seen by the browser)
        self.queue: deque[tuple[int, Delivery]] = deque()
        self.wake = asyncio.Event()
        self.overflow = False
        self.send_lock = asyncio.Lock()
        self.shutdown = asyncio.Event()
        self.done = asyncio.Event()
        self.tokens = float(MESSAGE_BURST)
        self.refilled = time.monotonic()

    def push(self, offset: int, delivery: Delivery) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.overflow = True
        else:
            self.queue.append((offset, delivery))
        self.wake.set()

    def take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(MESSAGE_BURST, self.tokens + (now - self.refilled) * MESSAGE_RATE_PER_S)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def send(self, frame: wc.ServerFrame) -> None:
        async with self.send_lock:
            await self.ws.send_text(wc.encode_frame(frame))


class Tail:
    """Follows the live end of one integration's partition; fans records out by conversation."""

    def __init__(self, runtime: Runtime, tp: TopicPartition, integration_id: str,
                 supervisor: Supervisor | None = None) -> None:
        self._settings = runtime.settings
        self._supervisor = supervisor  # watches the reader: liveness fails if it dies
        self._guard = runtime.records
        self.tp = tp
        self.integration_id = integration_id
        self._key = integration_id.encode()
        self.subs: dict[str, set[Visitor]] = {}
        self.refs = 0
        self.position = 0  # the next offset this tail hands out
        self.failed = False
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self._settings, group_id=None,
                                 max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES)
        try:
            await consumer.start()
            consumer.assign([self.tp])
            await consumer.seek_to_end(self.tp)
            self.position = int(await consumer.position(self.tp))
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = supervised(self._run(), name=f"webchat-tail:{self.integration_id}",
                                supervisor=self._supervisor)

    async def stop(self) -> None:
        if self._task is not None and self._supervisor is not None:
            self._supervisor.release(self._task)  # stopped on purpose: not a dead loop
        await stop_consuming(self._task, self._consumer)

    def subscribe(self, v: Visitor) -> int:
        """Feed `v` every record of its conversation from the returned offset on."""
        self.subs.setdefault(v.conversation_id, set()).add(v)
        return self.position

    def unsubscribe(self, v: Visitor) -> None:
        subs = self.subs.get(v.conversation_id)
        if subs is not None:
            subs.discard(v)
            if not subs:
                del self.subs[v.conversation_id]

    async def _run(self) -> None:
        try:
            while True:
                try:
                    batch = await self._consumer.getmany(self.tp, timeout_ms=1000,
                                                         max_records=500)
                except KafkaError as exc:  # broker blip: the consumer keeps its position
                    log.warning("webchat tail %s: %r", self.integration_id, exc)
                    await asyncio.sleep(0.5)
                    continue
                # No await in here: subscribe() sees a position consistent with dispatch.
                for rec in batch.get(self.tp, ()):
                    if rec.offset < self.position:
                        continue  # an offset reset went back: already handed out
                    self.position = rec.offset + 1
                    d = decode_delivery(rec, self._key, self.integration_id, self._guard)
                    if d is not None:
                        for v in self.subs.get(d.conversation_id, ()):
                            v.push(rec.offset, d)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webchat tail %s failed", self.integration_id)
            self.failed = True
            for subs in self.subs.values():
                for v in subs:
                    v.wake.set()


def decode_delivery(rec: ConsumerRecord[bytes, bytes], key: bytes, integration_id: str,
                    guard: RecordGuard | None) -> Delivery | None:
    if rec.key != key or rec.value is None:
        return None
    if guard is not None and not guard.admit_record(rec):
        return None  # not written by this hub (switchboard.record_mac)
    try:
        d = delivery_decoder.decode(rec.value)
    except msgspec.DecodeError:
        log.warning("webchat %s: unreadable delivery at %d:%d skipped",
                    integration_id, rec.partition, rec.offset)
        return None
    return d if d.destination_id == integration_id else None


class History:
    """History replays of this process: bounded to the conversation, in number and time."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._guard = runtime.records
        self.slots = asyncio.Semaphore(self._settings.webchat_replay_concurrency)
        self.scanned = 0  # records read by replays in this process (metrics, tests)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the replay slots, or 1013 if none frees up within the deadline."""
        try:
            async with asyncio.timeout(self._settings.webchat_replay_wait_s):
                await self.slots.acquire()
        except TimeoutError:
            raise Closed(CLOSE_TRY_AGAIN, "history busy; retry") from None
        try:
            yield
        finally:
            self.slots.release()

    async def start(self, v: Visitor, tp: TopicPartition, stop: int, cursor: Cursor | None,
                    *, fresh: bool) -> int:
        """The first offset to replay below `stop` for this socket."""
        if fresh:
            return stop  # a new visitor has no conversation yet
        if cursor is not None:
            # Only a cursor naming a delivery of this very conversation counts: any other
            # could aim the replay anywhere in a partition other tenants share. (A cursor
            # ahead of our tail may be real too: another process's tail may be further
            # along, or Tansu under-reported the end after a multi-record batch.)
            if await self._cursor_names_ours(v, tp, cursor):
                v.high = cursor.offset
                return replay_start(stop=stop, cursor=cursor.offset, cursor_is_ours=True,
                                    conversation_start=cursor.offset)
            log.info("webchat %s: a cursor outside the visitor's conversation is ignored",
                     v.integration_id)
        return replay_start(stop=stop, cursor=None, cursor_is_ours=False,
                            conversation_start=await self._conversation_start(v, tp, stop))

    async def _conversation_start(self, v: Visitor, tp: TopicPartition, stop: int
                                  ) -> int | None:
        """The first offset that can hold a delivery of the conversation; None if it has
        none yet."""
        conversations = self._runtime.conversations
        try:
            await conversations.sync()
        except Unavailable as exc:
            raise Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
        conv = conversations.get(v.conversation_id)
        if conv is None:
            return None  # no message yet, so no delivery either
        since = max(conv.created_at - CLOCK_SKEW_MS,
                    clock.now_ms() - HISTORY_WINDOW_MS)
        return await self._offset_for_time(tp, since, stop)

    async def _cursor_names_ours(self, v: Visitor, tp: TopicPartition, cursor: Cursor
                                 ) -> bool:
        """Whether the record at `cursor` is a delivery of this visitor's conversation."""
        key = v.integration_id.encode()
        async with self._slot():
            consumer = make_consumer(self._settings, group_id=None)
            try:
                async with asyncio.timeout(CURSOR_CHECK_TIMEOUT_S):
                    await consumer.start()
                    consumer.assign([tp])
                    consumer.seek(tp, cursor.offset)
                    # A cursor we handed out names a record that exists: it comes with the
                    # first fetches. One that names the end of the log (nothing there yet)
                    # must not hold a replay slot for long: two rounds, then it is not ours.
                    for _ in range(CURSOR_CHECK_ROUNDS):
                        batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                        for rec in batch.get(tp, ()):
                            # Past the end, the reader resets to the log start instead.
                            d = decode_delivery(rec, key, v.integration_id, self._guard)
                            return (rec.offset == cursor.offset and d is not None
                                    and d.conversation_id == v.conversation_id)
                    return False
            except TimeoutError:
                return False  # nothing there (yet): not a position we ever handed out
            except KafkaError as exc:
                raise Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
            finally:
                await consumer.stop()

    async def _offset_for_time(self, tp: TopicPartition, ts_ms: int, stop: int) -> int:
        async with self._slot():
            consumer = make_consumer(self._settings, group_id=None)
            try:
                async with asyncio.timeout(CURSOR_CHECK_TIMEOUT_S):
                    await consumer.start()
                    found = (await consumer.offsets_for_times({tp: ts_ms})).get(tp)
            except Exception as exc:
                # Not "replay from the log start": that could read a whole shared partition.
                log.warning("webchat: timestamp lookup on %s failed: %r", tp, exc)
                raise Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
            finally:
                await consumer.stop()
        # Nothing written since (Tansu answers that as offset 0 with timestamp -1).
        if found is None or found.timestamp < 0:
            return stop
        return int(found.offset)

    async def replay(self, v: Visitor, tp: TopicPartition, start: int, stop: int) -> bool:
        """Send this conversation's deliveries in [start, stop); True if some were left out
        (more than HISTORY_MAX_MESSAGES)."""
        if start >= stop:
            return False
        frames: deque[wc.DeliveryFrame] = deque(maxlen=HISTORY_MAX_MESSAGES)
        seen = 0
        last: Cursor | None = None
        key = v.integration_id.encode()
        async with self._slot():
            consumer = make_consumer(self._settings, group_id=None,
                                     max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES)
            try:
                async with asyncio.timeout(self._settings.webchat_replay_timeout_s):
                    await consumer.start()
                    consumer.assign([tp])
                    consumer.seek(tp, start)
                    position = start
                    while position < stop:
                        batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
                        for rec in batch.get(tp, ()):
                            position = rec.offset + 1
                            if rec.offset >= stop:
                                break
                            self.scanned += 1
                            d = decode_delivery(rec, key, v.integration_id, self._guard)
                            if d is None or d.conversation_id != v.conversation_id:
                                continue
                            cursor = Cursor(rec.partition, rec.offset)
                            frame = wc.delivery_frame(d, str(cursor))
                            last = cursor
                            if frame is not None:
                                seen += 1
                                frames.append(frame)
                        if not batch and position < stop:
                            # The range may start below the log start (retention).
                            position = max(position, int(await consumer.position(tp)))
            except TimeoutError as exc:
                raise Closed(CLOSE_TRY_AGAIN, "history replay timed out") from exc
            except KafkaError as exc:
                raise Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
            finally:
                await consumer.stop()
        for frame in frames:
            await v.send(frame)
        if last is not None:
            v.high = max(v.high, last.offset)
        return seen > len(frames)
