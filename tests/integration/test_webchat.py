"""WebChat end to end: the hub's widget in a real headless Chromium, and the websocket
protocol with a plain websockets client, on a real broker and loopback only."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningHub, make_settings
from tests.support import Receiver, sign_with_cryptography

CHROMIUM = "/usr/bin/chromium"  # Debian's package; `./switchboard test` installs it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WELCOME = "Welcome! How can we help?"
LOCAL = "http://localhost"


@dataclass
class Chat:
    hub: RunningHub
    receiver: Receiver
    webchat: dict[str, Any]
    agent: dict[str, Any]
    auth: dict[str, str]

    @property
    def id(self) -> str:
        return str(self.webchat["integrationId"])

    def ws_url(self, integration_id: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.hub.port}/webchat/{integration_id or self.id}/ws"

    async def answer(self, conversation_id: str, text: str) -> None:
        """The agent answers through the ingress, as a Direct Agent integration does."""
        await self.send_message(conversation_id, {"type": "text", "text": text})

    async def send_message(self, conversation_id: str, msg: dict[str, Any]) -> None:
        body = json.dumps({"type": "message", "sender": {"id": "agent-7", "name": "agent-7"},
                           "message": msg, "conversationId": conversation_id}).encode()
        key = self.agent["configuration"]["privateSigningKey"]
        r = await self.hub.client.post(f"/ingress/{self.agent['integrationId']}", content=body,
                                       headers=sign_with_cryptography(key, body))
        assert r.status_code == 202, r.text


@pytest.fixture(scope="module")
async def webchat_hub(broker: Any) -> AsyncIterator[RunningHub]:
    """One hub for the module (starting one costs seconds); each test makes its own hub
    tenant and integrations, so they share nothing else."""
    h = await RunningHub(make_settings(broker)).start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def chat(webchat_hub: RunningHub) -> AsyncIterator[Chat]:
    hub = webchat_hub
    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        webchat = await hub.create_integration(
            hub_id, auth, channelId="WebChat", name="Acme support",
            configuration={"allowedOrigins": ["localhost", "*.example.com"],
                           "start": [{"type": "text", "text": WELCOME}]})
        agent = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
        yield Chat(hub, receiver, webchat, agent, auth)
    finally:
        await receiver.stop()


# ---- a minimal websocket client of the widget protocol -------------------------------


class Widget:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self, timeout: float = 20.0) -> dict[str, Any]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if frame["type"] != "ping":
                return frame

    async def expect(self, kind: str) -> dict[str, Any]:
        frame = await self.recv()
        assert frame["type"] == kind, frame
        return frame

    async def hello(self, **fields: str) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                   dict[str, Any]]:
        """Send hello; return (session frame, replayed deliveries, ready frame)."""
        await self.ws.send(json.dumps({"type": "hello", **fields}))
        session = await self.expect("session")
        history = []
        while (frame := await self.recv())["type"] == "delivery":
            history.append(frame)
        assert frame["type"] == "ready", frame
        return session, history, frame

    async def say(self, client_id: str, text: str) -> dict[str, Any]:
        await self.ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))
        return await self.expect("ack")

    async def closed_code(self, timeout: float = 10.0) -> int | None:
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        return info.value.rcvd.code if info.value.rcvd else None


def _texts(frames: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["activity"]["role"], f["activity"]["message"]["text"]) for f in frames]


async def _deliveries(w: Widget, n: int) -> list[dict[str, Any]]:
    return [await w.expect("delivery") for _ in range(n)]


# ---- the protocol without a browser ------------------------------------------------------


async def test_origin_rules(chat: Chat) -> None:
    for origin, allowed in [("http://evil.example", False), ("https://example.com", False),
                            ("https://localhost.evil.example", False), ("null", False),
                            ("https://shop.example.com", True), ("http://localhost:3000", True),
                            ("https://a.b.example.com", True), (None, False)]:
        headers = {"Origin": origin} if origin else {}
        async with connect(chat.ws_url(), additional_headers=headers, origin=None) as ws:
            w = Widget(ws)
            if allowed:
                session, _, _ = await w.hello()
                assert session["resumed"] is False, origin
            else:
                assert await w.closed_code() == 4403, origin
    # Not a WebChat integration (nor any integration): 4404, whatever the origin.
    async with connect(chat.ws_url(chat.agent["integrationId"]), origin=LOCAL) as ws:
        assert await Widget(ws).closed_code() == 4404


async def test_session_resumes_and_tampered_session_is_refused(chat: Chat) -> None:
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        session, history, ready = await Widget(ws).hello()
    assert history == [] and ready.get("cursor") is None
    token = session["session"]
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        again, _, _ = await Widget(ws).hello(session=token)
    assert again["resumed"] is True
    assert again["visitorId"] == session["visitorId"]
    assert again["conversationId"] == session["conversationId"]
    # One character changed anywhere in the sealed token: refused (the widget then forgets
    # it and starts over as a new visitor; the token never names another conversation).
    prefix, body = token[:20], token[20:]
    tampered = prefix + ("A" if body[0] != "A" else "B") + body[1:]
    for bad in (tampered, token[:-4], "sealed:v1:AAAA", "not a token"):
        async with connect(chat.ws_url(), origin=LOCAL) as ws:
            w = Widget(ws)
            await ws.send(json.dumps({"type": "hello", "session": bad}))
            assert await w.closed_code() == 4401
    # A genuine token of another WebChat integration is refused too.
    hub_id = chat.webchat["hubId"]
    other = await chat.hub.create_integration(
        hub_id, chat.auth, channelId="WebChat", name="other",
        configuration={"allowedOrigins": ["localhost"]})
    async with connect(chat.ws_url(other["integrationId"]), origin=LOCAL) as ws:
        w = Widget(ws)
        await ws.send(json.dumps({"type": "hello", "session": token}))
        assert await w.closed_code() == 4401


async def test_start_messages_resend_once_and_history(chat: Chat) -> None:
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        w = Widget(ws)
        session, _, _ = await w.hello(name="Ada")
        ack = await w.say("m-1", "hello there")
        # The conversation opens: the start message, then the visitor's own (echo).
        first = await _deliveries(w, 2)
        assert _texts(first) == [("bot", WELCOME), ("visitor", "hello there")]
        assert first[0]["activity"]["senderName"] == "Acme support"
        assert first[1]["activity"]["activityId"] == ack["activityId"]
        assert first[1]["activity"]["clientMessageId"] == "m-1"
        cursor = first[1]["cursor"]
    agent = (await chat.receiver.wait_for("/agent", 1))[0].json
    conversation = agent["conversationId"]
    assert conversation == session["conversationId"]
    assert agent["activity"]["sender"] == {"id": session["visitorId"], "name": "Ada"}
    assert agent["activity"]["channelId"] == "WebChat"

    # Reconnect with the cursor; resend m-1 (its ack was "lost"), then a new message.
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        w = Widget(ws)
        _, missed, ready = await w.hello(session=session["session"], cursor=cursor)
        assert missed == [] and ready["cursor"] == cursor
        again = await w.say("m-1", "hello there")
        assert again["activityId"] == ack["activityId"]
        await w.say("m-2", "second")
        await chat.answer(conversation, "an agent here")
        live = await _deliveries(w, 2)
        assert _texts(live) == [("visitor", "second"), ("agent", "an agent here")]
        # A later message is the sentinel: the agent receives a conversation's messages
        # in order, so a duplicate of m-1 would have come before it.
        await w.say("m-3", "third")
        last_cursor = (await _deliveries(w, 1))[0]["cursor"]
    got = await chat.receiver.wait_for("/agent", 3)
    assert [g.json["activity"]["message"]["text"] for g in chat.receiver.at("/agent")] == [
        "hello there", "second", "third"]
    assert len({g.json["activity"]["activityId"] for g in got}) == 3

    # Missed while away: the socket resumes strictly after its cursor (what is routed
    # after the replay's end comes live, right after `ready`).
    await chat.answer(conversation, "are you still there?")
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        w = Widget(ws)
        _, missed, _ = await w.hello(session=session["session"], cursor=last_cursor)
        missed += await _deliveries(w, 1 - len(missed))
    assert _texts(missed) == [("agent", "are you still there?")]

    # A reload (no cursor) replays the whole conversation, in order, each message once.
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        _, history, ready = await Widget(ws).hello(session=session["session"])
    assert _texts(history) == [("bot", WELCOME), ("visitor", "hello there"),
                               ("visitor", "second"), ("agent", "an agent here"),
                               ("visitor", "third"), ("agent", "are you still there?")]
    assert ready["cursor"] == history[-1]["cursor"]
    # Another visitor sees none of it.
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        other, history, _ = await Widget(ws).hello()
    assert history == [] and other["conversationId"] != conversation


def _gateway(hub: RunningHub) -> Any:
    from switchboard.services.channels.webchat import WebChatPlugin

    return next(w for w in hub.app.state.workers if isinstance(w, WebChatPlugin)).gateway


async def test_registry_changes_close_live_sockets(chat: Chat) -> None:
    gateway = _gateway(chat.hub)
    async with connect(chat.ws_url(), origin="https://shop.example.com") as ws:
        w = Widget(ws)
        await w.hello()
        assert gateway.connection_count(chat.id) == 1
        # allowedOrigins no longer lists this site: the open socket is closed too.
        r = await chat.hub.client.patch(
            f"/api/v1/integrations/{chat.id}", headers=chat.auth,
            json={"configuration": {"allowedOrigins": ["localhost"]}})
        assert r.status_code == 200, r.text
        assert await w.closed_code() == 4403
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        w = Widget(ws)
        await w.hello()
        r = await chat.hub.client.post(f"/api/v1/integrations/hubs/{chat.id}",
                                       headers=chat.auth, json={"statusId": 3002})
        assert r.status_code == 200, r.text
        assert await w.closed_code() == 4409  # paused
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        assert await Widget(ws).closed_code() == 4409
    for _ in range(50):
        if gateway.connection_count(chat.id) == 0 and gateway.tail_count() == 0:
            break
        await asyncio.sleep(0.1)
    assert gateway.connection_count(chat.id) == 0 and gateway.tail_count() == 0


async def test_protocol_errors(chat: Chat) -> None:
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        await ws.send(json.dumps({"type": "message", "id": "x", "text": "too early"}))
        assert await Widget(ws).closed_code() == 4400
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        await ws.send("not json")
        assert await Widget(ws).closed_code() == 4400
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        w = Widget(ws)
        await w.hello()
        await ws.send(json.dumps({"type": "message", "id": "bad id!", "text": "x"}))
        assert await w.closed_code() == 4400
    async with connect(chat.ws_url(), origin=LOCAL) as ws:
        w = Widget(ws)
        await w.hello()
        await ws.send(json.dumps({"type": "message", "id": "e", "text": "   "}))
        err = await w.expect("error")
        assert err["code"] == "empty_message" and err["id"] == "e"
        await ws.send(json.dumps({"type": "future-frame", "x": 1}))  # ignored
        await w.say("ok", "still fine")


async def test_pages(chat: Chat) -> None:
    c = chat.hub.client
    r = await c.get(f"/webchat/{chat.id}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in r.headers
    assert f'src="/webchat/{chat.id}/widget.js"' in r.text
    assert "Acme support" in r.text
    r = await c.get(f"/webchat/{chat.id}/widget.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "new WebSocket" in r.text
    for path in (f"/webchat/{chat.agent['integrationId']}", "/webchat/nope/widget.js"):
        r = await c.get(path)
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "integration_not_found"


# ---- the widget in a real browser --------------------------------------------------------


async def test_browser_chat_reply_and_reload(chat: Chat) -> None:
    from playwright.async_api import async_playwright, expect

    url = f"http://localhost:{chat.hub.port}/webchat/{chat.id}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(url)
            panel = page.locator(".sb-panel")
            await expect(panel).to_have_attribute("data-state", "ready", timeout=20_000)
            await page.locator(".sb-input").fill("Hello from the browser")
            await page.locator(".sb-input").press("Enter")

            got = (await chat.receiver.wait_for("/agent", 1))[0].json
            assert got["activity"]["message"]["text"] == "Hello from the browser"
            conversation = got["conversationId"]
            await expect(panel).to_have_attribute("data-conversation-id", conversation)
            await chat.answer(conversation, "Hi! An agent here.")

            bodies = page.locator(".sb-msg .sb-body")
            expected = [WELCOME, "Hello from the browser", "Hi! An agent here."]
            await expect(bodies).to_have_text(expected, timeout=20_000)
            await expect(page.locator(".sb-agent .sb-body")).to_have_text("Hi! An agent here.")
            if os.environ.get("WEBCHAT_SCREENSHOT"):
                await page.screenshot(path=os.environ["WEBCHAT_SCREENSHOT"])

            await page.reload()
            await expect(panel).to_have_attribute("data-state", "ready", timeout=20_000)
            await expect(panel).to_have_attribute("data-conversation-id", conversation)
            await expect(bodies).to_have_text(expected, timeout=20_000)
            roles = await page.locator(".sb-msg").evaluate_all(
                "ns => ns.map(n => n.className.split(' ').find(c => c !== 'sb-msg'))")
            assert roles == ["sb-bot", "sb-visitor", "sb-agent"]

            # Rich messages: a card, and quick replies whose tap goes back with its payload.
            await chat.send_message(conversation, {
                "type": "card", "title": "Blue kettle", "subtitle": "In stock",
                "buttons": [{"type": "url", "title": "View", "url": "https://shop.test/k"}]})
            await chat.send_message(conversation, {
                "type": "text", "text": "Shall I reserve it?",
                "quickReplies": [{"title": "Yes please", "payload": "RESERVE"},
                                 {"title": "No"}]})
            await expect(page.locator(".sb-card-title")).to_have_text("Blue kettle")
            await expect(page.locator(".sb-card a.sb-btn")).to_have_attribute(
                "href", "https://shop.test/k")
            await page.get_by_role("button", name="Yes please").click()
            got = (await chat.receiver.wait_for("/agent", 2))[1].json["activity"]
            assert got["message"] == {"type": "text", "text": "Yes please"}
            assert got["metadata"]["payload"] == "RESERVE"
            await expect(page.locator(".sb-visitor .sb-body").last).to_have_text("Yes please")
            assert errors == []
        finally:
            await browser.close()


async def test_browser_embedded_on_a_site(chat: Chat) -> None:
    """The script on another origin (a shop at localhost:P): bubble mode, the Origin rule,
    the visitor's display name, and a forged session token in localStorage."""
    from playwright.async_api import async_playwright, expect

    from tests.fakes.webchat import EmbeddingSite

    site = await EmbeddingSite(f"http://localhost:{chat.hub.port}/webchat/{chat.id}/widget.js",
                               visitor_name="Grace").start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # 127.0.0.1 is not in allowedOrigins: the socket is refused, the widget says so.
                page = await browser.new_page()
                await page.goto(site.url("127.0.0.1"))
                panel = page.locator(".sb-panel")
                await expect(panel).to_have_attribute("data-state", "refused", timeout=20_000)
                await expect(page.locator(".sb-send")).to_be_disabled()
                await page.close()

                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(site.url("localhost"))
                panel = page.locator(".sb-panel")
                await expect(panel).to_be_hidden()
                await page.locator(".sb-launcher").click()
                await expect(panel).to_be_visible()
                await expect(panel).to_have_attribute("data-state", "ready", timeout=20_000)
                first = await panel.get_attribute("data-conversation-id")
                await page.locator(".sb-input").fill("Is this in stock?")
                await page.locator(".sb-send").click()
                got = (await chat.receiver.wait_for("/agent", 1))[0].json
                assert got["activity"]["sender"]["name"] == "Grace"
                assert got["conversationId"] == first
                # The echo replaces the pending bubble: one bubble, stamped with its time.
                mine = page.locator(".sb-visitor")
                await expect(mine.locator(".sb-body")).to_have_text(["Is this in stock?"])
                await expect(mine).to_have_attribute("data-streamed", "")

                # A message typed while offline waits in localStorage and goes out (once)
                # when the widget is back; the history shows it after the first one.
                key = f"switchboard.webchat.{chat.id}"
                await page.evaluate(
                    "([k]) => { const s = JSON.parse(localStorage.getItem(k));"
                    " s.outbox.push({id: 'offline-1', text: 'typed while offline'});"
                    " localStorage.setItem(k, JSON.stringify(s)); }", [key])
                await page.reload()
                await page.locator(".sb-launcher").click()
                await expect(mine.locator(".sb-body")).to_have_text(
                    ["Is this in stock?", "typed while offline"], timeout=20_000)
                await expect(mine.nth(1)).to_have_attribute("data-streamed", "")
                got = await chat.receiver.wait_for("/agent", 2)
                assert got[1].json["activity"]["metadata"]["clientMessageId"] == "offline-1"
                assert got[1].json["conversationId"] == first
                stored = await page.evaluate("([k]) => JSON.parse(localStorage.getItem(k))",
                                             [key])
                assert stored["outbox"] == []
                if os.environ.get("WEBCHAT_SCREENSHOT"):
                    await page.screenshot(path=os.environ["WEBCHAT_SCREENSHOT"] + ".site.png")

                # A forged token (e.g. copied from another deployment): refused with 4401,
                # and the widget starts over as a new visitor with an empty conversation.
                await page.evaluate(
                    "([k]) => localStorage.setItem(k, JSON.stringify("
                    "{session: 'sealed:v1:' + btoa('x'.repeat(60)), outbox: []}))", [key])
                await page.reload()
                await page.locator(".sb-launcher").click()
                await expect(panel).to_have_attribute("data-state", "ready", timeout=20_000)
                second = await panel.get_attribute("data-conversation-id")
                assert second and second != first
                await expect(page.locator(".sb-msg")).to_have_count(0)
                stored = await page.evaluate("([k]) => JSON.parse(localStorage.getItem(k))",
                                             [key])
                # A genuine token of the current sealing format replaced the forged one.
                assert stored["session"].startswith("sealed:v2:")
                assert len(chat.receiver.at("/agent")) == 2
                assert errors == []
            finally:
                await browser.close()
    finally:
        await site.stop()


