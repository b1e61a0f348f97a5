"""One stream websocket: its state, and the loops that feed it and read its acks.

Records reach a socket in order, first those below the fan-out's live end (a catch-up
reader of its own, in one of `stream_catchup_concurrency` slots), then the fan-out's
(`stream_fanout`). Each send is awaited, so a slow client stalls only itself; past
`stream_max_queued` waiting live records it is closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from starlette.websockets import WebSocket

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.kafka import make_consumer
from switchboard.keys import hash_token, looks_like_access_token, tokens_equal
from switchboard.model import DirectEnvelope, delivery_decoder
from switchboard.record_mac import guard_for
from switchboard.registry import IntegrationRecord
from switchboard.services.stream_fanout import Subscriber
from switchboard.services.stream_protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_NOT_FOUND,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    MAX_CLIENT_FRAME_CHARS,
    MAX_PARTITION_FETCH_BYTES,
    PING,
    Cursor,
    DeliveryFrame,
    client_decoder,
    encoder,
    parse_cursor,
)
from switchboard.settings import Settings
from switchboard.store import RegistryStore

log = logging.getLogger(__name__)

# Records a catch-up reader hands over per poll.
MAX_RECORDS_PER_POLL = 100


class Refusal(NamedTuple):
    code: int
    reason: str


async def authorize(registry: RegistryStore, admin_token: str, token: str,
                    integration_id: str) -> tuple[IntegrationRecord, str | None] | Refusal:
    """The integration a socket with `token` may read, and the token's hash (None for the
    admin token, which reads any); a Refusal otherwise. Another hub's integration is
    refused exactly like a missing one."""
    is_admin = bool(admin_token and tokens_equal(token, admin_token))
    token_hash = None if is_admin else hash_token(token)
    # The token before any registry look-up (a broker round trip on a miss): only a token
    # this view knows, or one shaped like an access token, goes further.
    if token_hash is not None and registry.view.hub_for_token_hash(token_hash) is None \
            and not looks_like_access_token(token):
        return Refusal(CLOSE_UNAUTHORIZED, "invalid access token")
    try:
        # Then the integration, so a just-created hub and integration are both in view.
        rec = await registry.lookup_integration(integration_id)
        if token_hash is not None and registry.view.hub_for_token_hash(token_hash) is None:
            await registry.sync()  # a hub created through another process just now
    except Exception:
        return Refusal(CLOSE_TRY_AGAIN, "registry unavailable")
    if token_hash is not None:
        hub = registry.view.hub_for_token_hash(token_hash)
        if hub is None:
            return Refusal(CLOSE_UNAUTHORIZED, "invalid access token")
        if rec is not None and rec.hub_id != hub.hub_id:
            rec = None
    if rec is None:
        return Refusal(CLOSE_NOT_FOUND, "unknown integration")
    return rec, token_hash


class Connection:
    """One accepted websocket's state."""

    def __init__(self, ws: WebSocket, integration_id: str, hub_id: str,
                 token_hash: str | None, tp: TopicPartition, start: Cursor,
                 subprotocol: str | None, max_queued: int) -> None:
        self.ws = ws
        self.subprotocol = subprotocol
        self.sub = Subscriber(max_queued)
        self.integration_id = integration_id
        self.hub_id = hub_id
        self.token_hash = token_hash  # None when admitted with the admin token
        self.tp = tp
        self.start = start
        self.high = start.offset  # highest offset this connection has passed (sent or skipped)
        self.acked: Cursor | None = None
        self.closing = False  # the client left; its last ack is being written
        self.written: Cursor | None = None
        self.ack_event = asyncio.Event()
        self.shutdown = asyncio.Event()
        self.done = asyncio.Event()


