"""WebChat channel: the hub serves the widget and is its websocket gateway.

Routes (mounted with the ingress, which also runs the gateway):

- ``GET /webchat/{integrationId}``: a page to try the widget;
- ``GET /webchat/{integrationId}/widget.js``: the script a site embeds;
- ``GET /webchat/{integrationId}/ws``: the widget's websocket (frames:
  `switchboard.providers.webchat`).

Inbound, a visitor's message becomes a ``message:customer`` activity, published durably
before the browser gets its ``ack``. Outbound, deliveries to a WebChat integration are not
sent by the deliverer (our `sender` marks them final at once); they are read here from
the integration's partition of `deliveries` (key = integration id), where the router put
them in order:

- one **tail** reader per (integration, process) follows the live end of that partition
  and hands each record to the sockets of its conversation (so a thousand visitors cost
  one consumer, not a thousand);
- a socket that opens first subscribes to the tail, which fixes the offset N from which
  the tail feeds it, then **replays** its conversation's deliveries below N with a
  short-lived reader of its own: from just after the browser's cursor, or, without one,
  from the conversation's creation (found with a timestamp lookup) but no earlier than
  `HISTORY_WINDOW_MS`. The replay reads every record of the partition in that range
  (other integrations' and conversations' too) and sends at most the last
  `HISTORY_MAX_MESSAGES` of them; replays run at most `REPLAY_CONCURRENCY` at a time.

Close codes (the socket is accepted first, so the browser learns the code): 4400 broken
protocol, 4401 invalid session token (the widget then starts over as a new visitor),
4403 Origin not allowed, 4404 unknown integration (or not WebChat), 4408 no hello in
time, 4409 integration paused, 4429 too many sockets, 1013 try again (broker unavailable,
replay too slow, client too slow), 1011 internal error, 1001 server shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import importlib.resources
import logging
import re
import time
from collections import deque
from typing import Any, NamedTuple

import msgspec
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard.channels import WebChatConfig
from switchboard.errors import NotFound, Unavailable
from switchboard.ids import customer_conversation_id
from switchboard.kafka import DELIVERIES, make_consumer, stop_consuming
from switchboard.model import ChannelId, Delivery, delivery_decoder
from switchboard.outbound import SKIPPED, Attempt
from switchboard.providers import webchat as wc
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.runtime import Runtime
from switchboard.services.stream_protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    HEARTBEAT_S,
    MAX_PARTITION_FETCH_BYTES,
    Cursor,
    parse_cursor,
)

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_TIMEOUT = 4408
CLOSE_PAUSED = 4409

HELLO_TIMEOUT_S = 10.0
# Live deliveries queued for one socket while it is slow (or still replaying); past this
# the socket is closed with 1013 and the widget reconnects with its cursor.
MAX_QUEUED = 1000
MAX_SOCKETS_PER_INTEGRATION = 2000
REPLAY_CONCURRENCY = 8
REPLAY_TIMEOUT_S = 30.0
CURSOR_CHECK_TIMEOUT_S = 3.0
HISTORY_MAX_MESSAGES = 500
HISTORY_WINDOW_MS = 30 * 24 * 3600 * 1000
# Conversation records and delivery records are stamped by different processes.
CLOCK_SKEW_MS = 60_000
# A visitor may send this many messages in a burst, then this many per second.
MESSAGE_BURST = 20
MESSAGE_RATE_PER_S = 2.0
REVOCATION_CHECK_S = 1.0

_ASSETS = importlib.resources.files(__package__) / "webchat_assets"
_PLACEHOLDER = re.compile(r"\{\{(title|integrationId|widgetUrl)\}\}")


@functools.cache
def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


class _Refusal(NamedTuple):
    code: int
    reason: str


class _Closed(Exception):
    """Ends a socket with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _GatewayServed:
    """The deliverer's sender for WebChat: the gateway serves these, nothing to send."""

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt:
        return Attempt(outcome=Outcome.DELIVERED, reason=SKIPPED)


class _Visitor:
    """One visitor socket."""

    def __init__(self, ws: WebSocket, integration_id: str, hub_id: str, origin: str) -> None:
        self.ws = ws
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


class _Tail:
    """Follows the live end of one integration's partition; fans records out by conversation."""

    def __init__(self, runtime: Runtime, tp: TopicPartition, integration_id: str) -> None:
        self._settings = runtime.settings
        self.tp = tp
        self.integration_id = integration_id
        self._key = integration_id.encode()
        self.subs: dict[str, set[_Visitor]] = {}
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
        self._task = asyncio.create_task(self._run(), name=f"webchat-tail:{self.integration_id}")

    async def stop(self) -> None:
        await stop_consuming(self._task, self._consumer)

    def subscribe(self, v: _Visitor) -> int:
        """Feed `v` every record of its conversation from the returned offset on."""
        self.subs.setdefault(v.conversation_id, set()).add(v)
        return self.position

    def unsubscribe(self, v: _Visitor) -> None:
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
                    d = _decode(rec, self._key, self.integration_id)
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


