"""Every websocket endpoint of a hub, served as `serve` serves it (real uvicorn, real
broker, loopback): messages are bounded (1009 before a byte of an oversized message is
buffered), per-message compression is never negotiated and a compressed frame is refused
unread (1002), and no token reaches a log line, whatever way a client passes it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningHub, make_settings
from tests.support import message, sign_with_cryptography

MAX = 64 * 1024  # the default ws_max_message_bytes
LOCAL = "http://localhost"


class Endpoints:
    def __init__(self, hub: RunningHub, webchat: str, direct: dict[str, Any], token: str):
        self.hub = hub
        self.webchat = webchat
        self.direct = direct
        self.token = token

    def all(self) -> list[tuple[str, dict[str, str]]]:
        """(path, headers) of each socket endpoint, with what it needs to accept."""
        return [
            (f"/webchat/{self.webchat}/ws", {"Origin": LOCAL}),
            (f"/v1/integrations/{self.direct['integrationId']}/stream",
             {"Authorization": f"Bearer {self.token}"}),
        ]


async def _endpoints(hub: RunningHub) -> Endpoints:
    hub_id, auth = await hub.create_hub()
    webchat = await hub.create_integration(
        hub_id, auth, channelId="WebChat", name="chat",
        configuration={"allowedOrigins": ["localhost"]})
    direct = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="app",
        configuration={"integrationType": "Customer"})
    return Endpoints(hub, webchat["integrationId"], direct,
                     auth["Authorization"].split()[1])


@pytest.fixture(scope="module")
async def bounds_hub(broker: Any) -> AsyncIterator[RunningHub]:
    h = await RunningHub(make_settings(broker)).start()
    try:
        yield h
    finally:
        await h.stop()


# ---- a raw websocket client: frames exactly as an attacker would write them -----------


async def _raw(port: int, path: str, headers: dict[str, str], extensions: str | None = None
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *(f"{k}: {v}" for k, v in headers.items())]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer, head


def _header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        head = bytes([first, 0x80 | length])
    elif length < 1 << 16:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", length)
    return head + b"\0\0\0\0"  # the mask key (zero: the payload goes as is)


async def _close_code(reader: asyncio.StreamReader) -> int:
    """Skip the server's frames up to its close frame; its code."""
    async with asyncio.timeout(10):
        while True:
            h = await reader.readexactly(2)
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(n)
            if h[0] & 0x0F == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code


