"""Bad input gets a clear 4xx, never a 500 (issue #9, part 1), against a real hub.

Deep nesting used to reach msgspec, which recursed until RecursionError: a 500 for a
signed activity and for an API body. Now both are refused as 400 invalid_json and the
hub goes on serving. A webhookUrl that breaks the rules is refused on create and update,
and a refused create leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from switchboard.jsonsafe import MAX_JSON_DEPTH
from tests.conftest import RunningHub, make_settings
from tests.fakes.twilio import FakeTwilio
from tests.support import Receiver, message, sign_with_cryptography

JSON = {"content-type": "application/json"}
FIELD = "configuration.webhookUrl"


def _error(r: Any) -> tuple[int, str, str | None]:
    body = r.json()
    assert body["status"] == r.status_code, body
    (err,) = body["errors"]
    return r.status_code, err["code"], err.get("field")


def _activity_with(extra: bytes, text: str) -> bytes:
    """A valid customer message plus a field the decoder does not know (so skips)."""
    return (b'{"type":"message","sender":{"id":"cust-1"},"message":{"type":"text","text":"'
            + text.encode() + b'"},"extra":' + extra + b"}")


async def test_a_signed_activity_nested_10000_deep_is_400_and_the_hub_keeps_working(
        hub: RunningHub, receiver: Receiver) -> None:
    hub_id, auth = await hub.create_hub()
    customer = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer"})
    await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
    url = f"/ingress/{customer['integrationId']}"
    key = customer["configuration"]["privateSigningKey"]

    async def post(body: bytes) -> Any:
        return await hub.client.post(url, content=body, headers=sign_with_cryptography(key, body))

    deep = [
        b"[" * 10_000 + b"]" * 10_000,  # in a skipped field: msgspec recursed all the same
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * 10_000,  # never closes
        b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,  # one level too many with the body's
    ]
    for n, extra in enumerate(deep):
        r = await post(_activity_with(extra, f"deep {n}"))
        assert _error(r) == (400, "invalid_json", None), (n, r.text)
    # At the limit exactly (the body's own object is level 1), it is an activity.
    at_limit = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    r = await post(_activity_with(at_limit, "at the limit"))
    assert r.status_code == 202, r.text

    # The hub keeps working: the next message is accepted and delivered, after the one at
    # the limit and with none of the refused ones in between.
    r = await post(message("still here"))
    assert r.status_code == 202, r.text
    got = await receiver.wait_for("/agent", 2)
    assert [g.json["activity"]["message"]["text"] for g in got] == ["at the limit",
                                                                     "still here"]


def _nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def test_api_bodies_nested_2000_deep_are_400(hub: RunningHub) -> None:
    hub_id, auth = await hub.create_hub()
    path = f"/api/v1/integrations/hubs/{hub_id}"
    deep = _nested_object(2000)
    create = (b'{"channelId":"Direct","name":"deep","configuration":{"integrationType":'
              b'"Customer","x":' + deep + b"}}")
    r = await hub.client.post(path, content=create, headers={**auth, **JSON})
    assert _error(r) == (400, "invalid_json", None), r.text
    r = await hub.client.post("/api/v1/hubs", content=b'{"name":"x","y":' + deep + b"}",
                              headers={**hub.admin, **JSON})
    assert _error(r) == (400, "invalid_json", None), r.text
    # Nothing was created, and the API still answers.
    r = await hub.client.get(path, headers=auth)
    assert r.status_code == 200 and r.json() == []
    made = await hub.create_integration(hub_id, auth, channelId="Direct", name="desk",
                                        configuration={"integrationType": "Agent"})
    iid = made["integrationId"]
    update = b'{"configuration":{"integrationType":"Agent","x":' + deep + b"}}"
    for method, url in (("PATCH", f"/api/v1/integrations/{iid}"),
                        ("POST", f"/api/v1/integrations/hubs/{iid}")):
        r = await hub.client.request(method, url, content=update, headers={**auth, **JSON})
        assert _error(r) == (400, "invalid_json", None), (method, r.text)
    got = await hub.client.get(f"/api/v1/integrations/{iid}", headers=auth)
    assert got.status_code == 200 and "x" not in got.json()["configuration"]


BAD_URLS = [
    "http://",  # no host
    "http://exa mple.com/hook",  # a space in the host
    "http://user:pw@example.com/hook",  # user-info
    "http://user@example.com/hook",
    "https://example.com/" + "a" * 2029,  # 2,049 characters
    "ftp://example.com/hook",  # scheme
    "example.com/hook",
    "http://[::1/",  # not a URL at all
    "https://example.com:99999/",
    "https://example.com/a\u2028b",  # a Unicode space
    "http://-bad-.example.com/",
]


async def test_webhook_urls_are_validated_on_create_and_update(hub: RunningHub) -> None:
    assert len(BAD_URLS[4]) == 2049
    hub_id, auth = await hub.create_hub()
    path = f"/api/v1/integrations/hubs/{hub_id}"
    for url in BAD_URLS:
        for body in ({"channelId": "Direct", "name": "desk",
                      "configuration": {"integrationType": "Agent", "webhookUrl": url}},
                     {"channelId": "System", "name": "audit",
                      "configuration": {"webhookUrl": url, "events": ["message:*"]}}):
            r = await hub.client.post(path, json=body, headers=auth)
            assert _error(r) == (400, "invalid_url", FIELD), (url, r.text)
    # A refused create leaves nothing behind.
    r = await hub.client.get(path, headers=auth)
    assert r.status_code == 200 and r.json() == []

    good = "https://example.com/hook"
    made = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": good})
    iid = made["integrationId"]
    for url in BAD_URLS:
        for method, target in (("PATCH", f"/api/v1/integrations/{iid}"),
                               ("POST", f"/api/v1/integrations/hubs/{iid}")):
            r = await hub.client.request(method, target, headers=auth, json={
                "configuration": {"integrationType": "Agent", "webhookUrl": url}})
            assert _error(r) == (400, "invalid_url", FIELD), (method, url, r.text)
    got = (await hub.client.get(f"/api/v1/integrations/{iid}", headers=auth)).json()
    assert got["configuration"]["webhookUrl"] == good
    r = await hub.client.get(path, headers=auth)
    assert [i["integrationId"] for i in r.json()] == [iid]


async def _closed_with(ws: Any) -> int | None:
    """Read until the server closes the socket; its close code."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return info.value.rcvd.code if info.value.rcvd is not None else None


