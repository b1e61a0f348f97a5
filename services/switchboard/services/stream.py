"""The stream gateway: websocket delivery for Direct integrations that have no webhookUrl.

Deliveries for one destination sit in one partition of the `deliveries` topic (keyed by
the destination's integration id), in order. A websocket is positioned by a cursor
``"{partition}:{offset}"``; the client acks cursors, and the latest ack per integration
lives in the compacted `stream-cursors` topic, which every gateway process folds into
memory. A client that reconnects without a cursor resumes after its last ack; anything
not acked may be sent again (at-least-once).

Readers: one consumer per process follows the live end of the topic for every socket
(`stream_fanout`); a socket behind it first catches up with a short-lived reader of its
own, at most `stream_catchup_concurrency` at a time per process, each waiting at most
`stream_catchup_wait_s` for its turn and reading at most `stream_catchup_timeout_s`.
A socket whose queue of live records passes `stream_max_queued` is closed (1013) rather
than slowing the others or growing memory; it resumes after its last ack.

The hub's access token (or the admin token) comes in the ``Authorization: Bearer``
header, or, from a browser, as the websocket subprotocol ``switchboard.bearer.<token>``
offered beside ``switchboard.stream`` (the one the server selects). The query parameter
``access_token`` is deprecated (`stream_allow_query_token`); log lines never carry it.

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
integration or the hub, 1013 not ready (broker or registry unavailable), busy (no
catch-up slot in time) or client too slow; 1001 on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard import supervision
from switchboard.kafka import DELIVERIES
from switchboard.model import ChannelId
from switchboard.services.runtime import Runtime
from switchboard.services.stream_acks import AckTable
from switchboard.services.stream_connection import (
    Connection,
    ConnectionIO,
    Refusal,
    authorize,
)
from switchboard.services.stream_fanout import Fanout
from switchboard.services.stream_feed import FEED_PATH, FeedEndpoint
from switchboard.services.stream_protocol import (
    BEARER_SUBPROTOCOL_PREFIX,
    CLOSE_BAD_REQUEST,
    CLOSE_CONFLICT,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    HEARTBEAT_S,
    Cursor,
    ReadyFrame,
    encoder,
    parse_cursor,
    subprotocol_of,
    token_of,
)
from switchboard.socket_policy import SocketCounter
from switchboard.supervision import Supervisor

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/integrations/{integrationId}/stream"
ACK_COALESCE_S = 0.1
REGISTRY_SYNC_TIMEOUT_S = 2.0

class StreamGateway:
    """Serves ``/v1/integrations/{integrationId}/stream`` for Direct integrations."""

    def __init__(self, runtime: Runtime, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._deliveries = self._settings.topic(DELIVERIES)
        self._acks = AckTable(runtime)
        self._live: dict[str, set[Connection]] = {}
        self._per_hub = SocketCounter(self._settings.stream_max_connections_per_hub)
        self._fanout = Fanout(self._settings, self._deliveries)
        self._io = ConnectionIO(self._settings, heartbeat_s=heartbeat_s, revoked=self._revoked)
        self._partitioner = DefaultPartitioner()
        self._started = False
        self._warned_query_token = False
        self._stopping: set[asyncio.Task[None]] = set()
        self._unobserve: Callable[[], None] = lambda: None
        self._supervisor: Supervisor | None = None
        # The console's read-only live view of an integration, on the same fan-out.
        self.feed = FeedEndpoint(self, heartbeat_s=heartbeat_s)

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Load every integration's acked cursor; the runtime must already be started."""
        await self._acks.start()
        # The fan-out starts with the first socket, outside the start-up context: it is
        # watched by the supervisor of this start (a dead reader fails liveness).
        self._supervisor = supervision.current.get()
        self._fanout = Fanout(self._settings, self._deliveries, self._supervisor)
        self._started = True
        self._unobserve = self._runtime.metrics.observe(
            "switchboard_websocket_connections", "Open websocket connections, by endpoint.",
            ("endpoint",), lambda: [(("stream",), float(sum(map(len, self._live.values())))),
                                    (("console_feed",), float(self.feed.open_feeds()))])

    async def stop(self) -> None:
        """Close every socket (1001), flushing its last ack, then stop following cursors."""
        self._started = False
        self._unobserve()
        conns = [c for conns in self._live.values() for c in conns]
        for conn in conns:
            conn.shutdown.set()
        if conns:
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in conns],
                               timeout=self._settings.produce_timeout_s + 5)
        await self.feed.stop()
        await self._fanout.stop()
        await self._acks.stop()

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(STREAM_PATH, self._endpoint),
                WebSocketRoute(FEED_PATH, self.feed.endpoint)]

    # ---- introspection (metrics, tests) ------------------------------------------------

    def acked_cursor(self, integration_id: str) -> str | None:
        """The last acked cursor this process knows for `integration_id`."""
        cursor = self._acks.get(integration_id)
        return str(cursor) if cursor is not None else None

    def connection_count(self, integration_id: str) -> int:
        return len(self._live.get(integration_id, ()))

    def hub_connection_count(self, hub_id: str) -> int:
        return self._per_hub.count(hub_id)

    def consumer_count(self) -> int:
        """Kafka consumers this process holds for its sockets: the shared fan-out's (0 or
        1) plus the catch-up readers running now (at most `stream_catchup_concurrency`)."""
        return self._fanout.consumer_count + self._io.catchup_readers

    def catchup_slots(self) -> asyncio.Semaphore:
        """The catch-up slots (tests hold them to see what waiting for one does)."""
        return self._io.catchups

    def fanout_subscribers(self) -> int:
        """Sockets the shared reader feeds now (a dropped socket leaves at once)."""
        return self._fanout.subscriber_count()

    def queued(self) -> int:
        """Live records waiting in all sockets' queues (each at most stream_max_queued)."""
        return self._fanout.queued()

    # ---- acks ---------------------------------------------------------------------------

    async def _persist(self, conn: Connection) -> None:
        """Write the connection's latest ack if it is not written yet (failures only log)."""
        cursor = conn.acked
        if cursor is not None and cursor != conn.written and await self._acks.persist(
                conn.integration_id, cursor):
            conn.written = cursor

    async def _write_acks(self, conn: Connection) -> None:
        """Persist acks as they come, at most one write per ACK_COALESCE_S."""
        while not conn.closing:
            await conn.ack_event.wait()
            conn.ack_event.clear()
            await self._persist(conn)
            if not conn.closing:
                await asyncio.sleep(ACK_COALESCE_S)

    async def _finish_acks(self, conn: Connection, writer: asyncio.Task[None]) -> None:
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
        if isinstance(admitted, Refusal):
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
            self._per_hub.release(conn.hub_id)
            conn.done.set()

    async def _admit(self, ws: WebSocket) -> Connection | Refusal:
        """Every check that can refuse the socket; on success its slot is reserved."""
        if not self._started:
            return Refusal(CLOSE_TRY_AGAIN, "gateway not started")
        iid: str = ws.path_params["integrationId"]
        token, from_query = token_of(ws, allow_query=self._settings.stream_allow_query_token)
        if from_query and not self._warned_query_token:
            self._warned_query_token = True
            log.warning("stream: a client passed its token as ?access_token= (deprecated; "
                        "use the Authorization header or the %s* subprotocol)",
                        BEARER_SUBPROTOCOL_PREFIX)
        if token is None:
            return Refusal(CLOSE_UNAUTHORIZED, "missing access token")
        authorized = await authorize(self._runtime.registry, self._settings.admin_token,
                                     token, iid)
        if isinstance(authorized, Refusal):
            return authorized
        rec, token_hash = authorized
        if rec.channel_id is not ChannelId.DIRECT or rec.webhook_url:
            return Refusal(CLOSE_CONFLICT, "only Direct integrations without a webhookUrl stream")
        raw_cursor = ws.query_params.get("cursor")
        explicit = parse_cursor(raw_cursor) if raw_cursor is not None else None
        if raw_cursor is not None and explicit is None:
            return Refusal(CLOSE_BAD_REQUEST, "malformed cursor; expected P:O")
        try:
            partition = await self._partition_of(iid)
        except Exception:
            return Refusal(CLOSE_TRY_AGAIN, "deliveries topic unavailable")
        if explicit is not None and explicit.partition != partition:
            return Refusal(CLOSE_BAD_REQUEST, "cursor is not in this integration's partition")
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
                await self._acks.sync(timeout=REGISTRY_SYNC_TIMEOUT_S)
            except Exception as exc:
                log.warning("stream %s: cursors table lagging: %r", iid, exc)
            stored = self._acks.get(iid)
            # A stored cursor of another partition predates a partition-count change.
            explicit = stored if stored is not None and stored.partition == partition else None
        start = explicit if explicit is not None else Cursor(partition, -1)
        live = self._live.setdefault(iid, set())
        if len(live) >= self._settings.stream_max_connections_per_integration:
            if not live:
                del self._live[iid]
            return Refusal(CLOSE_TOO_MANY, "too many streams for this integration")
        if not self._per_hub.acquire(rec.hub_id):
            if not live:
                del self._live[iid]
            return Refusal(CLOSE_TOO_MANY, "too many streams for this hub")
        conn = Connection(ws, iid, rec.hub_id, token_hash,
                           TopicPartition(self._deliveries, partition), start,
                           subprotocol_of(ws), self._settings.stream_max_queued)
        live.add(conn)
        return conn

    async def _partition_of(self, integration_id: str) -> int:
        """The partition the producer's default partitioner puts this key in."""
        parts = sorted(await self._runtime.producer.partitions_for(self._deliveries))
        partition: int = self._partitioner(integration_id.encode(), parts, parts)
        return partition

    @staticmethod
    async def _refuse(ws: WebSocket, refusal: Refusal) -> None:
        # Closing before accept makes the server answer HTTP 403, which a browser reports
        # only as 1006; accepting first is the one way the client learns the code.
        with contextlib.suppress(Exception):
            if ws.application_state is WebSocketState.CONNECTING:
                await ws.accept(subprotocol=subprotocol_of(ws))
            await ws.close(refusal.code, refusal.reason)

    def _revoked(self, conn: Connection) -> Refusal | None:
        """Whether registry changes since admission end this stream."""
        view = self._runtime.registry.view
        rec = view.integrations.get(conn.integration_id)
        if rec is None:
            return Refusal(CLOSE_NOT_FOUND, "integration deleted")
        if rec.channel_id is not ChannelId.DIRECT or rec.webhook_url:
            return Refusal(CLOSE_CONFLICT, "integration now has a webhookUrl")
        if conn.token_hash is not None:
            hub = view.hub_for_token_hash(conn.token_hash)
            if hub is None or hub.hub_id != conn.hub_id:
                return Refusal(CLOSE_UNAUTHORIZED, "access token revoked")
        return None

    # ---- one connection -------------------------------------------------------------

    async def _serve(self, conn: Connection) -> None:
        key = conn.integration_id.encode()
        try:
            live_from = await self._current_fanout().subscribe(conn.sub, conn.tp, key)
        except Exception as exc:
            log.warning("stream %s: cannot follow deliveries: %r", conn.integration_id, exc)
            await self._refuse(conn.ws, Refusal(CLOSE_TRY_AGAIN, "broker unavailable"))
            return
        fanout = self._fanout
        # A cursor at or past the live end would skip what arrives next; and a broker may
        # briefly report an end below a cursor it already served (Tansu does after
        # multi-record batches). Resume from the live end then: at worst a few records
        # the client has are sent again (at-least-once), never one skipped.
        if conn.start.offset + 1 > live_from:
            conn.start = Cursor(conn.start.partition, live_from - 1)
        conn.high = conn.start.offset
        writer = asyncio.create_task(self._write_acks(conn))
        tasks: list[asyncio.Task[Any]] = []
        close: Refusal | None = None
        try:
            await conn.ws.accept(subprotocol=conn.subprotocol)
            await conn.ws.send_text(encoder.encode(ReadyFrame(str(conn.start))).decode())
            pump = asyncio.create_task(self._io.pump(conn, live_from))
            listen = asyncio.create_task(self._io.listen(conn))
            shutdown = asyncio.create_task(conn.shutdown.wait())
            # A socket that lets its queue overflow is closed even while a send to it is
            # blocked (it does not read): the pump is cancelled, the queue is already freed.
            gone = asyncio.create_task(conn.sub.gone.wait())
            tasks = [pump, listen, shutdown, gone]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if shutdown in done:
                close = Refusal(CLOSE_GOING_AWAY, "server shutting down")
            elif gone in done:
                close = Refusal(CLOSE_TRY_AGAIN, "client too slow; reconnect"
                                if conn.sub.overflow else "stream reader failed; reconnect")
            else:
                finished = pump if pump in done else listen
                error = finished.exception()
                if error is None:
                    close = finished.result()
                elif not isinstance(error, WebSocketDisconnect | OSError):
                    log.error("stream %s failed", conn.integration_id, exc_info=error)
                    close = Refusal(CLOSE_INTERNAL, "internal error")
        except (WebSocketDisconnect, OSError):
            pass  # the client left during the handshake
        finally:
            fanout.unsubscribe(conn.sub, conn.tp, key)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if close is not None and conn.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await conn.ws.close(close.code, close.reason)
            await self._finish_acks(conn, writer)

    def _current_fanout(self) -> Fanout:
        """The process's fan-out; a new one if the last one's reader died."""
        if self._fanout.failed:
            dead = self._fanout
            self._fanout = Fanout(self._settings, self._deliveries, self._supervisor)
            task = asyncio.create_task(dead.stop())
            self._stopping.add(task)  # a reference until it is done
            task.add_done_callback(self._stopping.discard)
        return self._fanout