async def test_oversized_messages_are_refused_before_they_are_read(bounds_hub: RunningHub
                                                                   ) -> None:
    ends = await _endpoints(bounds_hub)
    for path, headers in ends.all():
        # A frame that announces 1 GiB: refused at its header, before any payload (none is
        # ever sent), so nothing of it is buffered.
        reader, writer, _ = await _raw(bounds_hub.port, path, headers)
        writer.write(_header(0x1, 1 << 30))
        assert await _close_code(reader) == 1009, path
        writer.close()
        # Fragments that add up to more than the limit: refused as well.
        reader, writer, _ = await _raw(bounds_hub.port, path, headers)
        part = b" " * (MAX // 2 + 1)
        writer.write(_header(0x1, len(part), fin=False) + part)
        writer.write(_header(0x0, len(part), fin=True) + part)
        assert await _close_code(reader) == 1009, path
        writer.close()
        # With an ordinary client: just over the limit → 1009; under it the message reaches
        # the endpoint, which refuses a frame that large with its own code (4400).
        url = f"ws://127.0.0.1:{bounds_hub.port}{path}"
        for size, code in ((MAX + 1, 1009), (MAX - 1024, 4400)):
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                await ws.send(" " * size)
                with pytest.raises(ConnectionClosed) as info:
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == code, path


async def test_no_per_message_compression(bounds_hub: RunningHub) -> None:
    ends = await _endpoints(bounds_hub)
    # A deflate bomb: 16 MiB of zeros in about 16 KiB.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = squeeze.compress(b"\0" * (16 << 20)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < MAX
    for path, headers in ends.all():
        # The websockets client offers permessage-deflate by default: nothing is agreed.
        url = f"ws://127.0.0.1:{bounds_hub.port}{path}"
        async with connect(url, additional_headers=headers) as ws:
            assert ws.response is not None
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            assert ws.protocol.extensions == []
        # A client that compresses anyway (RSV1 set) is refused without inflating it.
        reader, writer, head = await _raw(
            bounds_hub.port, path, headers,
            extensions="permessage-deflate; client_max_window_bits")
        assert b"sec-websocket-extensions" not in head.lower()
        writer.write(_header(0x1, len(bomb), rsv1=True) + bomb)
        assert await _close_code(reader) == 1002, path
        writer.close()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_tokens_never_reach_a_log_line(broker: Any) -> None:
    capture = _Capture()
    watched = [logging.getLogger(), logging.getLogger("uvicorn"),
               logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")]
    hub = RunningHub(make_settings(broker), log_level="debug")
    levels = [lg.level for lg in watched]
    for lg in watched:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    try:
        await hub.start()
        ends = await _endpoints(hub)
        token, iid = ends.token, ends.direct["integrationId"]
        base = f"ws://127.0.0.1:{hub.port}/v1/integrations/{iid}/stream"
        # Every way of passing the token: the deprecated query string, the header, the
        # subprotocol; and a wrong one in the query.
        async with connect(f"{base}?access_token={token}&cursor=x") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()  # 4400: the cursor is malformed (and logged as refused)
        async with connect(f"{base}?access_token={token}") as q, \
                connect(base, additional_headers={"Authorization": f"Bearer {token}"}) as h, \
                connect(base, subprotocols=[  # type: ignore[list-item]
                    "switchboard.stream", f"switchboard.bearer.{token}"]) as s:
            for ws in (q, h, s):
                assert json.loads(await ws.recv())["type"] == "ready"
            body = message("hello")
            r = await hub.client.post(
                f"/ingress/{iid}", content=body,
                headers=sign_with_cryptography(ends.direct["configuration"]["privateSigningKey"],
                                               body))
            assert r.status_code == 202
        async with connect(f"{base}?access_token=sbat_wrong{token}") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        # The widget's session token too.
        async with connect(f"ws://127.0.0.1:{hub.port}/webchat/{ends.webchat}/ws",
                           origin=LOCAL) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "hello"}))
            session = json.loads(await ws.recv())["session"]
        async with connect(f"ws://127.0.0.1:{hub.port}/webchat/{ends.webchat}/ws?s={session}",
                           origin=LOCAL) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "hello", "session": session}))
            assert json.loads(await ws.recv())["type"] == "session"
    finally:
        await hub.stop()
        for lg, level in zip(watched, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)
    lines = capture.lines
    secrets = [token, hub.settings.admin_token, session, hub.settings.secret_key]
    leaked = [line for line in lines for s in secrets if s in line]
    assert leaked == []
    # Not even a piece of one (a library may shorten a long value it logs).
    pieces = [s[len(s) // 3:len(s) // 3 + 16] for s in secrets]
    assert [line for line in lines for p in pieces if p in line] == []
    # Not vacuous: uvicorn did log those handshakes, with the query string scrubbed.
    handshakes = [line for line in lines if "WebSocket /v1/integrations/" in line]
    assert any("access_token=[redacted]" in line for line in handshakes), handshakes[:5]
    assert len(lines) > 100  # DEBUG everywhere: the hub's, uvicorn's and aiokafka's lines


async def test_with_compression_on_inflation_stops_at_the_limit(broker: Any) -> None:
    hub = await RunningHub(make_settings(broker, ws_per_message_deflate=True)).start()
    try:
        ends = await _endpoints(hub)
        for path, headers in ends.all():
            url = f"ws://127.0.0.1:{hub.port}{path}"
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                assert ws.response is not None
                assert "permessage-deflate" in ws.response.headers.get(
                    "Sec-WebSocket-Extensions", "")
                # 16 MiB that compress to a few KiB: inflated only up to the limit.
                await ws.send("a" * (16 << 20))
                with pytest.raises(ConnectionClosed) as info:
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009, path
    finally:
        await hub.stop()
