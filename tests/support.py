"""Test peers on loopback: a recording webhook receiver, and an independent signer."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port


class LoopbackServer:
    """An ASGI app served by uvicorn on 127.0.0.1:`port`, for test peers and fakes."""

    def __init__(self, app: Any, port: int) -> None:
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                     log_level="warning", lifespan="off"))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        # uvicorn offers no started event to await.
        while not self._server.started:
            if self._task.done():
                self._task.result()  # it failed to bind: say why
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class Received:
    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.at = time.monotonic()

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every webhook it gets.

    `behaviour(path, n)` returns (status, headers, delay_s) for the n-th request to a path.
    """

    def __init__(self, behaviour: Callable[[str, int], tuple[int, dict[str, str], float]]
                 | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.attempts: dict[str, int] = {}
        self._behaviour = behaviour or (lambda path, n: (200, {}, 0.0))
        self._changed = asyncio.Condition()
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self._http = LoopbackServer(app, self.port)

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        body = await request.body()
        n = self.attempts.get(path, 0)
        self.attempts[path] = n + 1
        status, headers, delay = self._behaviour(path, n)
        if delay:
            await asyncio.sleep(delay)
        if 200 <= status < 300:
            async with self._changed:
                self.received.append(Received(path, dict(request.headers), body))
                self._changed.notify_all()
        return Response(status_code=status, headers=headers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        return await self.wait_until(path, lambda got: len(got) >= count, timeout)

    async def wait_until(self, path: str, done: Callable[[list[Received]], bool],
                         timeout: float = 30.0) -> list[Received]:
        """Wait until `done(what path received so far)` holds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: done(self.at(path)))
        return self.at(path)

    async def start(self) -> Receiver:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()


def sign_with_cryptography(secret_key: str, body: bytes, msg_id: str | None = None,
                           timestamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks v1a headers made by an independent Ed25519 implementation."""
    raw = base64.b64decode(secret_key.removeprefix("whsk_"))
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else timestamp
    sig = key.sign(f"{msg_id}.{ts}.".encode() + body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1a," + base64.b64encode(sig).decode(),
        "content-type": "application/json",
    }


def verify_with_cryptography(public_key: str, got: Received) -> bool:
    """Check any `v1a` signature of a received webhook against `public_key` (whpk_…)."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    h = got.headers
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got.body
    for part in h["webhook-signature"].split():
        version, _, sig = part.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), signed)
            return True
        except InvalidSignature:  # signed by another key (rotation): try the next one
            continue
    return False


def message(text: str, sender: str = "cust-1", conversation: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "message", "sender": {"id": sender, "name": sender},
                            "message": {"type": "text", "text": text}}
    if conversation:
        body["conversationId"] = conversation
    return orjson.dumps(body)


def slack_state(client_secret: str) -> str:
    """A Slack install's `state` as the seed defines it: UNIX time now + client secret."""
    return f"{int(time.time())}{client_secret}"
