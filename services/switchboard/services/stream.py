"""The stream gateway: websocket delivery for Direct integrations that have no webhookUrl.

Deliveries for one destination sit in one partition of the `deliveries` topic (keyed by
the destination's integration id), in order. Each websocket gets its own partition reader
positioned by a cursor ``"{partition}:{offset}"``; the client acks cursors, and the latest
ack per integration lives in the compacted `stream-cursors` topic, which every gateway
process folds into memory. A client that reconnects without a cursor resumes after its
last ack; anything not acked may be sent again (at-least-once).

Frames (JSON text), server → client:

- ``{"type":"ready","cursor":"P:O"}``: streaming resumes strictly after this cursor
  (``"P:-1"`` means from the beginning of partition P).
- ``{"type":"delivery","cursor":"P:O","webhookId":…,"payload":<DirectEnvelope>}``.
- ``{"type":"ping"}`` after ~20 s without any other frame.

Client → server: ``{"type":"ack","cursor":"P:O"}``; other types are ignored.

Refusals (decided before the socket is accepted; it is then accepted only to carry the
code, since browsers never see the HTTP status of a refused handshake): 4400 malformed
cursor or frame, 4401 bad or missing token, 4404 unknown integration or another hub's,
4409 not a Direct integration or it has a webhookUrl, 4429 too many sockets for the
integration, 1013 not ready (broker or registry unavailable); 1001 on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any, NamedTuple

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from msgspec import Struct
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard.kafka import DELIVERIES, STREAM_CURSORS, TableReader, make_consumer
from switchboard.keys import hash_token, tokens_equal
from switchboard.model import ChannelId, DirectEnvelope, delivery_decoder
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/integrations/{integrationId}/stream"

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409
CLOSE_TOO_MANY = 4429

HEARTBEAT_S = 20.0
ACK_COALESCE_S = 0.1
# Records handed over per poll; together with the consumer's one fetch buffer this bounds
# what a connection holds while it waits for a slow client.
MAX_RECORDS_PER_POLL = 100
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
MAX_CLIENT_FRAME_CHARS = 4096
REGISTRY_SYNC_TIMEOUT_S = 2.0

_CURSOR_RE = re.compile(r"^(0|[1-9][0-9]{0,8}):(-1|0|[1-9][0-9]{0,18})$")


class Cursor(NamedTuple):
    """A position in the deliveries topic; offset -1 means "before the first record"."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_cursor(text: str) -> Cursor | None:
    """``"P:O"`` → Cursor, or None if malformed."""
    m = _CURSOR_RE.match(text)
    return Cursor(int(m.group(1)), int(m.group(2))) if m else None


class StoredCursor(Struct, rename="camel"):
    """A value of the `stream-cursors` topic (key: the integration id)."""

    cursor: str
    acked_at: int


class _ReadyFrame(Struct, tag="ready", tag_field="type"):
    cursor: str


class _PingFrame(Struct, tag="ping", tag_field="type"):
    pass


class _DeliveryFrame(Struct, tag="delivery", tag_field="type", rename="camel"):
    cursor: str
    webhook_id: str
    payload: DirectEnvelope


class _ClientFrame(Struct):
    type: str
    cursor: str | None = None


_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(_ClientFrame)
_stored_decoder = msgspec.json.Decoder(StoredCursor)
_PING = _encoder.encode(_PingFrame()).decode()


class _Refusal(NamedTuple):
    code: int
    reason: str


class _Connection:
    """One accepted websocket's state."""

    def __init__(self, ws: WebSocket, integration_id: str, hub_id: str,
                 token_hash: str | None, tp: TopicPartition, start: Cursor) -> None:
        self.ws = ws
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
        self.closing = False
        self.shutdown = asyncio.Event()
        self.done = asyncio.Event()