async def test_deep_websocket_frames_close_the_socket_with_4400(hub: RunningHub) -> None:
    hub_id, auth = await hub.create_hub()
    webchat = await hub.create_integration(
        hub_id, auth, channelId="WebChat", name="chat",
        configuration={"allowedOrigins": ["localhost"]})
    direct = await hub.create_integration(hub_id, auth, channelId="Direct", name="desk",
                                          configuration={"integrationType": "Agent"})
    deep = '{"type":"message","id":"m1","text":"x","x":' + "[" * 5_000 + "]" * 5_000 + "}"
    chat_url = f"ws://127.0.0.1:{hub.port}/webchat/{webchat['integrationId']}/ws"
    async with connect(chat_url, origin="http://localhost") as ws:
        await ws.send(deep)
        assert await _closed_with(ws) == 4400
    # The gateway goes on: a new visitor says hello and is answered.
    async with connect(chat_url, origin="http://localhost") as ws:
        await ws.send(json.dumps({"type": "hello"}))
        async with asyncio.timeout(20):
            while json.loads(await ws.recv())["type"] != "session":
                pass

    stream_url = f"ws://127.0.0.1:{hub.port}/v1/integrations/{direct['integrationId']}/stream"
    async with connect(stream_url, additional_headers=auth) as ws:
        await ws.send('{"type":"ack","cursor":' + "[" * 5_000 + "]" * 5_000 + "}")
        assert await _closed_with(ws) == 4400


async def test_a_create_refused_by_validation_touches_no_provider(broker: Any) -> None:
    # Provisioning points the Twilio number at the new integration; a create refused for
    # any of its fields must not get that far (else the number would point at nothing).
    fake = await FakeTwilio().start()
    hub = await RunningHub(make_settings(broker, twilio_api_url=fake.url,
                                         public_url="https://hub.example.test"),
                           services=["api"]).start()
    try:
        hub_id, auth = await hub.create_hub()
        sid, token = fake.add_account()
        number = fake.add_number(sid, "+14165550123")
        config = {"accountSid": sid, "authToken": token, "numberSid": number.sid}
        path = f"/api/v1/integrations/hubs/{hub_id}"
        for extra, expected in (({"statusId": 1}, ("invalid_status", "statusId")),
                                ({"integrationTypeId": "Agent"},
                                 ("invalid_integration_type", "integrationTypeId"))):
            r = await hub.client.post(path, headers=auth, json={
                "channelId": "TwilioSMS", "name": "sms", "configuration": config, **extra})
            assert _error(r)[1:] == expected, r.text
            assert number.sms_url is None, "the number was pointed at a refused integration"
        r = await hub.client.get(path, headers=auth)
        assert r.status_code == 200 and r.json() == []
    finally:
        await hub.stop()
        await fake.stop()
