"""A lean webhook receiver for the delivery benchmarks, in its own process.

Raw asyncio + httptools on uvloop: a keep-alive HTTP/1.1 server that answers every POST
``200 ok`` and records when it arrived (wall clock, ns), its path, its ``webhook-id`` and
the benchmark's marks the sender put in ``activity.metadata`` (``k`` lane key, ``s``
sequence number, ``t`` due time in µs). Paths under ``--hang-prefix`` are recorded and
never answered (the connection stays open until the client gives up), as an endpoint that
hangs until the sender's timeout.

Control endpoints (GET unless noted), for the benchmark process:

- ``/_stats``: counts (requests, unique webhook-ids, duplicates, hung, connections,
  signatures checked / bad);
- ``/_dump``: every record so far, ``[arrival_ns, path, webhook_id, k, s, t]``;
- ``POST /_reset``: forget everything;
- ``POST /_keys``: ``{path: [whpk_…]}``, the public keys that sign what arrives at each
  path; every ``--verify-every``-th request to such a path has its signature checked.

    python benchmarks/_receiver.py --port P [--hang-prefix /hang/] [--verify-every 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import httptools
import orjson

from switchboard.webhooks import Verifier

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
OK_CLOSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
            b"connection: close\r\n\r\nok")
WANTED_HEADERS = {b"webhook-id", b"webhook-timestamp", b"webhook-signature"}


class State:
    def __init__(self, hang_prefix: bytes, verify_every: int) -> None:
        self.hang_prefix = hang_prefix
        self.verify_every = verify_every
        self.reset()
        self.verifiers: dict[str, Verifier] = {}
        self.open_connections = 0

    def reset(self) -> None:
        self.records: list[list[Any]] = []
        self.ids: set[str] = set()
        self.requests = 0
        self.duplicates = 0
        self.hung = 0
        self.unparsed = 0
        self.checked = 0
        self.bad_signatures = 0
        self.connections = 0  # opened since the reset

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "unique": len(self.ids),
                "duplicates": self.duplicates, "hung": self.hung, "unparsed": self.unparsed,
                "connections": self.connections, "open_connections": self.open_connections,
                "signatures_checked": self.checked, "bad_signatures": self.bad_signatures}

    def record(self, path: str, headers: dict[bytes, bytes], body: bytes, hung: bool) -> None:
        now = time.time_ns()
        self.requests += 1
        wid = headers.get(b"webhook-id", b"").decode("latin-1")
        if wid in self.ids:
            self.duplicates += 1
        else:
            self.ids.add(wid)
        k = s = t = None
        try:
            meta = orjson.loads(body)["activity"]["metadata"]
            k, s, t = meta.get("k"), int(meta["s"]), int(meta["t"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.unparsed += 1
        self.records.append([now, path, wid, k, s, t])
        if hung:
            self.hung += 1
        verifier = self.verifiers.get(path)
        if verifier is not None and self.requests % self.verify_every == 0:
            self.checked += 1
            try:
                verifier.verify({k.decode(): v.decode("latin-1") for k, v in headers.items()},
                                body, now=int(time.time()))
            except Exception:
                self.bad_signatures += 1


class Conn(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.hanging = False

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1
        self.state.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open_connections -= 1

    def data_received(self, data: bytes) -> None:
        if self.hanging:
            return  # a hung connection answers nothing, ever
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in WANTED_HEADERS:
            self.headers[name] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path = self.url.split(b"?", 1)[0]
        body = b"".join(self.body)
        if path.startswith(b"/_"):
            self.control(path, body)
            return
        if path.startswith(self.state.hang_prefix):
            self.hanging = True
            self.state.record(path.decode("latin-1"), self.headers, body, hung=True)
            return
        self.state.record(path.decode("latin-1"), self.headers, body, hung=False)
        if self.parser.should_keep_alive():
            self.transport.write(OK)
        else:
            self.transport.write(OK_CLOSE)
            self.transport.close()

    def control(self, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        state = self.state
        answer: Any = {"ok": True}
        if path == b"/_stats":
            answer = state.stats()
        elif path == b"/_dump":
            answer = {"records": state.records}
        elif path == b"/_reset":
            state.reset()
        elif path == b"/_keys":
            keys = orjson.loads(body) if body else {}
            state.verifiers = {p: Verifier(public_keys=v) for p, v in keys.items()}
        else:
            answer = {"error": "unknown"}
        data = orjson.dumps(answer)
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(data) + data)


async def serve(args: argparse.Namespace) -> None:
    state = State(args.hang_prefix.encode(), max(1, args.verify_every))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(state), "127.0.0.1", args.port,
                                      backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang-prefix", default="/hang/")
    parser.add_argument("--verify-every", type=int, default=50)
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