class StreamGateway:
    """Serves ``/v1/integrations/{integrationId}/stream`` for Direct integrations."""

    def __init__(self, runtime: Runtime, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._heartbeat_s = heartbeat_s
        self._deliveries = self._settings.topic(DELIVERIES)
        self._cursor_topic = self._settings.topic(STREAM_CURSORS)
        self._acked: dict[str, Cursor] = {}
        self._reader = TableReader(self._settings, self._cursor_topic, self._apply_cursor)
        self._live: dict[str, set[_Connection]] = {}
        self._partitioner = DefaultPartitioner()
        self._started = False

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Load every integration's acked cursor; the runtime must already be started."""
        await self._reader.start()
        self._started = True

    async def stop(self) -> None:
        """Close every socket (1001), flushing its last ack, then stop following cursors."""
        self._started = False
        conns = [c for conns in self._live.values() for c in conns]
        for conn in conns:
            conn.shutdown.set()
        if conns:
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in conns],
                               timeout=self._settings.produce_timeout_s + 5)
        await self._reader.stop()

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(STREAM_PATH, self._endpoint)]

    # ---- introspection (metrics, tests) ------------------------------------------------

    def acked_cursor(self, integration_id: str) -> str | None:
        """The last acked cursor this process knows for `integration_id`."""
        cursor = self._acked.get(integration_id)
        return str(cursor) if cursor is not None else None

    def connection_count(self, integration_id: str) -> int:
        return len(self._live.get(integration_id, ()))

    # ---- the cursors table --------------------------------------------------------------

    def _apply_cursor(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        if rec.key is None:
            return
        iid = rec.key.decode(errors="replace")
        if rec.value is None:
            self._acked.pop(iid, None)
            return
        try:
            cursor = parse_cursor(_stored_decoder.decode(rec.value).cursor)
        except msgspec.DecodeError:
            cursor = None
        if cursor is None:
            log.warning("stream-cursors: unreadable value for %s at offset %d", iid, rec.offset)
            return
        self._acked[iid] = cursor

    async def _persist(self, conn: _Connection) -> None:
        """Write the connection's latest ack if it is not written yet (failures only log)."""
        cursor = conn.acked
        if cursor is None or cursor == conn.written:
            return
        value = _encoder.encode(StoredCursor(cursor=str(cursor), acked_at=int(time.time() * 1000)))
        try:
            async with asyncio.timeout(self._settings.produce_timeout_s):
                await self._runtime.producer.send_and_wait(
                    self._cursor_topic, value, key=conn.integration_id.encode())
        except Exception as exc:
            # Not fatal: an unpersisted ack only means those deliveries may be sent again.
            log.warning("stream %s: cannot persist cursor %s: %r",
                        conn.integration_id, cursor, exc)
            return
        conn.written = cursor
        # This process knows at once; the table reader confirms it (and tells the others).
        self._acked[conn.integration_id] = cursor

    async def _write_acks(self, conn: _Connection) -> None:
        """Persist acks as they come, at most one write per ACK_COALESCE_S."""
        while not conn.closing:
            await conn.ack_event.wait()
            conn.ack_event.clear()
            await self._persist(conn)
            if not conn.closing:
                await asyncio.sleep(ACK_COALESCE_S)

    async def _finish_acks(self, conn: _Connection, writer: asyncio.Task[None]) -> None:
        conn.closing = True
        conn.ack_event.set()
        try:
            await asyncio.wait_for(writer, self._settings.produce_timeout_s + 1)
        except Exception:
            writer.cancel()
        # The writer may have been mid-write when the last ack arrived: always end on it.
        await self._persist(conn)

    # ---- admission ------------------------------------------------------------------

    async def _endpoint(self, ws: WebSocket) -> None:
        admitted = await self._admit(ws)
        if isinstance(admitted, _Refusal):
            await self._refuse(ws, admitted)
            return
        conn = admitted
        try:
            await self._serve(conn)
        finally:
            live = self._live.get(conn.integration_id)
            if live is not None:
                live.discard(conn)
                if not live:
                    del self._live[conn.integration_id]
            conn.done.set()

    async def _admit(self, ws: WebSocket) -> _Connection | _Refusal:
        """Every check that can refuse the socket; on success its slot is reserved."""
        if not self._started:
            return _Refusal(CLOSE_TRY_AGAIN, "gateway not started")
        iid: str = ws.path_params["integrationId"]
        token = _token_of(ws)
        registry = self._runtime.registry
        try:
            # First, so a just-created hub and integration are both in the view.
            rec = await registry.lookup_integration(iid)
        except Exception:
            return _Refusal(CLOSE_TRY_AGAIN, "registry unavailable")
        admin_token = self._settings.admin_token
        token_hash: str | None = None
        if token is None:
            return _Refusal(CLOSE_UNAUTHORIZED, "missing access token")
        if not (admin_token and tokens_equal(token, admin_token)):
            token_hash = hash_token(token)
            hub = registry.view.hub_for_token_hash(token_hash)
            if hub is None:
                return _Refusal(CLOSE_UNAUTHORIZED, "invalid access token")
            if rec is not None and rec.hub_id != hub.hub_id:
                rec = None  # another hub's integration looks exactly like a missing one
        if rec is None:
            return _Refusal(CLOSE_NOT_FOUND, "unknown integration")
        if rec.channel_id is not ChannelId.DIRECT or rec.webhook_url:
            return _Refusal(CLOSE_CONFLICT, "only Direct integrations without a webhookUrl stream")
        raw_cursor = ws.query_params.get("cursor")
        explicit = parse_cursor(raw_cursor) if raw_cursor is not None else None
        if raw_cursor is not None and explicit is None:
            return _Refusal(CLOSE_BAD_REQUEST, "malformed cursor; expected P:O")
        try:
            partition = await self._partition_of(iid)
        except Exception:
            return _Refusal(CLOSE_TRY_AGAIN, "deliveries topic unavailable")
        if explicit is not None and explicit.partition != partition:
            return _Refusal(CLOSE_BAD_REQUEST, "cursor is not in this integration's partition")
        if explicit is None:
            # A client reconnecting right after leaving: let this process finish writing
            # the ack its previous socket received, or it would resume before it.
            leaving = [c.done.wait() for c in self._live.get(iid, ()) if c.closing]
            if leaving:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*leaving),
                                           self._settings.produce_timeout_s + 1)
            # Another gateway process may have taken the last ack a moment ago: catch up.
            try:
                await self._reader.sync(timeout=REGISTRY_SYNC_TIMEOUT_S)
            except Exception as exc:
                log.warning("stream %s: cursors table lagging: %r", iid, exc)
            stored = self._acked.get(iid)
            # A stored cursor of another partition predates a partition-count change.
            explicit = stored if stored is not None and stored.partition == partition else None
        start = explicit if explicit is not None else Cursor(partition, -1)
        live = self._live.setdefault(iid, set())
        if len(live) >= self._settings.stream_max_connections_per_integration:
            if not live:
                del self._live[iid]
            return _Refusal(CLOSE_TOO_MANY, "too many streams for this integration")
        conn = _Connection(ws, iid, rec.hub_id, token_hash,
                           TopicPartition(self._deliveries, partition), start)
        live.add(conn)
        return conn

    async def _partition_of(self, integration_id: str) -> int:
        """The partition the producer's default partitioner puts this key in."""
        parts = sorted(await self._runtime.producer.partitions_for(self._deliveries))
        partition: int = self._partitioner(integration_id.encode(), parts, parts)
        return partition

    @staticmethod
    async def _refuse(ws: WebSocket, refusal: _Refusal) -> None:
        # Closing before accept makes the server answer HTTP 403, which a browser reports
        # only as 1006; accepting first is the one way the client learns the code.
        with contextlib.suppress(Exception):
            await ws.accept()
            await ws.close(refusal.code, refusal.reason)

    def _revoked(self, conn: _Connection) -> _Refusal | None:
        """Whether registry changes since admission end this stream."""
        view = self._runtime.registry.view
        rec = view.integrations.get(conn.integration_id)
        if rec is None:
            return _Refusal(CLOSE_NOT_FOUND, "integration deleted")
        if rec.channel_id is not ChannelId.DIRECT or rec.webhook_url:
            return _Refusal(CLOSE_CONFLICT, "integration now has a webhookUrl")
        if conn.token_hash is not None:
            hub = view.hub_for_token_hash(conn.token_hash)
            if hub is None or hub.hub_id != conn.hub_id:
                return _Refusal(CLOSE_UNAUTHORIZED, "access token revoked")
        return None

    # ---- one connection -------------------------------------------------------------

    async def _serve(self, conn: _Connection) -> None:
        consumer = make_consumer(
            self._settings, group_id=None,
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        )
        try:
            await consumer.start()
            consumer.assign([conn.tp])
            end = int((await consumer.end_offsets([conn.tp]))[conn.tp])
        except Exception as exc:
            log.warning("stream %s: cannot start reader: %r", conn.integration_id, exc)
            await consumer.stop()
            await self._refuse(conn.ws, _Refusal(CLOSE_TRY_AGAIN, "broker unavailable"))
            return
        # Seeking past the end would trip auto_offset_reset and replay everything; and a
        # broker may briefly report an end below a cursor it already served (Tansu does
        # after multi-record batches). Resume from the reported end then: at worst a few
        # records the client has are sent again (at-least-once), never one skipped.
        if conn.start.offset + 1 > end:
            conn.start = Cursor(conn.start.partition, end - 1)
        consumer.seek(conn.tp, conn.start.offset + 1)
        writer = asyncio.create_task(self._write_acks(conn))
        tasks: list[asyncio.Task[Any]] = []
        close: _Refusal | None = None
        try:
            await conn.ws.accept()
            await conn.ws.send_text(_encoder.encode(_ReadyFrame(str(conn.start))).decode())
            pump = asyncio.create_task(self._pump(conn, consumer))
            listen = asyncio.create_task(self._listen(conn))
            shutdown = asyncio.create_task(conn.shutdown.wait())
            tasks = [pump, listen, shutdown]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if shutdown in done:
                close = _Refusal(CLOSE_GOING_AWAY, "server shutting down")
            else:
                finished = pump if pump in done else listen
                error = finished.exception()
                if error is None:
                    close = finished.result()
                elif not isinstance(error, WebSocketDisconnect | OSError):
                    log.error("stream %s failed", conn.integration_id, exc_info=error)
                    close = _Refusal(CLOSE_INTERNAL, "internal error")
        except (WebSocketDisconnect, OSError):
            pass  # the client left during the handshake
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if close is not None and conn.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await conn.ws.close(close.code, close.reason)
            await consumer.stop()
            await self._finish_acks(conn, writer)

    async def _pump(self, conn: _Connection, consumer: AIOKafkaConsumer) -> _Refusal | None:
        """Kafka → socket, in order; each send is awaited, so a slow client stalls only itself."""
        key = conn.integration_id.encode()
        last_frame = time.monotonic()
        while True:
            revoked = self._revoked(conn)
            if revoked is not None:
                return revoked
            wait_s = min(1.0, max(0.05, self._heartbeat_s - (time.monotonic() - last_frame)))
            try:
                batch = await consumer.getmany(conn.tp, timeout_ms=int(wait_s * 1000),
                                               max_records=MAX_RECORDS_PER_POLL)
            except KafkaError as exc:  # broker blip: the consumer keeps its position
                log.warning("stream %s: %r", conn.integration_id, exc)
                await asyncio.sleep(0.5)
                continue
            for rec in batch.get(conn.tp, ()):
                # Before the send: the client may ack it before send_text returns.
                conn.high = rec.offset
                if rec.key == key:
                    frame = self._frame(conn, rec)
                    if frame is not None:
                        await conn.ws.send_text(frame)
                        last_frame = time.monotonic()
            if time.monotonic() - last_frame >= self._heartbeat_s:
                await conn.ws.send_text(_PING)
                last_frame = time.monotonic()

    def _frame(self, conn: _Connection, rec: ConsumerRecord[bytes, bytes]) -> str | None:
        if rec.value is None:
            return None
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
        frame = _DeliveryFrame(cursor=str(Cursor(rec.partition, rec.offset)),
                               webhook_id=d.delivery_id, payload=envelope)
        return _encoder.encode(frame).decode()

    async def _listen(self, conn: _Connection) -> _Refusal | None:
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
                return _Refusal(CLOSE_BAD_REQUEST, "frame too large")
            try:
                frame = _client_decoder.decode(raw)
            except msgspec.DecodeError:
                return _Refusal(CLOSE_BAD_REQUEST, "malformed frame")
            if frame.type != "ack":
                continue  # room for future frame types (pong, …)
            cursor = parse_cursor(frame.cursor or "")
            if cursor is None or cursor.partition != conn.tp.partition:
                return _Refusal(CLOSE_BAD_REQUEST, "malformed ack cursor")
            if cursor.offset > conn.high:
                # Acking what was never sent would silently skip deliveries.
                return _Refusal(CLOSE_BAD_REQUEST, "ack of a cursor not delivered yet")
            conn.acked = cursor
            conn.ack_event.set()


def _token_of(ws: WebSocket) -> str | None:
    """The bearer token from the Authorization header, else the access_token query."""
    header = ws.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = ws.query_params.get("access_token")
    return token or None
