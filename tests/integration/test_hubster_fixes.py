"""Hubster fidelity (#12) beyond the compatibility mode: Hubster-style delivery
signatures, the Direct update without integrationType, PATCH as JSON Merge Patch, the Slack
install's state, Agent and Bot start messages, and 408 for a body that does not arrive.
A real hub on a real broker, real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import RunningHub, make_settings
from tests.fakes.slack import FakeSlack
from tests.support import (
    LoopbackServer,
    Receiver,
    free_port,
    message,
    sign_with_cryptography,
    verify_with_cryptography,
)
from tests.topics import read_topics


class HubsterReceiver:
    """A receiver written from Hubster's documented verification steps, nothing of ours:
    HMAC-SHA256 of the raw body keyed by the private key string, base64, compared with
    ``x-hubster-signature``; the key is chosen by ``x-hubster-public-key``. 200 if it
    matches, 401 if not; every request is kept with its verdict."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # public key -> private key, as the integrator keeps
        self.got: list[tuple[int, dict[str, str], bytes]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._changed = asyncio.Condition()
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self._http = LoopbackServer(app, self.port)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        private = self.keys.get(request.headers.get("x-hubster-public-key", ""))
        expected = "" if private is None else base64.b64encode(
            hmac.new(private.encode("utf-8"), raw, hashlib.sha256).digest()).decode()
        given = request.headers.get("x-hubster-signature", "")
        status = 200 if private is not None and hmac.compare_digest(expected, given) else 401
        async with self._changed:
            self.got.append((status, dict(request.headers), raw))
            self._changed.notify_all()
        return Response(status_code=status)

    async def wait_for(self, count: int) -> list[tuple[int, dict[str, str], bytes]]:
        async with asyncio.timeout(30), self._changed:
            await self._changed.wait_for(lambda: len(self.got) >= count)
        return self.got

    async def start(self) -> HubsterReceiver:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()


@pytest.fixture
async def hubster_receiver() -> AsyncIterator[HubsterReceiver]:
    r = await HubsterReceiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def _say(hub: RunningHub, integration: dict[str, Any], body: bytes) -> None:
    r = await hub.client.post(
        f"/ingress/{integration['integrationId']}", content=body,
        headers=sign_with_cryptography(integration["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text


# ---------------------------------------------------------------- Hubster-style signatures


async def test_hubster_signatures_verify_the_documented_way(
        hub: RunningHub, hubster_receiver: HubsterReceiver, receiver: Receiver) -> None:
    from standardwebhooks.webhooks import Webhook

    hub_id, auth = await hub.create_hub()
    cust = await hub.create_integration(hub_id, auth, channelId="Direct", name="site",
                                        configuration={"integrationType": "Customer"})
    agent = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": hubster_receiver.url + "/a",
                       "signatureScheme": "hubster", "hmacSigning": True})
    plain = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="plain",
        configuration={"integrationType": "Bot", "webhookUrl": receiver.url + "/plain"})
    cfg = agent["configuration"]
    public, private = cfg["hubsterPublicKey"], cfg["hubsterPrivateKey"]
    assert len(public) == len(private) == 32 and public != private
    assert cfg["signatureScheme"] == "hubster"
    assert "hubsterPublicKey" not in plain["configuration"]
    assert "hubsterPrivateKey" not in plain["configuration"]

    # Shown once: never on GET, in the list, nor anywhere on the registry topic.
    one = await hub.client.get(f"/api/v1/integrations/{agent['integrationId']}", headers=auth)
    many = await hub.client.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)
    for r in (one, many):
        assert r.status_code == 200 and private not in r.text and "hubsterPrivateKey" not in r.text
    assert one.json()["configuration"]["hubsterPublicKey"] == public
    stored = b"".join((k or b"") + (v or b"")
                      for _, k, v in await read_topics(hub.settings, ["registry"]))
    assert public.encode() in stored and private.encode() not in stored

    hubster_receiver.keys[public] = private
    await _say(hub, cust, message("where is my order"))
    status, headers, raw = (await hubster_receiver.wait_for(1))[0]
    assert status == 200, "the documented Hubster check refused our signature"
    assert headers["x-hubster-public-key"] == public
    assert orjson.loads(raw)["activity"]["message"]["text"] == "where is my order"
    # The Standard Webhooks headers ride along and still verify, with the reference
    # package (v1 HMAC) and with an independent Ed25519 (v1a).
    Webhook(cfg["webhookSecret"]).verify(raw, headers)
    assert verify_with_cryptography(cfg["publicSigningKey"], _Received(headers, raw))
    # An integration that did not ask for it gets no Hubster headers, and still Standard's.
    (other,) = await receiver.wait_for("/plain", 1)
    assert not any(h.startswith("x-hubster-") for h in other.headers)
    assert verify_with_cryptography(plain["configuration"]["publicSigningKey"], other)

    # The same receiver refuses a tampered body, a signature by another key, a replay
    # under another key name.
    async with httpx.AsyncClient() as c:
        tampered = raw.replace(b"where is my order", b"where is my refund")
        sent = {k: v for k, v in headers.items()
                if k in ("x-hubster-public-key", "x-hubster-signature", "content-type")}
        assert (await c.post(hubster_receiver.url + "/a", content=tampered,
                             headers=sent)).status_code == 401
        forged = base64.b64encode(hmac.new(b"0" * 32, raw, hashlib.sha256).digest()).decode()
        assert (await c.post(hubster_receiver.url + "/a", content=raw,
                             headers={**sent, "x-hubster-signature": forged})).status_code == 401
        assert (await c.post(hubster_receiver.url + "/a", content=raw,
                             headers={**sent, "x-hubster-public-key": "NOPE"})).status_code == 401
        # And takes the genuine one as sent (no timestamp: a replay passes this check,
        # which is why the README points to the Standard Webhooks headers for that).
        assert (await c.post(hubster_receiver.url + "/a", content=raw,
                             headers=sent)).status_code == 200

    # regenerateKeys (a PATCH naming nothing else): new Hubster keys, shown once, used next.
    r = await hub.client.patch(f"/api/v1/integrations/{agent['integrationId']}", headers=auth,
                               json={"configuration": {"regenerateKeys": True}})
    assert r.status_code == 200, r.text
    new = r.json()["configuration"]
    assert new["hubsterPublicKey"] != public and new["hubsterPrivateKey"] != private
    assert new["signatureScheme"] == "hubster" and new["hmacSigning"] is True
    hubster_receiver.keys[new["hubsterPublicKey"]] = new["hubsterPrivateKey"]
    seen = len(hubster_receiver.got)
    await _say(hub, cust, message("second"))
    status, headers, raw = (await hubster_receiver.wait_for(seen + 1))[seen]
    assert status == 200 and headers["x-hubster-public-key"] == new["hubsterPublicKey"]

    # Back to the standard scheme: the Hubster key is dropped, and so are its headers.
    r = await hub.client.patch(f"/api/v1/integrations/{agent['integrationId']}", headers=auth,
                               json={"configuration": {"signatureScheme": "standard"}})
    assert r.status_code == 200 and "hubsterPublicKey" not in r.json()["configuration"]
    await _say(hub, cust, message("third"))
    status, headers, raw = (await hubster_receiver.wait_for(seen + 2))[seen + 1]
    assert status == 401 and not any(h.startswith("x-hubster-") for h in headers)