class ConnectionIO:
    """Moves one connection's records to its socket and its acks back."""

    def __init__(self, settings: Settings, *, heartbeat_s: float,
                 revoked: Callable[[Connection], Refusal | None]) -> None:
        self.settings = settings
        self._guard = guard_for(settings)  # refuses records without a valid MAC
        self.heartbeat_s = heartbeat_s
        self.revoked = revoked
        self.catchups = asyncio.Semaphore(settings.stream_catchup_concurrency)
        self.catchup_readers = 0  # catch-up consumers running now
        self._stopping: set[asyncio.Task[None]] = set()

    async def pump(self, conn: Connection, live_from: int) -> Refusal | None:
        """Kafka → socket, in order: first what lies below the live end, then live."""
        if conn.start.offset + 1 < live_from:
            refusal = await self._catch_up(conn, live_from)
            if refusal is not None:
                return refusal
        return await self._pump_live(conn)

    async def _catch_up(self, conn: Connection, stop: int) -> Refusal | None:
        """Send this integration's deliveries from after the start cursor up to `stop` (where
        the fan-out took over) with a reader of its own, in one of the catch-up slots."""
        try:
            async with asyncio.timeout(self.settings.stream_catchup_wait_s):
                await self.catchups.acquire()
        except TimeoutError:
            return Refusal(CLOSE_TRY_AGAIN, "busy; reconnect later")
        key = conn.integration_id.encode()
        self.catchup_readers += 1
        consumer = make_consumer(self.settings, group_id=None,
                                 max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES)
        try:
            async with asyncio.timeout(self.settings.stream_catchup_timeout_s):
                await consumer.start()
                consumer.assign([conn.tp])
                position = conn.start.offset + 1
                consumer.seek(conn.tp, position)
                while position < stop:
                    revoked = self.revoked(conn)
                    if revoked is not None:
                        return revoked
                    if conn.sub.overflow:
                        return Refusal(CLOSE_TRY_AGAIN, "client too slow; reconnect")
                    batch = await consumer.getmany(conn.tp, timeout_ms=500,
                                                   max_records=MAX_RECORDS_PER_POLL)
                    for rec in batch.get(conn.tp, ()):
                        if rec.offset >= stop:
                            position = stop
                            break
                        position = rec.offset + 1
                        if rec.key == key:
                            # Before the send: the client may ack it before send_text returns.
                            conn.high = rec.offset
                            frame = self._frame(conn, rec)
                            if frame is not None:
                                await conn.ws.send_text(frame)
                    if not batch and position < stop:
                        # The range may start below the log start (retention).
                        position = max(position, int(await consumer.position(conn.tp)))
        except TimeoutError:
            return Refusal(CLOSE_TRY_AGAIN, "catch-up too slow; reconnect")
        except KafkaError as exc:
            log.warning("stream %s: catch-up failed: %r", conn.integration_id, exc)
            return Refusal(CLOSE_TRY_AGAIN, "broker unavailable")
        finally:
            # aiokafka's stop() swallows a cancellation that lands inside it: stop the
            # reader in a task of its own, so cancelling this socket's pump still works.
            stopping = asyncio.create_task(self._stop_reader(consumer))
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            await asyncio.shield(stopping)
        return None

    async def _stop_reader(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await consumer.stop()
        finally:
            self.catchup_readers -= 1
            self.catchups.release()

    async def _pump_live(self, conn: Connection) -> Refusal | None:
        """The fan-out's records → socket, in order; a slow client stalls only itself and,
        past `stream_max_queued` waiting records, is closed."""
        sub = conn.sub
        last_frame = time.monotonic()
        while True:
            revoked = self.revoked(conn)
            if revoked is not None:
                return revoked
            if sub.failed:
                return Refusal(CLOSE_TRY_AGAIN, "stream reader failed; reconnect")
            if sub.overflow:
                return Refusal(CLOSE_TRY_AGAIN, "client too slow; reconnect")
            while sub.queue and not sub.overflow:
                rec = sub.queue.popleft()
                if rec.offset <= conn.high:
                    continue
                conn.high = rec.offset
                frame = self._frame(conn, rec)
                if frame is not None:
                    await conn.ws.send_text(frame)
                    last_frame = time.monotonic()
            if time.monotonic() - last_frame >= self.heartbeat_s:
                await conn.ws.send_text(PING)
                last_frame = time.monotonic()
            sub.wake.clear()
            if sub.queue or sub.overflow or sub.failed:
                continue
            wait_s = min(1.0, max(0.05, self.heartbeat_s - (time.monotonic() - last_frame)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await sub.wake.wait()

    def _frame(self, conn: Connection, rec: ConsumerRecord[bytes, bytes]) -> str | None:
        if rec.value is None:
            return None
        if self._guard is not None and not self._guard.admit_record(rec):
            return None  # not written by this hub (switchboard.record_mac)
        try:
            d = delivery_decoder.decode(rec.value)
        except msgspec.DecodeError:
            # A record we cannot read must not stop the stream (it may be from a newer version).
            log.warning("stream %s: unreadable delivery at %s:%d",
                        conn.integration_id, rec.partition, rec.offset)
            return None
        if d.destination_id != conn.integration_id or d.hub_id != conn.hub_id:
            log.warning("stream %s: delivery %s at %s:%d is for %s/%s; skipped",
                        conn.integration_id, d.delivery_id, rec.partition, rec.offset,
                        d.hub_id, d.destination_id)
            return None
        envelope = DirectEnvelope(hub_id=d.hub_id, integration_id=d.destination_id,
                                  conversation_id=d.conversation_id, activity=d.activity)
        frame = DeliveryFrame(cursor=str(Cursor(rec.partition, rec.offset)),
                              webhook_id=d.delivery_id, payload=envelope)
        return encoder.encode(frame).decode()

    async def listen(self, conn: Connection) -> Refusal | None:
        """Socket → acks. Returns when the client leaves (None) or breaks the protocol."""
        while True:
            msg = await conn.ws.receive()
            if msg["type"] == "websocket.disconnect":
                conn.closing = True
                return None
            raw = msg.get("text")
            if raw is None:
                data = msg.get("bytes") or b""
                raw = data.decode(errors="replace")
            if len(raw) > MAX_CLIENT_FRAME_CHARS:
                return Refusal(CLOSE_BAD_REQUEST, "frame too large")
            try:
                # Depth-limited: a frame nested 2,000 deep is refused, not a RecursionError.
                frame = jsonsafe.decode(raw, client_decoder)
            except BadRequest:
                return Refusal(CLOSE_BAD_REQUEST, "malformed frame")
            if frame.type != "ack":
                continue  # room for future frame types (pong, …)
            cursor = parse_cursor(frame.cursor or "")
            if cursor is None or cursor.partition != conn.tp.partition:
                return Refusal(CLOSE_BAD_REQUEST, "malformed ack cursor")
            if cursor.offset > conn.high:
                # Acking what was never sent would silently skip deliveries.
                return Refusal(CLOSE_BAD_REQUEST, "ack of a cursor not delivered yet")
            conn.acked = cursor
            conn.ack_event.set()