def _decode(rec: ConsumerRecord[bytes, bytes], key: bytes, integration_id: str
            ) -> Delivery | None:
    if rec.key != key or rec.value is None:
        return None
    try:
        d = delivery_decoder.decode(rec.value)
    except msgspec.DecodeError:
        log.warning("webchat %s: unreadable delivery at %d:%d skipped",
                    integration_id, rec.partition, rec.offset)
        return None
    return d if d.destination_id == integration_id else None


class WebChatGateway:
    """Serves the widget's websockets from the `deliveries` topic."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._deliveries = self._settings.topic(DELIVERIES)
        self._tails: dict[str, _Tail] = {}
        self._tails_lock = asyncio.Lock()
        self._replays = asyncio.Semaphore(REPLAY_CONCURRENCY)
        self._live: dict[str, set[_Visitor]] = {}
        self._partitioner = DefaultPartitioner()
        own = wc.public_origin(self._settings.public_url)
        self._own_origins = [own] if own else []
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False
        visitors = [v for vs in self._live.values() for v in vs]
        for v in visitors:
            v.shutdown.set()
            v.wake.set()
        if visitors:
            await asyncio.wait([asyncio.create_task(v.done.wait()) for v in visitors],
                               timeout=5)
        async with self._tails_lock:
            tails = list(self._tails.values())
            self._tails.clear()
        for tail in tails:
            await tail.stop()

    def connection_count(self, integration_id: str) -> int:
        return len(self._live.get(integration_id, ()))

    def tail_count(self) -> int:
        return len(self._tails)

    # ---- admission ------------------------------------------------------------------

    async def endpoint(self, ws: WebSocket) -> None:
        admitted = await self._admit(ws)
        if isinstance(admitted, _Refusal):
            with contextlib.suppress(Exception):
                # Accept first: a browser never sees the HTTP status of a refused handshake.
                await ws.accept()
                await ws.close(admitted.code, admitted.reason)
            return
        v = admitted
        close: _Refusal | None = None
        try:
            await ws.accept()
            await self._serve(v)
        except _Closed as exc:
            close = _Refusal(exc.code, exc.reason)
        except (WebSocketDisconnect, OSError):
            pass
        except Exception:
            log.exception("webchat %s: socket failed", v.integration_id)
            close = _Refusal(CLOSE_INTERNAL, "internal error")
        finally:
            if close is not None and ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(close.code, close.reason)
            live = self._live.get(v.integration_id)
            if live is not None:
                live.discard(v)
                if not live:
                    del self._live[v.integration_id]
            v.done.set()

    def _refusal(self, rec: IntegrationRecord | None, origin: str | None) -> _Refusal | None:
        """Whether the integration as the registry says now refuses this socket."""
        if rec is None or rec.channel_id is not ChannelId.WEBCHAT or not isinstance(
                rec.configuration, WebChatConfig):
            return _Refusal(CLOSE_NOT_FOUND, "unknown web chat")
        if not wc.origin_allowed(origin, rec.configuration.allowed_origins, self._own_origins):
            return _Refusal(CLOSE_FORBIDDEN, "origin not allowed")
        if not rec.active:
            return _Refusal(CLOSE_PAUSED, "web chat paused")
        return None

    async def _admit(self, ws: WebSocket) -> _Visitor | _Refusal:
        if not self._started:
            return _Refusal(CLOSE_TRY_AGAIN, "gateway not started")
        iid: str = ws.path_params["integrationId"]
        origin = ws.headers.get("origin")
        try:
            rec = await self._runtime.registry.lookup_integration(iid)
        except Exception:
            return _Refusal(CLOSE_TRY_AGAIN, "registry unavailable")
        refusal = self._refusal(rec, origin)
        if refusal is not None:
            if refusal.code == CLOSE_FORBIDDEN:
                log.info("webchat %s: origin %r refused", iid, (origin or "")[:200])
            return refusal
        assert rec is not None and origin is not None
        live = self._live.setdefault(iid, set())
        if len(live) >= MAX_SOCKETS_PER_INTEGRATION:
            return _Refusal(CLOSE_TOO_MANY, "too many visitors connected")
        v = _Visitor(ws, iid, rec.hub_id, origin)
        live.add(v)
        return v

    async def _partition_of(self, integration_id: str) -> int:
        """The partition the producer's default partitioner puts this key in."""
        parts = sorted(await self._runtime.producer.partitions_for(self._deliveries))
        partition: int = self._partitioner(integration_id.encode(), parts, parts)
        return partition

    # ---- one socket -------------------------------------------------------------------

    async def _serve(self, v: _Visitor) -> None:
        hello = await self._hello(v)
        now_ms = int(time.time() * 1000)
        resumed = hello.session is not None
        if hello.session is not None:
            session = wc.open_session(
                self._runtime.session_sealer, hello.session, v.integration_id, now_ms=now_ms,
                max_age_ms=self._runtime.settings.webchat_session_ttl_s * 1000)
            if session is None:
                # Refused rather than silently replaced: the widget then forgets the token
                # and starts over as a new visitor (another conversation).
                raise _Closed(CLOSE_UNAUTHORIZED, "invalid session")
            v.visitor_id = session.visitor_id
        else:
            v.visitor_id = wc.new_visitor_id()
        # A fresh token on every visit: a session expires after a TTL without visits.
        token = wc.issue_session(self._runtime.session_sealer, v.integration_id, v.visitor_id,
                                 now_ms)
        v.conversation_id = customer_conversation_id(v.integration_id, v.visitor_id)
        v.name = hello.name.strip() if hello.name and hello.name.strip() else None
        cursor = parse_cursor(hello.cursor) if hello.cursor is not None else None
        if hello.cursor is not None and cursor is None:
            raise _Closed(CLOSE_BAD_REQUEST, "malformed cursor; expected P:O")
        try:
            partition = await self._partition_of(v.integration_id)
        except Exception as exc:
            raise _Closed(CLOSE_TRY_AGAIN, "deliveries topic unavailable") from exc
        if cursor is not None and cursor.partition != partition:
            cursor = None  # from before a partition-count change: replay the conversation
        await v.send(wc.SessionFrame(session=token, visitor_id=v.visitor_id,
                                     conversation_id=v.conversation_id,
                                     resumed=resumed))
        tail = await self._acquire_tail(v.integration_id, TopicPartition(self._deliveries,
                                                                         partition))
        try:
            stop = tail.subscribe(v)
            start = await self._replay_start(v, tail, stop, cursor, fresh=not resumed)
            truncated = await self._replay(v, tail.tp, start, stop)
            ready = str(Cursor(partition, v.high)) if v.high >= 0 else None
            await v.send(wc.ReadyFrame(cursor=ready, truncated=truncated))
            await self._live_phase(v, tail)
        finally:
            tail.unsubscribe(v)
            await self._release_tail(tail)

    async def _hello(self, v: _Visitor) -> wc.HelloFrame:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                while True:
                    frame = await self._receive(v)
                    if frame is None:
                        raise WebSocketDisconnect()
                    if isinstance(frame, wc.HelloFrame):
                        return frame
                    if isinstance(frame, wc.MessageFrame):
                        raise _Closed(CLOSE_BAD_REQUEST, "hello first")
        except TimeoutError:
            raise _Closed(CLOSE_TIMEOUT, "no hello") from None

    @staticmethod
    async def _receive(v: _Visitor) -> wc.ClientFrame | None:
        """The next known frame; None when the client left. Unknown types are skipped."""
        while True:
            msg = await v.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return None
            raw = msg.get("text")
            if raw is None:
                raw = (msg.get("bytes") or b"").decode(errors="replace")
            try:
                frame = wc.parse_client_frame(raw)
            except wc.FrameError as exc:
                raise _Closed(CLOSE_BAD_REQUEST, str(exc)[:120]) from None
            if frame is not None:
                return frame

    # ---- history ----------------------------------------------------------------------

    async def _replay_start(self, v: _Visitor, tail: _Tail, stop: int, cursor: Cursor | None,
                            *, fresh: bool) -> int:
        """The first offset to replay below `stop` for this socket."""
        if fresh:
            return stop  # a new visitor has no conversation yet
        if cursor is not None:
            if cursor.offset + 1 <= stop:
                v.high = cursor.offset
                return cursor.offset + 1
            # Ahead of our tail: another process's tail may be further along, or the end
            # offset we started from was low (Tansu under-reports it after a multi-record
            # batch), or the topic was recreated and the cursor means nothing. Only the
            # record it names can tell.
            if await self._cursor_names_ours(v, tail.tp, cursor):
                v.high = cursor.offset
                return stop
        conversations = self._runtime.conversations
        try:
            await conversations.sync()
        except Unavailable as exc:
            raise _Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
        conv = conversations.get(v.conversation_id)
        if conv is None:
            return stop  # no message yet, so no delivery either
        since = max(conv.created_at - CLOCK_SKEW_MS,
                    int(time.time() * 1000) - HISTORY_WINDOW_MS)
        return await self._offset_for_time(tail.tp, since, stop)

    async def _cursor_names_ours(self, v: _Visitor, tp: TopicPartition, cursor: Cursor
                                 ) -> bool:
        """Whether the record at `cursor` is a delivery of this visitor's conversation."""
        key = v.integration_id.encode()
        async with self._replays:
            consumer = make_consumer(self._settings, group_id=None)
            try:
                async with asyncio.timeout(CURSOR_CHECK_TIMEOUT_S):
                    await consumer.start()
                    consumer.assign([tp])
                    consumer.seek(tp, cursor.offset)
                    while True:
                        batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                        for rec in batch.get(tp, ()):
                            # Past the end, the reader resets to the log start instead.
                            d = _decode(rec, key, v.integration_id)
                            return (rec.offset == cursor.offset and d is not None
                                    and d.conversation_id == v.conversation_id)
            except TimeoutError:
                return False  # nothing there (yet): not a position we ever handed out
            except KafkaError as exc:
                raise _Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
            finally:
                await consumer.stop()

    async def _offset_for_time(self, tp: TopicPartition, ts_ms: int, stop: int) -> int:
        async with self._replays:
            consumer = make_consumer(self._settings, group_id=None)
            try:
                async with asyncio.timeout(CURSOR_CHECK_TIMEOUT_S):
                    await consumer.start()
                    found = (await consumer.offsets_for_times({tp: ts_ms})).get(tp)
            except Exception as exc:
                log.warning("webchat: timestamp lookup on %s failed (%r); replaying from "
                            "the log start", tp, exc)
                return 0
            finally:
                await consumer.stop()
        if found is None:
            return stop  # nothing written since
        # Some brokers (Tansu) answer "none" as offset 0 with timestamp -1: scan it all.
        return int(found.offset) if found.timestamp >= 0 else 0

    async def _replay(self, v: _Visitor, tp: TopicPartition, start: int, stop: int) -> bool:
        """Send this conversation's deliveries in [start, stop); True if some were left out
        (more than HISTORY_MAX_MESSAGES)."""
        if start >= stop:
            return False
        frames: deque[wc.DeliveryFrame] = deque(maxlen=HISTORY_MAX_MESSAGES)
        seen = 0
        last: Cursor | None = None
        key = v.integration_id.encode()
        async with self._replays:
            consumer = make_consumer(self._settings, group_id=None,
                                     max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES)
            try:
                async with asyncio.timeout(REPLAY_TIMEOUT_S):
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
                            d = _decode(rec, key, v.integration_id)
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
                raise _Closed(CLOSE_TRY_AGAIN, "history replay timed out") from exc
            except KafkaError as exc:
                raise _Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
            finally:
                await consumer.stop()
        for frame in frames:
            await v.send(frame)
        if last is not None:
            v.high = max(v.high, last.offset)
        return seen > len(frames)

    # ---- live -------------------------------------------------------------------------

    async def _live_phase(self, v: _Visitor, tail: _Tail) -> None:
        pump = asyncio.create_task(self._pump(v, tail))
        listen = asyncio.create_task(self._listen(v))
        tasks = [pump, listen]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # re-raise _Closed / disconnects
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(self, v: _Visitor, tail: _Tail) -> None:
        """Tail → socket, in order; also heartbeats and revocation checks."""
        last_frame = time.monotonic()
        while True:
            if v.shutdown.is_set():
                raise _Closed(CLOSE_GOING_AWAY, "server shutting down")
            if tail.failed:
                raise _Closed(CLOSE_TRY_AGAIN, "stream reader failed; reconnect")
            if v.overflow:
                raise _Closed(CLOSE_TRY_AGAIN, "client too slow; reconnect")
            rec = self._runtime.registry.view.integrations.get(v.integration_id)
            refusal = self._refusal(rec, v.origin)
            if refusal is not None:
                raise _Closed(*refusal)
            while v.queue:
                offset, d = v.queue.popleft()
                if offset <= v.high:
                    continue
                v.high = offset
                frame = wc.delivery_frame(d, str(Cursor(tail.tp.partition, offset)))
                if frame is not None:
                    await v.send(frame)
                    last_frame = time.monotonic()
            if time.monotonic() - last_frame >= HEARTBEAT_S:
                await v.send(wc.PingFrame())
                last_frame = time.monotonic()
            v.wake.clear()
            if v.queue or v.overflow:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REVOCATION_CHECK_S):
                    await v.wake.wait()

    async def _listen(self, v: _Visitor) -> None:
        """Socket → activities: each message durable before its ack."""
        while True:
            frame = await self._receive(v)
            if frame is None:
                raise WebSocketDisconnect()
            if isinstance(frame, wc.HelloFrame):
                raise _Closed(CLOSE_BAD_REQUEST, "hello twice")
            if isinstance(frame, wc.MessageFrame):
                await v.send(await self._accept_message(v, frame))

    async def _accept_message(self, v: _Visitor, frame: wc.MessageFrame
                              ) -> wc.AckFrame | wc.ErrorFrame:
        if not frame.text.strip():
            return wc.ErrorFrame(code="empty_message", description="message is empty",
                                 id=frame.id)
        if not v.take_token():
            return wc.ErrorFrame(code="rate_limited", description="too many messages; wait",
                                 id=frame.id)
        rec = self._runtime.registry.view.integrations.get(v.integration_id)
        if rec is None or not rec.active:
            return wc.ErrorFrame(code="unavailable", description="web chat unavailable",
                                 id=frame.id)
        activity = wc.normalize_message(
            hub_id=rec.hub_id, integration_id=v.integration_id, visitor_id=v.visitor_id,
            name=v.name, frame=frame, now_ms=int(time.time() * 1000))
        try:
            await self._runtime.publish(activity)
        except Unavailable:
            # Not acked: the widget keeps the message and sends it again (same id).
            return wc.ErrorFrame(code="unavailable", description="could not store; retry",
                                 id=frame.id)
        return wc.AckFrame(id=frame.id, activity_id=activity.activity_id)

    # ---- tails ------------------------------------------------------------------------

    async def _acquire_tail(self, integration_id: str, tp: TopicPartition) -> _Tail:
        async with self._tails_lock:
            tail = self._tails.get(integration_id)
            if tail is None or tail.failed or tail.tp != tp:
                if tail is not None:
                    # Its sockets see `failed` (or their partition changed) and reconnect.
                    del self._tails[integration_id]
                tail = _Tail(self._runtime, tp, integration_id)
                try:
                    await tail.start()
                except Exception as exc:
                    raise _Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
                self._tails[integration_id] = tail
            tail.refs += 1
            return tail

    async def _release_tail(self, tail: _Tail) -> None:
        async with self._tails_lock:
            tail.refs -= 1
            if tail.refs > 0:
                return
            if self._tails.get(tail.integration_id) is tail:
                del self._tails[tail.integration_id]
        await tail.stop()