class _Received:
    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers, self.body = headers, body


# ---------------------------------------------------------------- updates


async def test_direct_update_keeps_its_type_and_patch_merges(hub: RunningHub) -> None:
    hub_id, auth = await hub.create_hub()
    start = [{"type": "text", "text": "Welcome to Hubster! How can we help you?"}]
    agent = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "echo": False,
                       "webhookUrl": "https://example.com/hook", "start": start})
    iid = agent["integrationId"]
    path = f"/api/v1/integrations/hubs/{iid}"

    # The seed's update example, without integrationType: the type stays, the rest is
    # replaced (its start messages are gone: the seed's POST replaces the configuration).
    r = await hub.client.post(path, headers=auth, json={
        "name": "Direct", "statusId": 3002,
        "configuration": {"Echo": True, "webhookUrl": "http://hubster.io/v1/api/integration?customer=1"}})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["integrationTypeId"] == "Agent" and got["statusId"] == 3002
    assert got["configuration"]["integrationType"] == "Agent"
    assert got["configuration"]["echo"] is True and "start" not in got["configuration"]
    # Changing the type is still refused.
    r = await hub.client.post(path, headers=auth,
                              json={"configuration": {"integrationType": "Bot"}})
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "configuration.integrationType"

    # PATCH merges: a lone regenerateKeys regenerates and keeps everything else.
    r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth,
                               json={"configuration": {"start": start}})
    assert r.status_code == 200, r.text
    before = r.json()["configuration"]
    r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth,
                               json={"configuration": {"regenerateKeys": True}})
    assert r.status_code == 200, r.text
    after = r.json()["configuration"]
    assert after["privateSigningKey"].startswith("whsk_")
    assert after["publicSigningKey"] != before["publicSigningKey"]
    assert {k: after[k] for k in ("integrationType", "echo", "webhookUrl", "start")} == \
        {k: before[k] for k in ("integrationType", "echo", "webhookUrl", "start")}
    assert "regenerateKeys" not in after
    # null removes a field (here: back to websocket delivery); the rest stays.
    r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth,
                               json={"configuration": {"webhookUrl": None}})
    assert r.status_code == 200, r.text
    cfg = r.json()["configuration"]
    assert "webhookUrl" not in cfg and cfg["start"] == start and cfg["echo"] is True
    # What the merge makes is validated like any configuration.
    r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth,
                               json={"configuration": {"echo": "yes"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "configuration.echo"
    got = (await hub.client.get(f"/api/v1/integrations/{iid}", headers=auth)).json()
    assert got["configuration"]["echo"] is True and "privateSigningKey" not in got["configuration"]


# ---------------------------------------------------------------- Slack state


async def test_slack_state_is_checked_before_the_code_is_spent(broker: Any) -> None:
    fake = await FakeSlack().start()
    hub = await RunningHub(make_settings(
        broker, slack_api_url=fake.url, slack_client_id=fake.client_id,
        slack_client_secret=fake.client_secret, slack_state_window_s=120)).start()
    try:
        hub_id, auth = await hub.create_hub()
        code, _ = fake.grant("T0STATE")

        async def create(state: Any) -> Any:
            cfg: dict[str, Any] = {"code": code, "defaultPublicChannel": "general"}
            if state is not None:
                cfg["state"] = state
            return await hub.client.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
                                         json={"channelId": "Slack", "name": "desk",
                                               "configuration": cfg})

        now = int(time.time())
        for state, code_expected in (
            (None, "missing_state"),
            (f"{now}not-the-client-secret", "invalid_state"),
            (f"{now}{fake.client_secret}x", "invalid_state"),
            (f"{now - 121}{fake.client_secret}", "stale_state"),
            (f"{now + 3600}{fake.client_secret}", "stale_state"),
        ):
            r = await create(state)
            assert r.status_code == 400, (state, r.text)
            err = r.json()["errors"][0]
            assert (err["code"], err["field"]) == (code_expected, "configuration.state")
            assert fake.client_secret not in r.text
        assert fake.oauth_calls == []  # the code was never sent to Slack
        r = await create(f"{now}{fake.client_secret}")
        assert r.status_code == 201, r.text
        assert "state" not in r.json()["configuration"]
        assert len(fake.oauth_calls) == 1
    finally:
        await hub.stop()
        await fake.stop()


# ---------------------------------------------------------------- start messages


async def test_agent_and_bot_start_messages_open_a_conversation_once(
        hub: RunningHub, receiver: Receiver) -> None:
    hub_id, auth = await hub.create_hub()

    def text(t: str) -> list[dict[str, str]]:
        return [{"type": "text", "text": t}]

    cust = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/cust",
                       "start": text("site hello")})
    agent = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent",
                       "start": [*text("agent hello"), *text("agent here")]})
    bot = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="bot",
        configuration={"integrationType": "Bot", "webhookUrl": receiver.url + "/bot",
                       "start": text("bot hello")})
    paused = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="asleep", statusId=3002,
        configuration={"integrationType": "Bot", "start": text("never")})
    assert paused["statusId"] == 3002

    await _say(hub, cust, message("hi", sender="ada"))
    (first,) = await receiver.wait_for("/agent", 1)
    conversation = first.json["conversationId"]
    assert first.json["activity"]["message"]["text"] == "hi"
    await _say(hub, cust, message("still there?", sender="ada"))
    await receiver.wait_for("/agent", 2)
    # The agent answers; that answer is the sentinel: any greeting sent again in this
    # conversation would reach the customer before it (one lane, in order).
    answer = orjson.dumps({"type": "message", "conversationId": conversation,
                           "sender": {"id": "dana", "name": "Dana"},
                           "message": {"type": "text", "text": "sentinel"}})
    await _say(hub, agent, answer)
    got = await receiver.wait_until("/cust", lambda got: any(
        g.json["activity"]["message"]["text"] == "sentinel" for g in got))
    order = sorted([(agent["integrationId"], "message:agent", "agent hello"),
                    (agent["integrationId"], "message:agent", "agent here"),
                    (bot["integrationId"], "message:bot", "bot hello")],
                   key=lambda t: t[0])
    assert [(g.json["activity"]["integrationId"], g.json["activity"]["type"],
             g.json["activity"]["message"]["text"]) for g in got] == [
        (cust["integrationId"], "message:bot", "site hello"), *order,
        (agent["integrationId"], "message:agent", "sentinel")]
    assert {g.json["conversationId"] for g in got} == {conversation}
    # Greetings go to the customer only: the agent and the bot saw the customer's words.
    assert [g.json["activity"]["message"]["text"] for g in receiver.at("/agent")] == \
        ["hi", "still there?"]
    assert [g.json["activity"]["message"]["text"] for g in receiver.at("/bot")] == \
        ["hi", "still there?"]


