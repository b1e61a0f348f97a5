"""WebChat under abuse, on a real hub and broker over loopback: no hello in time, sockets
per address, new visitors per address and per integration, history cursors bounded to the
visitor's own conversation, and replay slots that are waited for with a deadline.

Every client here sends any Origin it likes (allowed, forged or none): limits never rest
on it. Client addresses come in X-Forwarded-For, as a trusted proxy on loopback sends it
(`forwarded_allow_ips`), so each test counts against addresses of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import RunningHub, make_settings
from tests.integration.test_webchat import LOCAL, WELCOME, Widget, _deliveries, _texts

HELLO_TIMEOUT_S = 1.0
SOCKETS_PER_ADDRESS = 3
VISITORS_PER_ADDRESS = 3
VISITORS_PER_INTEGRATION = 4
REPLAY_SLOTS = 2
REPLAY_WAIT_S = 0.5


@pytest.fixture(scope="module")
async def limits_hub(broker: Any) -> AsyncIterator[RunningHub]:
    h = await RunningHub(make_settings(
        broker,
        webchat_hello_timeout_s=HELLO_TIMEOUT_S,
        webchat_max_sockets_per_address=SOCKETS_PER_ADDRESS,
        webchat_visitor_burst_per_address=VISITORS_PER_ADDRESS,
        webchat_visitor_rate_per_address_per_s=0.001,
        webchat_visitor_burst_per_integration=VISITORS_PER_INTEGRATION,
        webchat_visitor_rate_per_integration_per_s=0.001,
        webchat_replay_concurrency=REPLAY_SLOTS,
        webchat_replay_wait_s=REPLAY_WAIT_S,
    )).start()
    try:
        yield h
    finally:
        await h.stop()


class Site:
    """A hub tenant with one WebChat integration (start message on) for one test."""

    def __init__(self, hub: RunningHub) -> None:
        self.hub = hub
        self.ids: list[str] = []

    async def add(self) -> str:
        if not self.ids:
            self.hub_id, self.auth = await self.hub.create_hub()
        webchat = await self.hub.create_integration(
            self.hub_id, self.auth, channelId="WebChat", name=f"chat-{len(self.ids)}",
            configuration={"allowedOrigins": ["localhost"],
                           "start": [{"type": "text", "text": WELCOME}]})
        self.ids.append(webchat["integrationId"])
        return str(webchat["integrationId"])

    def url(self, integration_id: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.hub.port}/webchat/{integration_id or self.ids[0]}/ws"

    def connect(self, address: str, origin: str | None = LOCAL,
                integration_id: str | None = None) -> Any:
        return connect(self.url(integration_id), origin=origin,  # type: ignore[arg-type]
                       additional_headers={"X-Forwarded-For": address})

    def gateway(self) -> Any:
        from switchboard.services.channels.webchat import WebChatPlugin

        return next(w for w in self.hub.app.state.workers
                    if isinstance(w, WebChatPlugin)).gateway


@pytest.fixture
async def site(limits_hub: RunningHub) -> Site:
    s = Site(limits_hub)
    await s.add()
    return s


async def _eventually(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


async def _reconnect(w: Widget, n: int, **hello: str) -> list[dict[str, Any]]:
    """Hello, then the first `n` deliveries, replayed or live: a fresh tail may start from
    an end offset Tansu reported low, and then sends the rest live, right after `ready`
    (never a gap, never twice)."""
    _, history, _ = await w.hello(**hello)
    if len(history) < n:
        history += await _deliveries(w, n - len(history))
    return history


async def test_socket_without_hello_is_closed_in_time(site: Site) -> None:
    async with site.connect("198.51.100.1") as ws:
        # Nothing sent: closed with 4408 once the hello deadline passes (a margin for CI).
        assert await Widget(ws).closed_code(timeout=HELLO_TIMEOUT_S + 5) == 4408
    # A ping is not a hello.
    async with site.connect("198.51.100.1") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await Widget(ws).closed_code(timeout=HELLO_TIMEOUT_S + 5) == 4408


async def test_sockets_per_address(site: Site) -> None:
    address = "198.51.100.2"
    gateway = site.gateway()
    socks = []
    sessions = []
    try:
        for _ in range(SOCKETS_PER_ADDRESS):
            ws = await site.connect(address).__aenter__()
            socks.append(ws)
            session, _, _ = await Widget(ws).hello()
            sessions.append(session["session"])
        # One more from that address is refused, whichever allowed site it claims to come
        # from (a non-browser client forges any Origin), and on another integration too.
        other = await site.add()
        for origin, iid in ((LOCAL, None), ("https://localhost:8443", None),
                            ("http://LOCALHOST", None), (LOCAL, other)):
            async with site.connect(address, origin=origin, integration_id=iid) as ws:
                assert await Widget(ws).closed_code() == 4429
        # Another address is not affected.
        async with site.connect("198.51.100.20") as ws:
            await Widget(ws).hello()
        # A socket that goes frees its place.
        await socks.pop().close()
        await _eventually(lambda: gateway.address_connection_count(address)
                          == SOCKETS_PER_ADDRESS - 1)
        async with site.connect(address) as ws:
            again, _, _ = await Widget(ws).hello(session=sessions[-1])
            assert again["resumed"] is True
    finally:
        for ws in socks:
            await ws.close()


async def test_new_visitors_per_address_and_per_integration(site: Site) -> None:
    a, b = "198.51.100.3", "198.51.100.4"
    sessions = []
    for _ in range(VISITORS_PER_ADDRESS):
        async with site.connect(a) as ws:
            session, _, _ = await Widget(ws).hello()
            sessions.append(session["session"])
    # The address's budget is spent: one more new visitor is refused (any Origin)...
    for origin in (LOCAL, "http://localhost:9999"):
        async with site.connect(a, origin=origin) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            assert await Widget(ws).closed_code() == 4429
    # ...but a returning visitor (with its session) is not a new one.
    async with site.connect(a) as ws:
        back, _, _ = await Widget(ws).hello(session=sessions[0])
        assert back["resumed"] is True
    # The integration's budget (4) has one left: address b gets it, then is refused even
    # with budget of its own left; on another integration b is welcome.
    async with site.connect(b) as ws:
        await Widget(ws).hello()
    async with site.connect(b) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        assert await Widget(ws).closed_code() == 4429
    other = await site.add()
    async with site.connect(b, integration_id=other) as ws:
        fresh, _, _ = await Widget(ws).hello()
        assert fresh["resumed"] is False


async def test_history_cursor_is_bounded_to_the_conversation(site: Site) -> None:
    # Visitor A opens a conversation; visitor B after it; A writes again after B.
    async with site.connect("198.51.100.5") as ws_a:
        a = Widget(ws_a)
        await a.hello()
        await a.say("a-1", "from a")
        assert _texts(await _deliveries(a, 2)) == [("bot", WELCOME), ("visitor", "from a")]
        async with site.connect("198.51.100.6") as ws_b:
            b = Widget(ws_b)
            session_b, _, _ = await b.hello()
            await b.say("b-1", "from b")
            own = await _deliveries(b, 2)
            assert _texts(own) == [("bot", WELCOME), ("visitor", "from b")]
        await a.say("a-2", "a again")
        foreign_later = (await _deliveries(a, 1))[0]["cursor"]
    token = session_b["session"]
    scanned = site.gateway().history.scanned
    # B presents A's cursor (a real record of the shared partition, after all of B's):
    # it does not count; B gets its own conversation, all of it, and nothing of A's.
    async with site.connect("198.51.100.6") as ws:
        history = await _reconnect(Widget(ws), 2, session=token, cursor=foreign_later)
    assert history == own
    # Cursors that name nothing of B's, wherever they point, are ignored the same way.
    p = int(own[0]["cursor"].split(":")[0])
    end = int(foreign_later.split(":")[1]) + 1  # the log's end: nothing there yet
    for cursor in (f"{p}:0", f"{p}:{end}", f"{p}:{10**12}"):
        async with site.connect("198.51.100.6") as ws:
            history = await _reconnect(Widget(ws), 2, session=token, cursor=cursor)
        assert history == own
    # B's own cursor is honoured: only what came after it is read and sent.
    before = site.gateway().history.scanned
    async with site.connect("198.51.100.6") as ws:
        history = await _reconnect(Widget(ws), 1, session=token, cursor=own[0]["cursor"])
    assert history == own[1:]
    offsets = int(foreign_later.split(":")[1]) - int(own[0]["cursor"].split(":")[1])
    assert site.gateway().history.scanned - before <= offsets
    assert site.gateway().history.scanned > scanned


async def test_replay_slot_wait_has_a_deadline(site: Site) -> None:
    async with site.connect("198.51.100.7") as ws:
        w = Widget(ws)
        session, _, _ = await w.hello()
        await w.say("m-1", "hello")
        await _deliveries(w, 2)
    slots = site.gateway().history.slots
    for _ in range(REPLAY_SLOTS):
        await slots.acquire()  # every replay slot is busy
    try:
        async with site.connect("198.51.100.7") as ws:
            w = Widget(ws)
            await ws.send(json.dumps({"type": "hello", "session": session["session"]}))
            assert (await w.expect("session"))["resumed"] is True
            # Told to come back (1013), within the wait deadline, instead of hanging.
            assert await w.closed_code(timeout=REPLAY_WAIT_S + 5) == 1013
    finally:
        for _ in range(REPLAY_SLOTS):
            slots.release()
    async with site.connect("198.51.100.7") as ws:
        history = await _reconnect(Widget(ws), 2, session=session["session"])
    assert _texts(history) == [("bot", WELCOME), ("visitor", "hello")]