class WebChatPlugin(ChannelPlugin):
    channel = ChannelId.WEBCHAT

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.gateway = WebChatGateway(runtime)
        self._sender = _GatewayServed()

    @property
    def sender(self) -> _GatewayServed:
        return self._sender

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/webchat/{integrationId}", self.page, methods=["GET"]),
            Route("/webchat/{integrationId}/widget.js", self.widget, methods=["GET"]),
            WebSocketRoute("/webchat/{integrationId}/ws", self.gateway.endpoint),
        ]

    async def start(self) -> None:
        await self.gateway.start()

    async def stop(self) -> None:
        await self.gateway.stop()

    async def _webchat(self, request: Request) -> IntegrationRecord:
        iid = request.path_params["integrationId"]
        rec = await self.runtime.registry.lookup_integration(iid)
        if rec is None or rec.channel_id is not ChannelId.WEBCHAT:
            raise NotFound("integration_not_found", f"no web chat {iid}")
        return rec

    async def page(self, request: Request) -> Response:
        """A page that runs the widget full-window: to try an integration out."""
        rec = await self._webchat(request)
        values = {
            "title": rec.name,
            "integrationId": rec.integration_id,
            "widgetUrl": (f"{self.runtime.settings.public_url.rstrip('/')}"
                          f"/webchat/{rec.integration_id}/widget.js"),
        }
        body = _PLACEHOLDER.sub(lambda m: html.escape(values[m.group(1)]), _asset("page.html"))
        return Response(body, media_type="text/html; charset=utf-8", headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                "default-src 'none'; script-src 'self'; connect-src 'self'; "
                "style-src 'unsafe-inline'; img-src https: http: data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })

    async def widget(self, request: Request) -> Response:
        """The embeddable script; it finds the hub and the integration from its own URL."""
        await self._webchat(request)
        return Response(_asset("widget.js"), media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=300",
                                 "X-Content-Type-Options": "nosniff",
                                 "Cross-Origin-Resource-Policy": "cross-origin"})
