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

This module holds the gateway: its lifecycle, admission and the session a hello opens.
Its parts: `webchat_admission` (refusals, socket limits), `webchat_socket` (the frames of
a socket: hello, then pump and listener), `webchat_tails` (the shared tails),
`webchat_feed` (visitor state, tail, history replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard import clock, supervision
from switchboard.ids import customer_conversation_id
from switchboard.kafka import DELIVERIES
from switchboard.providers import webchat as wc
from switchboard.services.channels.webchat_admission import (
    CLOSE_FORBIDDEN,
    Refusal,
    SocketLimits,
    refusal,
)
from switchboard.services.channels.webchat_feed import Closed, History, Visitor
from switchboard.services.channels.webchat_socket import VisitorIO
from switchboard.services.channels.webchat_tails import Tails
from switchboard.services.runtime import Runtime
from switchboard.services.stream_protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_INTERNAL,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    Cursor,
    parse_cursor,
)

__all__ = ["WebChatGateway"]

log = logging.getLogger(__name__)


class WebChatGateway:
    """Serves the widget's websockets from the `deliveries` topic."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._deliveries = self._settings.topic(DELIVERIES)
        self._tails = Tails(runtime)
        self.history = History(runtime)
        self._sockets = SocketLimits(self._settings)
        self._partitioner = DefaultPartitioner()
        own = wc.public_origin(self._settings.public_url)
        self._own_origins = [own] if own else []
        self._io = VisitorIO(runtime, self._own_origins)
        self._started = False
        self._unobserve: Callable[[], None] = lambda: None

    async def start(self) -> None:
        # Tails start with a socket, outside the start-up context: they are watched by the
        # supervisor of this start (a dead tail fails liveness).
        self._tails.supervisor = supervision.current.get()
        self._started = True
        self._unobserve = self._runtime.metrics.observe(
            "switchboard_websocket_connections", "Open websocket connections, by endpoint.",
            ("endpoint",), lambda: [(("webchat",), float(self._sockets.total()))])

    async def stop(self) -> None:
        self._started = False
        self._unobserve()
        visitors = [v for vs in self._sockets.live.values() for v in vs]
        for v in visitors:
            v.shutdown.set()
            v.wake.set()
        if visitors:
            await asyncio.wait([asyncio.create_task(v.done.wait()) for v in visitors],
                               timeout=5)
        await self._tails.stop()

    def connection_count(self, integration_id: str) -> int:
        return self._sockets.connection_count(integration_id)

    def address_connection_count(self, host: str) -> int:
        return self._sockets.address_connection_count(host)

    def tail_count(self) -> int:
        return len(self._tails)

    # ---- admission ------------------------------------------------------------------

    async def endpoint(self, ws: WebSocket) -> None:
        admitted = await self._admit(ws)
        if isinstance(admitted, Refusal):
            with contextlib.suppress(Exception):
                # Accept first: a browser never sees the HTTP status of a refused handshake.
                await ws.accept()
                await ws.close(admitted.code, admitted.reason)
            return
        v = admitted
        close: Refusal | None = None
        try:
            await ws.accept()
            await self._serve(v)
        except Closed as exc:
            close = Refusal(exc.code, exc.reason)
        except (WebSocketDisconnect, OSError):
            pass
        except Exception:
            log.exception("webchat %s: socket failed", v.integration_id)
            close = Refusal(CLOSE_INTERNAL, "internal error")
        finally:
            if close is not None and ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(close.code, close.reason)
            self._sockets.release(v)
            v.done.set()

    async def _admit(self, ws: WebSocket) -> Visitor | Refusal:
        if not self._started:
            return Refusal(CLOSE_TRY_AGAIN, "gateway not started")
        iid: str = ws.path_params["integrationId"]
        origin = ws.headers.get("origin")
        try:
            rec = await self._runtime.registry.lookup_integration(iid)
        except Exception:
            return Refusal(CLOSE_TRY_AGAIN, "registry unavailable")
        refused = refusal(rec, origin, self._own_origins)
        if refused is not None:
            if refused.code == CLOSE_FORBIDDEN:
                log.info("webchat %s: origin %r refused", iid, (origin or "")[:200])
            return refused
        assert rec is not None and origin is not None
        return self._sockets.admit(ws, iid, rec.hub_id, origin)

    async def _partition_of(self, integration_id: str) -> int:
        """The partition the producer's default partitioner puts this key in."""
        parts = sorted(await self._runtime.producer.partitions_for(self._deliveries))
        partition: int = self._partitioner(integration_id.encode(), parts, parts)
        return partition

    # ---- one socket -------------------------------------------------------------------

    async def _serve(self, v: Visitor) -> None:
        hello = await self._io.hello(v)
        now_ms = clock.now_ms()
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
            wait = self._sockets.new_visitor(v, time.monotonic())
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
        tail = await self._tails.acquire(v.integration_id,
                                         TopicPartition(self._deliveries, partition))
        try:
            stop = tail.subscribe(v)
            start = await self.history.start(v, tail.tp, stop, cursor, fresh=not resumed)
            truncated = await self.history.replay(v, tail.tp, start, stop)
            ready = str(Cursor(partition, v.high)) if v.high >= 0 else None
            await v.send(wc.ReadyFrame(cursor=ready, truncated=truncated))
            await self._io.live(v, tail)
        finally:
            tail.unsubscribe(v)
            await self._tails.release(tail)
