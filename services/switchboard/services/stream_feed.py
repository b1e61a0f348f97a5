"""``/v1/integrations/{integrationId}/feed``: a read-only live view of what reaches one
integration (the console's activity feed), served by the stream gateway.

Any integration can be watched (the delivery stream serves only Direct integrations
without a webhookUrl): the feed shows each delivery to it as it is routed, whatever
becomes of it. It takes nothing: no acks, no stored cursor, no catch-up reader. Feeds
subscribe to the gateway's one Kafka consumer (`stream_fanout`) from the live end, count
against the gateway's sockets per hub and against `stream_max_connections_per_integration`
feeds per integration, and a feed that does not read is closed past `stream_max_queued`
waiting records, as a stream is.

A browser cannot set headers on a websocket, and the token must travel neither in the URL
(it would land in logs) nor in a cookie (a cross-site page could ride on it): the first
frame carries it, ``{"type":"auth","token":"…"}``, within `FEED_AUTH_TIMEOUT_S`. Only
then is anything looked up.

Server → client: ``{"type":"ready"}``, then ``{"type":"activity","cursor":"P:O",
"deliveryId","conversationId","activity":{…}}`` per delivery, ``{"type":"ping"}`` when
idle. Close codes: 4400 bad first frame, 4401 bad token, 4404 unknown or another hub's
integration (also when deleted meanwhile), 4408 no auth frame in time, 4429 too many
sockets, 1009 frame too big, 1013 try again, 1001 shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiokafka.structs import TopicPartition
from msgspec import Struct
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.model import Activity, delivery_decoder
from switchboard.services.stream_connection import Refusal, authorize
from switchboard.services.stream_fanout import Subscriber
from switchboard.services.stream_protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_GOING_AWAY,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    MAX_CLIENT_FRAME_CHARS,
    PING,
    Cursor,
    encoder,
)
from switchboard.socket_policy import SocketCounter, address_key

if TYPE_CHECKING:
    from switchboard.services.stream import StreamGateway

log = logging.getLogger(__name__)

FEED_PATH = "/v1/integrations/{integrationId}/feed"
FEED_AUTH_TIMEOUT_S = 5.0
# Sockets one client address may hold before they authenticate (each at most
# FEED_AUTH_TIMEOUT_S): anyone can open one, so they are bounded before any token is seen.
FEED_UNAUTHENTICATED_PER_ADDRESS = 16
CLOSE_AUTH_TIMEOUT = 4408


class AuthFrame(Struct):
    type: str
    token: str | None = None


class FeedReady(Struct, tag="ready", tag_field="type"):
    pass


class FeedActivity(Struct, tag="activity", tag_field="type", rename="camel"):
    cursor: str
    delivery_id: str
    conversation_id: str
    activity: Activity


_auth_decoder = msgspec.json.Decoder(AuthFrame)
READY = encoder.encode(FeedReady()).decode()


class _Feed:
    def __init__(self, ws: WebSocket, integration_id: str, hub_id: str,
                 token_hash: str | None, max_queued: int) -> None:
        self.ws = ws
        self.integration_id = integration_id
        self.hub_id = hub_id
        self.token_hash = token_hash  # None when opened with the admin token
        self.sub = Subscriber(max_queued)
        self.shutdown = asyncio.Event()
        self.done = asyncio.Event()


class FeedEndpoint:
    """The feed websocket of one stream gateway (sharing its fan-out and hub budget)."""

    def __init__(self, gateway: StreamGateway, *, heartbeat_s: float) -> None:
        self._gateway = gateway
        self._settings = gateway._settings
        self._per_integration = SocketCounter(
            self._settings.stream_max_connections_per_integration)
        self._heartbeat_s = heartbeat_s
        self._unauthenticated = SocketCounter(FEED_UNAUTHENTICATED_PER_ADDRESS)
        self._live: set[_Feed] = set()

    def count(self, integration_id: str) -> int:
        """Feeds open on `integration_id` in this process."""
        return self._per_integration.count(integration_id)

    def open_feeds(self) -> int:
        """Feeds open in this process."""
        return len(self._live)

    async def stop(self) -> None:
        """Close every feed (1001)."""
        feeds = list(self._live)
        for f in feeds:
            f.shutdown.set()
        if feeds:
            await asyncio.wait([asyncio.create_task(f.done.wait()) for f in feeds], timeout=5)

    async def endpoint(self, ws: WebSocket) -> None:
        # Accepted first: a refusal must reach the browser as a close code (a refused
        # handshake is only ever 1006 to it), and the token comes in a frame anyway.
        await ws.accept()
        address = address_key(ws.client.host if ws.client else None)
        if not self._unauthenticated.acquire(address):
            await _close(ws, Refusal(CLOSE_TOO_MANY, "too many sockets from this address"))
            return
        try:
            admitted = await self._admit(ws)
        except (WebSocketDisconnect, OSError):
            return
        finally:
            self._unauthenticated.release(address)
        if isinstance(admitted, Refusal):
            await _close(ws, admitted)
            return
        feed = admitted
        self._live.add(feed)
        try:
            await self._serve(feed)
        finally:
            self._live.discard(feed)
            self._per_integration.release(feed.integration_id)
            self._gateway._per_hub.release(feed.hub_id)
            feed.done.set()

    async def _admit(self, ws: WebSocket) -> _Feed | Refusal:
        gateway = self._gateway
        if not gateway._started:
            return Refusal(CLOSE_TRY_AGAIN, "gateway not started")
        try:
            async with asyncio.timeout(FEED_AUTH_TIMEOUT_S):
                msg = await ws.receive()
        except TimeoutError:
            return Refusal(CLOSE_AUTH_TIMEOUT, "send {\"type\":\"auth\",\"token\":…} first")
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        raw = msg.get("text") or (msg.get("bytes") or b"").decode(errors="replace")
        if len(raw) > MAX_CLIENT_FRAME_CHARS:
            return Refusal(CLOSE_BAD_REQUEST, "frame too large")
        try:
            frame = jsonsafe.decode(raw, _auth_decoder)
        except BadRequest:
            return Refusal(CLOSE_BAD_REQUEST, "malformed frame")
        if frame.type != "auth" or not frame.token:
            return Refusal(CLOSE_UNAUTHORIZED, "the first frame must be auth with a token")
        token = frame.token
        iid: str = ws.path_params["integrationId"]
        authorized = await authorize(gateway._runtime.registry, self._settings.admin_token,
                                     token, iid)
        if isinstance(authorized, Refusal):
            return authorized
        rec, token_hash = authorized
        if not self._per_integration.acquire(iid):
            return Refusal(CLOSE_TOO_MANY, "too many feeds for this integration")
        if not gateway._per_hub.acquire(rec.hub_id):
            self._per_integration.release(iid)
            return Refusal(CLOSE_TOO_MANY, "too many sockets for this hub")
        return _Feed(ws, iid, rec.hub_id, token_hash, self._settings.stream_max_queued)

    def _revoked(self, feed: _Feed) -> Refusal | None:
        view = self._gateway._runtime.registry.view
        rec = view.integrations.get(feed.integration_id)
        if rec is None:
            return Refusal(CLOSE_NOT_FOUND, "integration deleted")
        if feed.token_hash is not None:
            hub = view.hub_for_token_hash(feed.token_hash)
            if hub is None or hub.hub_id != feed.hub_id:
                return Refusal(CLOSE_UNAUTHORIZED, "access token revoked")
        return None

    async def _serve(self, feed: _Feed) -> None:
        gateway = self._gateway
        key = feed.integration_id.encode()
        try:
            partition = await gateway._partition_of(feed.integration_id)
            tp = TopicPartition(gateway._deliveries, partition)
            fanout = gateway._current_fanout()
            await fanout.subscribe(feed.sub, tp, key)
        except Exception as exc:
            log.warning("feed %s: cannot follow deliveries: %r", feed.integration_id, exc)
            await _close(feed.ws, Refusal(CLOSE_TRY_AGAIN, "broker unavailable"))
            return
        tasks: list[asyncio.Task[Any]] = []
        close: Refusal | None = None
        try:
            await feed.ws.send_text(READY)
            pump = asyncio.create_task(self._pump(feed))
            listen = asyncio.create_task(_drain(feed.ws))
            shutdown = asyncio.create_task(feed.shutdown.wait())
            gone = asyncio.create_task(feed.sub.gone.wait())
            tasks = [pump, listen, shutdown, gone]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if shutdown in done:
                close = Refusal(CLOSE_GOING_AWAY, "server shutting down")
            elif gone in done:
                close = Refusal(CLOSE_TRY_AGAIN, "client too slow; reconnect"
                                if feed.sub.overflow else "stream reader failed; reconnect")
            elif pump in done and pump.exception() is None:
                close = pump.result()
        except (WebSocketDisconnect, OSError):
            pass
        finally:
            fanout.unsubscribe(feed.sub, tp, key)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if close is not None:
                await _close(feed.ws, close)

    async def _pump(self, feed: _Feed) -> Refusal | None:
        sub = feed.sub
        guard = self._gateway._runtime.records
        last_frame = time.monotonic()
        while True:
            revoked = self._revoked(feed)
            if revoked is not None:
                return revoked
            while sub.queue and not sub.overflow:
                rec = sub.queue.popleft()
                if rec.value is None or (guard is not None and not guard.admit_record(rec)):
                    continue
                try:
                    d = delivery_decoder.decode(rec.value)
                except msgspec.DecodeError:
                    continue
                if d.destination_id != feed.integration_id or d.hub_id != feed.hub_id:
                    continue
                frame = FeedActivity(cursor=str(Cursor(rec.partition, rec.offset)),
                                     delivery_id=d.delivery_id,
                                     conversation_id=d.conversation_id, activity=d.activity)
                await feed.ws.send_text(encoder.encode(frame).decode())
                last_frame = time.monotonic()
            if time.monotonic() - last_frame >= self._heartbeat_s:
                await feed.ws.send_text(PING)
                last_frame = time.monotonic()
            sub.wake.clear()
            if sub.queue or sub.overflow or sub.failed:
                if sub.overflow or sub.failed:
                    return None  # `gone` is set: the caller closes with 1013
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await sub.wake.wait()


async def _drain(ws: WebSocket) -> None:
    """Read and drop what the client sends after auth, until it leaves."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return


async def _close(ws: WebSocket, refusal: Refusal) -> None:
    with contextlib.suppress(Exception):
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.close(refusal.code, refusal.reason)