async def test_conversation_survives_a_hub_restart(broker: Any) -> None:
    """The whole hub (gateway, ingress, router, deliverer) restarts while a visitor is away;
    their token still opens the same conversation, and what was missed arrives in order."""
    settings = make_settings(broker)
    receiver = await Receiver().start()
    first = await RunningHub(settings).start()
    second: RunningHub | None = None
    try:
        hub_id, auth = await first.create_hub()
        webchat = await first.create_integration(
            hub_id, auth, channelId="WebChat", name="web",
            configuration={"allowedOrigins": ["localhost"]})
        agent = await first.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
        chat = Chat(first, receiver, webchat, agent, auth)
        async with connect(chat.ws_url(), origin=LOCAL) as ws:
            w = Widget(ws)
            session, _, _ = await w.hello()
            await w.say("before", "before the restart")
            cursor = (await w.expect("delivery"))["cursor"]
        await receiver.wait_for("/agent", 1)
        await first.stop()

        second = await RunningHub(settings).start()
        chat.hub = second
        await chat.answer(session["conversationId"], "answered after the restart")
        async with connect(chat.ws_url(), origin=LOCAL) as ws:
            w = Widget(ws)
            again, missed, _ = await w.hello(session=session["session"], cursor=cursor)
            assert again["conversationId"] == session["conversationId"]
            if not missed:  # the answer may still be on its way through the router
                missed = [await w.expect("delivery")]
            assert _texts(missed) == [("agent", "answered after the restart")]
            await w.say("after", "after the restart")
            assert _texts([await w.expect("delivery")]) == [("visitor", "after the restart")]
        got = await receiver.wait_for("/agent", 2)
        assert [g.json["activity"]["message"]["text"] for g in got] == [
            "before the restart", "after the restart"]
    finally:
        if second is not None:
            await second.stop()
        await receiver.stop()