# ---------------------------------------------------------------- 408


async def _drip(port: int, head: bytes, timeout: float) -> tuple[bytes, float]:
    """Send `head` (request line and headers), then one body byte every 0.2 s for 0.8 s;
    return what the server answered (up to its closing the connection) and when it closed.

    The drip stops just before the hub's 1 s deadline: a byte that reaches a socket the
    server has closed draws a reset, and a reset can discard the 408 before it is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def drip() -> None:
        writer.write(head)
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(4):
                await asyncio.sleep(0.2)
                writer.write(b"{")
                await writer.drain()

    task = asyncio.create_task(drip())
    try:
        async with asyncio.timeout(timeout):
            answer = await reader.read()  # until EOF: the server closed the connection
        return answer, time.monotonic() - started
    finally:
        task.cancel()
        writer.close()


async def test_a_body_that_does_not_arrive_in_time_gets_408(broker: Any) -> None:
    hub = await RunningHub(make_settings(broker, body_read_timeout_s=1.0)).start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(hub_id, auth, channelId="Direct", name="c",
                                            configuration={"integrationType": "Customer"})
        signed = sign_with_cryptography(cust["configuration"]["privateSigningKey"], b"{}")
        for path, extra in (
            (f"/api/v1/integrations/hubs/{hub_id}", dict(auth)),  # through the app
            (f"/ingress/{cust['integrationId']}", signed),  # the ingress's fast path
        ):
            headers = {**extra, "content-type": "application/json", "content-length": "4000",
                       "host": "127.0.0.1"}
            head = (f"POST {path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
            answer, took = await _drip(hub.port, head, timeout=10)
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 408 Request Timeout", (path, answer[:300])
            head_part, _, body = rest.partition(b"\r\n\r\n")
            assert b"connection: close" in head_part.lower()
            assert orjson.loads(body) == {"status": 408, "errors": [{
                "code": "request_timeout",
                "description": "the request body did not arrive within 1 seconds"}]}
            assert 0.9 < took < 5, took  # cut off at the deadline, and the socket freed
        # A body that arrives in time is untouched.
        body = message("on time")
        r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                  headers=sign_with_cryptography(
                                      cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202, r.text
    finally:
        await hub.stop()
