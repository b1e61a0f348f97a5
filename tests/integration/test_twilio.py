"""TwilioSMS end to end: a loopback Twilio, a real hub on a real broker, a Direct agent.

The hub's public URL is not its bind address (as behind a proxy): Twilio signs the public
URL, and the fake's `rewrite` plays the proxy that forwards it to the hub on loopback.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import RunningHub, make_settings
from tests.fakes.twilio import FakeTwilio, Number
from tests.support import Receiver, message, sign_with_cryptography

PUBLIC = "https://sms.example.test/sb"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


@dataclass
class Env:
    hub: RunningHub
    twilio: FakeTwilio
    receiver: Receiver

    def rewrite(self, url: str) -> str:
        assert url.startswith(PUBLIC), url
        return self.hub.base_url + url[len(PUBLIC):]


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    fake = await FakeTwilio().start()
    receiver = await Receiver().start()
    # Five attempts; the longest wait (2 s) is also the cap on a Retry-After, so the 1 s
    # one of the 429 test is honoured whole.
    settings = make_settings(broker, twilio_api_url=fake.url, public_url=PUBLIC,
                             retry_schedule="0,0.05,0.1,0.2,2")
    hub = await RunningHub(settings).start()
    try:
        yield Env(hub, fake, receiver)
    finally:
        await hub.stop()
        await receiver.stop()
        await fake.stop()


@dataclass
class Setup:
    hub_id: str
    auth: dict[str, str]
    account: tuple[str, str]
    number: Number
    sms: dict[str, Any]
    agent: dict[str, Any]
    tag: str


def phone() -> str:
    return "+1416" + str(uuid.uuid4().int)[:7]


async def setup(env: Env, **sms_config: Any) -> Setup:
    """A tenant with a TwilioSMS number, a Direct agent and a System observer."""
    tag = "/" + uuid.uuid4().hex[:8]
    hub_id, auth = await env.hub.create_hub(tag[1:])
    sid, token = env.twilio.add_account()
    number = env.twilio.add_number(sid, phone())
    sms = await env.hub.create_integration(
        hub_id, auth, channelId="TwilioSMS", name="sms",
        configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid,
                       **sms_config})
    agent = await env.hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent",
                       "webhookUrl": f"{env.receiver.url}{tag}/agent"})
    await env.hub.create_integration(
        hub_id, auth, channelId="System", name="audit",
        configuration={"webhookUrl": f"{env.receiver.url}{tag}/system",
                       "events": ["event:delivery_failed", "event:message_status"]})
    return Setup(hub_id, auth, (sid, token), number, sms, agent, tag)


async def answer(env: Env, s: Setup, conversation: str, text: str) -> str:
    """The agent answers in `conversation` through the ingress; returns the activity id."""
    body = message(text, sender="agent-7", conversation=conversation)
    r = await env.hub.client.post(
        f"/ingress/{s.agent['integrationId']}", content=body,
        headers=sign_with_cryptography(s.agent["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text
    activity_id: str = r.json()["activityId"]
    return activity_id


async def texts_at_agent(env: Env, s: Setup, count: int) -> list[dict[str, Any]]:
    got = await env.receiver.wait_for(s.tag + "/agent", count)
    return [g.json for g in got]


async def agent_until(env: Env, s: Setup, sentinel: str) -> list[dict[str, Any]]:
    """Everything the agent got, once the message `sentinel` has arrived."""
    got = await env.receiver.wait_until(s.tag + "/agent", lambda got: any(
        g.json["activity"]["message"]["text"] == sentinel for g in got))
    return [g.json for g in got]


# ---- provisioning -------------------------------------------------------------------------


async def test_create_fetches_the_number_and_points_it_at_the_hub(env: Env) -> None:
    s = await setup(env)
    cfg = s.sms["configuration"]
    assert s.sms["integrationTypeId"] == "Customer"
    assert cfg["phoneNumber"] == s.number.phone_number
    assert cfg["capabilities"] == {"mms": True, "sms": True, "voice": True}
    assert cfg["authToken"] == "********"
    assert s.account[1] not in str(s.sms)
    assert s.number.sms_url == f"{PUBLIC}/ingress/{s.sms['integrationId']}"
    assert s.number.sms_method == "POST"
    r = await env.hub.client.get(f"/api/v1/integrations/{s.sms['integrationId']}",
                                 headers=s.auth)
    assert r.json()["configuration"]["authToken"] == "********"
    # A number has one SmsUrl: a second integration may not take it over silently.
    r = await env.hub.client.post(
        f"/api/v1/integrations/hubs/{s.hub_id}", headers=s.auth,
        json={"channelId": "TwilioSMS", "name": "sms-2",
              "configuration": {"accountSid": s.account[0], "authToken": s.account[1],
                                "numberSid": s.number.sid}})
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["code"] == "number_in_use"
    assert s.number.sms_url == f"{PUBLIC}/ingress/{s.sms['integrationId']}"
    # Deleting the integration unhooks the number at Twilio and frees it.
    r = await env.hub.client.delete(f"/api/v1/integrations/{s.sms['integrationId']}",
                                    headers=s.auth)
    assert r.status_code == 204
    assert not s.number.sms_url


async def test_wrong_credentials_are_refused_and_nothing_is_stored(env: Env) -> None:
    hub_id, auth = await env.hub.create_hub("refused")
    sid, token = env.twilio.add_account()
    number = env.twilio.add_number(sid, phone())
    cases = [
        ({"accountSid": sid, "authToken": "wrong", "numberSid": number.sid},
         "Twilio: Authenticate (code 20003)", "configuration.authToken"),
        ({"accountSid": "AC" + "0" * 32, "authToken": token, "numberSid": number.sid},
         "Twilio: Authenticate (code 20003)", "configuration.authToken"),
        ({"accountSid": sid, "authToken": token, "numberSid": "PN" + "0" * 32},
         "was not found (code 20404)", "configuration.numberSid"),
    ]
    for config, description, field in cases:
        r = await env.hub.client.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
                                      json={"channelId": "TwilioSMS", "name": "sms",
                                            "configuration": config})
        assert r.status_code == 400, r.text
        err = r.json()["errors"][0]
        assert description in err["description"]
        assert err["field"] == field
        assert token not in r.text
    r = await env.hub.client.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == []
    assert number.sms_url is None  # the number was never touched


# ---- the loop ---------------------------------------------------------------------------------


async def test_sms_to_agent_and_answer_back_as_sms(env: Env) -> None:
    s = await setup(env, start=[{"type": "text", "text": "Thanks for texting Acme!"}])
    customer = phone()
    r = await env.twilio.incoming_sms(s.number, customer, "my order is late",
                                      rewrite=env.rewrite)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    assert r.text == TWIML

    [got] = await texts_at_agent(env, s, 1)
    activity = got["activity"]
    assert activity["type"] == "message:customer"
    assert activity["channelId"] == "TwilioSMS"
    assert activity["message"] == {"type": "text", "text": "my order is late"}
    assert activity["sender"]["id"] == customer
    conversation = got["conversationId"]

    # The new conversation got the integration's start message, as an SMS.
    [welcome] = await env.twilio.wait_for(customer, 1)
    assert welcome.get("Body") == "Thanks for texting Acme!"

    answer_id = await answer(env, s, conversation, "It ships today.")
    sent = (await env.twilio.wait_for(customer, 2))[1]
    assert sent.get("From") == s.number.phone_number
    assert sent.get("To") == customer
    assert sent.get("Body") == "It ships today."
    assert sent.auth == s.account  # HTTP basic auth: account SID and auth token
    assert sent.get("StatusCallback") == \
        f"{PUBLIC}/ingress/{s.sms['integrationId']}?ref={answer_id}"

    # Twilio reports the delivery; a System integration sees it, tied to the answer.
    r = await env.twilio.status_callback(sent, "sent", rewrite=env.rewrite)
    assert r.status_code == 200 and r.text == TWIML
    r = await env.twilio.status_callback(sent, "delivered", rewrite=env.rewrite)
    assert r.status_code == 200
    system = await env.receiver.wait_for(s.tag + "/system", 2)
    events = [a for g in system for a in g.json["activities"]]
    assert [e["type"] for e in events] == ["event:message_status"] * 2
    assert [e["event"]["data"]["status"] for e in events] == ["sent", "delivered"]
    assert {e["event"]["ref"] for e in events} == {answer_id}
    assert {e["event"]["data"]["messageSid"] for e in events} == {sent.sid}
    assert {e["conversationId"] for e in events} == {conversation}

    # An MMS: the text, then each media item, in order, in the same conversation.
    r = await env.twilio.incoming_sms(
        s.number, customer, "photos attached", rewrite=env.rewrite,
        media=[("https://api.twilio.com/media/ME1", "image/jpeg"),
               ("https://api.twilio.com/media/ME2", "application/pdf")])
    assert r.status_code == 200
    got = await texts_at_agent(env, s, 4)
    assert [g["activity"]["message"] for g in got[1:]] == [
        {"type": "text", "text": "photos attached"},
        {"type": "image", "url": "https://api.twilio.com/media/ME1"},
        {"type": "file", "url": "https://api.twilio.com/media/ME2",
         "mimeType": "application/pdf"},
    ]
    assert {g["conversationId"] for g in got} == {conversation}


async def test_long_answers_and_cards(env: Env) -> None:
    s = await setup(env)
    customer = phone()
    await env.twilio.incoming_sms(s.number, customer, "tell me everything",
                                  rewrite=env.rewrite)
    [got] = await texts_at_agent(env, s, 1)
    words = [f"w{i}" for i in range(600)]  # ~2300 characters: over Twilio's 1600
    answer_id = await answer(env, s, got["conversationId"], " ".join(words))
    parts = await env.twilio.wait_for(customer, 2)
    assert all(len(p.get("Body") or "") <= 1600 for p in parts)
    assert " ".join(p.get("Body") or "" for p in parts).split() == words
    assert [p.get("StatusCallback") for p in parts] == [
        f"{PUBLIC}/ingress/{s.sms['integrationId']}?ref={answer_id}&part={i}" for i in (1, 2)]

    # A card: readable text, its image as MMS media.
    card = {"type": "message", "sender": {"id": "agent-7"},
            "conversationId": got["conversationId"],
            "message": {"type": "card", "title": "Order 42", "subtitle": "Shipped",
                        "imageUrl": "https://cdn.example.com/box.png",
                        "buttons": [{"title": "Track", "type": "url",
                                     "url": "https://t.example.com/42"}]}}
    body = httpx.Request("POST", "/", json=card).content
    r = await env.hub.client.post(
        f"/ingress/{s.agent['integrationId']}", content=body,
        headers=sign_with_cryptography(s.agent["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text
    sent = (await env.twilio.wait_for(customer, 3))[2]
    assert sent.get("Body") == "Order 42\nShipped\n- Track: https://t.example.com/42"
    assert sent.all("MediaUrl") == ["https://cdn.example.com/box.png"]


# ---- signatures and retries -----------------------------------------------------------------


async def test_bad_and_missing_signatures_are_refused(env: Env) -> None:
    s = await setup(env)
    customer = phone()
    path = f"/ingress/{s.sms['integrationId']}"
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": s.account[0],
              "From": customer, "To": s.number.phone_number, "Body": "forged",
              "NumMedia": "0", "SmsStatus": "received"}
    token = s.account[1]
    # Before authentication every refusal is the ingress's one 401 (nothing about the
    # integration or its channel).
    attempts = {
        "missing": {},
        "wrong token": {"X-Twilio-Signature": RequestValidator("nope").compute_signature(
            PUBLIC + path, params)},
        # Signed for the bind address, not the public URL Twilio was given.
        "bind address": {"X-Twilio-Signature": RequestValidator(token).compute_signature(
            env.hub.base_url + path, params)},
        "garbage": {"X-Twilio-Signature": "not base64 at all"},
    }
    for name, headers in attempts.items():
        r = await env.hub.client.post(path, data=params, headers=headers)
        assert r.status_code == 401, (name, r.text)
        assert r.json()["errors"][0]["code"] == "unauthenticated"
    # A valid message from the same customer afterwards: it is the only one delivered.
    # (Same conversation, same partition: anything written before it would come first.)
    r = await env.twilio.incoming_sms(s.number, customer, "genuine", rewrite=env.rewrite)
    assert r.status_code == 200
    got = await agent_until(env, s, "genuine")
    assert [g["activity"]["message"]["text"] for g in got] == ["genuine"]


async def test_a_retried_message_sid_is_delivered_once(env: Env) -> None:
    s = await setup(env)
    customer = phone()
    sid = "SM" + uuid.uuid4().hex
    for _ in range(3):
        r = await env.twilio.incoming_sms(s.number, customer, "once", sid=sid,
                                          rewrite=env.rewrite)
        assert r.status_code == 200 and r.text == TWIML
    # "next" is the sentinel: same customer, same conversation, sent after the retries.
    await env.twilio.incoming_sms(s.number, customer, "next", rewrite=env.rewrite)
    got = await agent_until(env, s, "next")
    assert [g["activity"]["message"]["text"] for g in got] == ["once", "next"]


async def test_twilio_429_and_500_are_retried_in_order(env: Env) -> None:
    s = await setup(env)
    busy, broken = phone(), phone()
    for customer in (busy, broken):
        await env.twilio.incoming_sms(s.number, customer, "hi", rewrite=env.rewrite)
    got = await texts_at_agent(env, s, 2)
    conversation = {g["activity"]["sender"]["id"]: g["conversationId"] for g in got}
    env.twilio.script(busy, [(429, {"Retry-After": "1"})])
    env.twilio.script(broken, [(500, {}), (503, {})])
    await answer(env, s, conversation[busy], "first")
    await answer(env, s, conversation[busy], "second")
    await answer(env, s, conversation[broken], "eventually")

    sent = await env.twilio.wait_for(busy, 2)
    assert [m.get("Body") for m in sent] == ["first", "second"]
    tries = env.twilio.attempts(busy)
    assert [t.status for t in tries] == [429, 201, 201]
    assert tries[1].at - tries[0].at >= 0.95  # Retry-After honoured
    [ok] = await env.twilio.wait_for(broken, 1)
    assert ok.get("Body") == "eventually"
    assert [t.status for t in env.twilio.attempts(broken)] == [500, 503, 201]


async def test_a_rejected_number_fails_the_delivery_and_tells_system(env: Env) -> None:
    s = await setup(env)
    invalid = "+1555"  # Twilio answers 400, code 21211: never retried
    await env.twilio.incoming_sms(s.number, invalid, "call me", rewrite=env.rewrite)
    [got] = await texts_at_agent(env, s, 1)
    answer_id = await answer(env, s, got["conversationId"], "sure")
    [received] = await env.receiver.wait_for(s.tag + "/system", 1)
    [event] = received.json["activities"]
    assert event["type"] == "event:delivery_failed"
    assert event["event"]["ref"] == answer_id
    assert event["event"]["data"]["reason"] == "twilio_21211"
    assert event["event"]["data"]["status"] == 400
    assert event["event"]["data"]["destinationId"] == s.sms["integrationId"]
    assert [t.status for t in env.twilio.attempts(invalid)] == [400]


async def test_failed_status_callback_carries_the_error_code(env: Env) -> None:
    s = await setup(env)
    customer = phone()
    await env.twilio.incoming_sms(s.number, customer, "hello", rewrite=env.rewrite)
    [got] = await texts_at_agent(env, s, 1)
    answer_id = await answer(env, s, got["conversationId"], "hi there")
    [sent] = await env.twilio.wait_for(customer, 1)
    r = await env.twilio.status_callback(sent, "undelivered", error_code="30003",
                                         rewrite=env.rewrite)
    assert r.status_code == 200
    # Twilio retrying the same callback is one event.
    await env.twilio.status_callback(sent, "undelivered", error_code="30003",
                                     rewrite=env.rewrite)
    # Sentinel: the status of a later answer to the same customer (same conversation, same
    # System destination); a second copy of the first event would arrive before it.
    later_id = await answer(env, s, got["conversationId"], "are you there?")
    later = (await env.twilio.wait_for(customer, 2))[1]
    r = await env.twilio.status_callback(later, "delivered", rewrite=env.rewrite)
    assert r.status_code == 200
    received = await env.receiver.wait_until(s.tag + "/system", lambda got: any(
        g.json["activities"][0]["event"]["ref"] == later_id for g in got))
    events = [a for g in received for a in g.json["activities"]]
    assert [e["event"]["ref"] for e in events] == [answer_id, later_id]
    event = events[0]
    assert event["type"] == "event:message_status"
    assert event["event"]["data"] == {"messageSid": sent.sid, "status": "undelivered",
                                      "to": customer, "errorCode": 30003}
    assert events[1]["event"]["data"]["status"] == "delivered"


async def test_webhooks_signed_with_a_shared_key(env: Env) -> None:
    """A Twilio Webhook Rule may sign with a SharedKey (and HMAC-SHA256) instead."""
    s = await setup(env, sharedKeySecret="ks-secret-123")
    assert s.sms["configuration"]["sharedKeySecret"] == "********"
    customer = phone()
    path = f"/ingress/{s.sms['integrationId']}"
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": s.account[0],
              "From": customer, "To": s.number.phone_number, "Body": "rule-signed",
              "NumMedia": "0", "SmsStatus": "received"}
    settings = "key=KS" + uuid.uuid4().hex + ",algorithm=HMAC_SHA256"
    signature = RequestValidator("ks-secret-123").compute_signature(
        PUBLIC + path, params, "HMAC_SHA256")
    # The auth token's signature is not what a SharedKey-signed request carries.
    r = await env.hub.client.post(path, data=params, headers={
        "X-Twilio-Signature": RequestValidator(s.account[1]).compute_signature(
            PUBLIC + path, params), "X-Twilio-Webhooks-Signature-Settings": settings})
    assert r.status_code == 401, r.text
    r = await env.hub.client.post(path, data=params, headers={
        "X-Twilio-Signature": signature, "X-Twilio-Webhooks-Signature-Settings": settings})
    assert r.status_code == 200, r.text
    [got] = await texts_at_agent(env, s, 1)
    assert got["activity"]["message"]["text"] == "rule-signed"
    # Not form-encoded: refused before anything else (as unauthenticated).
    r = await env.hub.client.post(path, json=params, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 401
