"""The frames of one WebChat visitor socket (`VisitorIO`): the hello that opens it, then
its live phase, two loops until one ends it: the pump (the tail's deliveries to the
socket, in order, with heartbeats and revocation checks) and the listener (the visitor's
messages to `message:customer` activities, each published durably before its ``ack``).

How a socket is admitted and its session opened is `webchat_gateway`'s; what feeds it
(`Visitor`, `Tail`, the history replay before the live phase) is `webchat_feed`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.websockets import WebSocketDisconnect

from switchboard import clock
from switchboard.errors import Unavailable
from switchboard.providers import webchat as wc
from switchboard.services.channels.webchat_admission import refusal
from switchboard.services.channels.webchat_feed import Closed, Tail, Visitor
from switchboard.services.runtime import Runtime
from switchboard.services.stream_protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_GOING_AWAY,
    CLOSE_TRY_AGAIN,
    HEARTBEAT_S,
    Cursor,
)

__all__ = ["CLOSE_TIMEOUT", "REVOCATION_CHECK_S", "VisitorIO"]

CLOSE_TIMEOUT = 4408

# How often an idle socket looks again at its integration (deleted, paused, Origin no
# longer allowed): the longest a revoked socket stays open.
REVOCATION_CHECK_S = 1.0


class VisitorIO:
    """Reads and writes the frames of a gateway's visitor sockets."""

    def __init__(self, runtime: Runtime, own_origins: list[str]) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._own_origins = own_origins

    async def hello(self, v: Visitor) -> wc.HelloFrame:
        """The socket's first frame, within `webchat_hello_timeout_s`; nothing else first."""
        try:
            async with asyncio.timeout(self._settings.webchat_hello_timeout_s):
                while True:
                    frame = await self.receive(v)
                    if frame is None:
                        raise WebSocketDisconnect()
                    if isinstance(frame, wc.HelloFrame):
                        return frame
                    if isinstance(frame, wc.MessageFrame):
                        raise Closed(CLOSE_BAD_REQUEST, "hello first")
        except TimeoutError:
            raise Closed(CLOSE_TIMEOUT, "no hello") from None

    @staticmethod
    async def receive(v: Visitor) -> wc.ClientFrame | None:
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

    async def live(self, v: Visitor, tail: Tail) -> None:
        """Pump and listen until either ends the socket (Closed, a disconnect)."""
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
            refused = refusal(rec, v.origin, self._own_origins)
            if refused is not None:
                raise Closed(*refused)
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
            frame = await self.receive(v)
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
            name=v.name, frame=frame, now_ms=clock.now_ms())
        try:
            await self._runtime.publish(activity)
        except Unavailable:
            # Not acked: the widget keeps the message and sends it again (same id).
            return wc.ErrorFrame(code="unavailable", description="could not store; retry",
                                 id=frame.id)
        return wc.AckFrame(id=frame.id, activity_id=activity.activity_id)
