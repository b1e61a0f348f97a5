"""The WebChat gateway: the widget's websocket, ``GET /webchat/{integrationId}/ws``.

Inbound, a visitor's message becomes a ``message:customer`` activity, published durably
before the browser gets its ``ack``. Outbound, deliveries to a WebChat integration are not
sent by the deliverer (the plugin's `sender` marks them final at once); they are read here
from the integration's partition of `deliveries` (key = integration id), where the router
put them in order: one shared tail per (integration, process), then a bounded history
replay per socket (`webchat_feed`).

Anyone may open a socket and become a visitor (the Origin header is no authentication: a
non-browser client sends any), so every limit is keyed by what a client cannot choose:
its network address (`switchboard.socket_policy.address_key`; behind a proxy, the one the
trusted proxy names), the integration and the process. Per process: at most
`webchat_max_sockets_per_address` sockets per address and
`webchat_max_sockets_per_integration` per integration; new visitors (a hello without a
session: what creates a conversation) at `webchat_visitor_rate_per_address_per_s` per
address and `webchat_visitor_rate_per_integration_per_s` per integration (token buckets);
a socket that sends no hello within `webchat_hello_timeout_s` is closed (4408).

Close codes (the socket is accepted first, so the browser learns the code): 4400 broken
protocol, 4401 invalid session token (the widget then starts over as a new visitor),
4403 Origin not allowed, 4404 unknown integration (or not WebChat), 4408 no hello in
time, 4409 integration paused, 4429 too many sockets (for the address or the integration)
or too many new visitors, 1013 try again (broker unavailable, history busy or too slow,
client too slow), 1011 internal error, 1001 server shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard import supervision
from switchboard.channels import WebChatConfig
from switchboard.errors import Unavailable
from switchboard.ids import customer_conversation_id
from switchboard.kafka import DELIVERIES
from switchboard.model import ChannelId
from switchboard.providers import webchat as wc
from switchboard.registry import IntegrationRecord
from switchboard.services.channels.webchat_feed import Closed, History, Tail, Visitor
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
    Cursor,
    parse_cursor,
)
from switchboard.socket_policy import SocketCounter, VisitorLimits, address_key
from switchboard.supervision import Supervisor

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_TIMEOUT = 4408
CLOSE_PAUSED = 4409

REVOCATION_CHECK_S = 1.0


class _Refusal(NamedTuple):
    code: int
    reason: str


class WebChatGateway:
    """Serves the widget's websockets from the `deliveries` topic."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._deliveries = self._settings.topic(DELIVERIES)
        self._tails: dict[str, Tail] = {}
        self._tails_lock = asyncio.Lock()
        self.history = History(runtime)
        self._live: dict[str, set[Visitor]] = {}
        settings = self._settings
        self._per_address = SocketCounter(settings.webchat_max_sockets_per_address)
        self._visitors = VisitorLimits(
            per_address_rate=settings.webchat_visitor_rate_per_address_per_s,
            per_address_burst=settings.webchat_visitor_burst_per_address,
            per_integration_rate=settings.webchat_visitor_rate_per_integration_per_s,
            per_integration_burst=settings.webchat_visitor_burst_per_integration)
        self._partitioner = DefaultPartitioner()
        own = wc.public_origin(self._settings.public_url)
        self._own_origins = [own] if own else []
        self._started = False
        self._supervisor: Supervisor | None = None
        self._unobserve: Callable[[], None] = lambda: None

    async def start(self) -> None:
        # Tails start with a socket, outside the start-up context: they are watched by the
        # supervisor of this start (a dead tail fails liveness).
        self._supervisor = supervision.current.get()
        self._started = True
        self._unobserve = self._runtime.metrics.observe(
            "switchboard_websocket_connections", "Open websocket connections, by endpoint.",
            ("endpoint",), lambda: [(("webchat",), float(sum(map(len, self._live.values()))))])

    async def stop(self) -> None:
        self._started = False
        self._unobserve()
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

    def address_connection_count(self, host: str) -> int:
        return self._per_address.count(address_key(host))

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
        except Closed as exc:
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
            self._per_address.release(v.address)
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

    async def _admit(self, ws: WebSocket) -> Visitor | _Refusal:
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
        live = self._live.get(iid, set())
        if len(live) >= self._settings.webchat_max_sockets_per_integration:
            return _Refusal(CLOSE_TOO_MANY, "too many visitors connected")
        address = address_key(ws.client.host if ws.client else None)
        if not self._per_address.acquire(address):
            log.info("webchat %s: too many sockets from one address", iid)
            return _Refusal(CLOSE_TOO_MANY, "too many sockets from this address")
        v = Visitor(ws, iid, rec.hub_id, origin, address)
        self._live.setdefault(iid, set()).add(v)
        return v

    async def _partition_of(self, integration_id: str) -> int:
        """The partition the producer's default partitioner puts this key in."""
        parts = sorted(await self._runtime.producer.partitions_for(self._deliveries))
        partition: int = self._partitioner(integration_id.encode(), parts, parts)
        return partition

    # ---- one socket -------------------------------------------------------------------

    async def _serve(self, v: Visitor) -> None:
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
                raise Closed(CLOSE_UNAUTHORIZED, "invalid session")
            v.visitor_id = session.visitor_id
        else:
            # A new visitor is what creates a conversation: rate-limited per address and
            # per integration (whatever the Origin says).
            wait = self._visitors.new_visitor(v.address, v.integration_id, time.monotonic())
            if wait is not None:
                raise Closed(CLOSE_TOO_MANY, f"too many new visitors; retry in {wait:.0f} s")
            v.visitor_id = wc.new_visitor_id()
        # A fresh token on every visit: a session expires after a TTL without visits.
        token = wc.issue_session(self._runtime.session_sealer, v.integration_id, v.visitor_id,
                                 now_ms)
        v.conversation_id = customer_conversation_id(v.integration_id, v.visitor_id)
        v.name = hello.name.strip() if hello.name and hello.name.strip() else None
        cursor = parse_cursor(hello.cursor) if hello.cursor is not None else None
        if hello.cursor is not None and cursor is None:
            raise Closed(CLOSE_BAD_REQUEST, "malformed cursor; expected P:O")
        try:
            partition = await self._partition_of(v.integration_id)
        except Exception as exc:
            raise Closed(CLOSE_TRY_AGAIN, "deliveries topic unavailable") from exc
        if cursor is not None and cursor.partition != partition:
            cursor = None  # from before a partition-count change: replay the conversation
        await v.send(wc.SessionFrame(session=token, visitor_id=v.visitor_id,
                                     conversation_id=v.conversation_id,
                                     resumed=resumed))
        tail = await self._acquire_tail(v.integration_id, TopicPartition(self._deliveries,
                                                                         partition))
        try:
            stop = tail.subscribe(v)
            start = await self.history.start(v, tail.tp, stop, cursor, fresh=not resumed)
            truncated = await self.history.replay(v, tail.tp, start, stop)
            ready = str(Cursor(partition, v.high)) if v.high >= 0 else None
            await v.send(wc.ReadyFrame(cursor=ready, truncated=truncated))
            await self._live_phase(v, tail)
        finally:
            tail.unsubscribe(v)
            await self._release_tail(tail)

    async def _hello(self, v: Visitor) -> wc.HelloFrame:
        try:
            async with asyncio.timeout(self._settings.webchat_hello_timeout_s):
                while True:
                    frame = await self._receive(v)
                    if frame is None:
                        raise WebSocketDisconnect()
                    if isinstance(frame, wc.HelloFrame):
                        return frame
                    if isinstance(frame, wc.MessageFrame):
                        raise Closed(CLOSE_BAD_REQUEST, "hello first")
        except TimeoutError:
            raise Closed(CLOSE_TIMEOUT, "no hello") from None

    @staticmethod
    async def _receive(v: Visitor) -> wc.ClientFrame | None:
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
                raise Closed(CLOSE_BAD_REQUEST, str(exc)[:120]) from None
            if frame is not None:
                return frame

    # ---- live -------------------------------------------------------------------------

    async def _live_phase(self, v: Visitor, tail: Tail) -> None:
        pump = asyncio.create_task(self._pump(v, tail))
        listen = asyncio.create_task(self._listen(v))
        tasks = [pump, listen]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # re-raise Closed / disconnects
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(self, v: Visitor, tail: Tail) -> None:
        """Tail → socket, in order; also heartbeats and revocation checks."""
        last_frame = time.monotonic()
        while True:
            if v.shutdown.is_set():
                raise Closed(CLOSE_GOING_AWAY, "server shutting down")
            if tail.failed:
                raise Closed(CLOSE_TRY_AGAIN, "stream reader failed; reconnect")
            if v.overflow:
                raise Closed(CLOSE_TRY_AGAIN, "client too slow; reconnect")
            rec = self._runtime.registry.view.integrations.get(v.integration_id)
            refusal = self._refusal(rec, v.origin)
            if refusal is not None:
                raise Closed(*refusal)
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

    async def _listen(self, v: Visitor) -> None:
        """Socket → activities: each message durable before its ack."""
        while True:
            frame = await self._receive(v)
            if frame is None:
                raise WebSocketDisconnect()
            if isinstance(frame, wc.HelloFrame):
                raise Closed(CLOSE_BAD_REQUEST, "hello twice")
            if isinstance(frame, wc.MessageFrame):
                await v.send(await self._accept_message(v, frame))

    async def _accept_message(self, v: Visitor, frame: wc.MessageFrame
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

    async def _acquire_tail(self, integration_id: str, tp: TopicPartition) -> Tail:
        async with self._tails_lock:
            tail = self._tails.get(integration_id)
            if tail is None or tail.failed or tail.tp != tp:
                if tail is not None:
                    # Its sockets see `failed` (or their partition changed) and reconnect.
                    del self._tails[integration_id]
                tail = Tail(self._runtime, tp, integration_id, self._supervisor)
                try:
                    await tail.start()
                except Exception as exc:
                    raise Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
                self._tails[integration_id] = tail
            tail.refs += 1
            return tail

    async def _release_tail(self, tail: Tail) -> None:
        async with self._tails_lock:
            tail.refs -= 1
            if tail.refs > 0:
                return
            if self._tails.get(tail.integration_id) is tail:
                del self._tails[tail.integration_id]
        await tail.stop()
