"""Messenger end to end: Meta's webhook in, the Graph Send API out, on a real broker.

Meta's side is played by the test (bodies in Meta's format, signed with hmac/hashlib
here), the Graph API by `FakeGraph` on loopback; the hub is all services on one broker.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from switchboard.brokers import start_broker
from switchboard.kafka import ACTIVITIES
from tests.conftest import RunningHub, make_settings
from tests.fakes.messenger import (
    RATE_LIMITED,
    USER_UNAVAILABLE,
    FakeGraph,
    Page,
    echo_event,
    entry,
    graph_error,
    meta_signature,
    postback_event,
    read_event,
    text_event,
    webhook,
)
from tests.support import Receiver, message, sign_with_cryptography

VERSION = "v19.0"
APP_ID = "1001"
APP_SECRET = "meta-app-secret-" + uuid.uuid4().hex
OTHER_APP_ID = "2002"
OTHER_SECRET = "other-app-secret-" + uuid.uuid4().hex
VERIFY_TOKEN = "verify-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
async def graph() -> AsyncIterator[FakeGraph]:
    g = await FakeGraph(VERSION, require_proof=True).start()
    g.add_app(APP_ID, APP_SECRET)
    g.add_app(OTHER_APP_ID, OTHER_SECRET)
    try:
        yield g
    finally:
        await g.stop()


@pytest.fixture(scope="module")
async def mhub(broker: Any, graph: FakeGraph) -> AsyncIterator[RunningHub]:
    settings = make_settings(broker, meta_graph_url=graph.url, meta_graph_version=VERSION,
                             meta_verify_token=VERIFY_TOKEN, meta_app_secret=APP_SECRET)
    h = await RunningHub(settings).start()
    try:
        yield h
    finally:
        await h.stop()


def _page_id() -> str:
    return str(random.randrange(10**14, 10**15))


def _psid() -> str:
    return str(random.randrange(10**15, 10**16))


async def _messenger(h: RunningHub, graph: FakeGraph, hub_id: str, auth: dict[str, str],
                     name: str, *, app_id: str = APP_ID, **config: Any
                     ) -> tuple[dict[str, Any], Page]:
    page = graph.add_page(_page_id(), app_id)
    made = await h.create_integration(hub_id, auth, channelId="Messenger", name=name,
                                      configuration={"pageAccessToken": page.token, **config})
    return made, page


async def _system(h: RunningHub, hub_id: str, auth: dict[str, str], url: str,
                  events: list[str]) -> dict[str, Any]:
    return await h.create_integration(hub_id, auth, channelId="System", name="audit",
                                      configuration={"webhookUrl": url, "events": events})


async def _deliver(h: RunningHub, body: bytes, secret: str = APP_SECRET) -> None:
    r = await h.client.post("/ingress/meta", content=body, headers=meta_signature(secret, body))
    assert r.status_code == 200, r.text
    assert r.text == "EVENT_RECEIVED"


async def _kafka_activities(h: RunningHub) -> list[dict[str, Any]]:
    """Everything on the hub's `activities` topic right now."""
    s = h.settings
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(s.topic(ACTIVITIES), p) for p in range(s.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend(orjson.loads(r.value) for r in records)
        return out
    finally:
        await consumer.stop()


def _text(activity: dict[str, Any]) -> str | None:
    return (activity.get("message") or {}).get("text")


# ---- the loop -------------------------------------------------------------------------


async def _deprovision_roundtrip(mhub: RunningHub, graph: FakeGraph, hub_id: str,
                                 auth: dict[str, str]) -> None:
    """Deleting a Messenger integration unsubscribes the app from its Page."""
    made, page = await _messenger(mhub, graph, hub_id, auth, "short-lived")
    assert page.page_id in graph.subscriptions
    r = await mhub.client.delete(f"/api/v1/integrations/{made['integrationId']}",
                                 headers=auth)
    assert r.status_code == 204
    assert page.page_id not in graph.subscriptions


async def test_messenger_to_agent_and_back(mhub: RunningHub, graph: FakeGraph,
                                           receiver: Receiver) -> None:
    hub_id, auth = await mhub.create_hub()
    made, page = await _messenger(mhub, graph, hub_id, auth, "fb",
                                  start=[{"type": "text", "text": "Welcome!"}])
    cfg = made["configuration"]
    assert made["channelId"] == "Messenger" and made["integrationTypeId"] == "Customer"
    assert cfg["pageId"] == page.page_id and cfg["appId"] == APP_ID
    assert cfg["pageAccessToken"] == "********"
    assert page.token not in orjson.dumps(made).decode()
    assert graph.subscriptions[page.page_id] == [
        "messages", "messaging_postbacks", "message_reads"]
    await _deprovision_roundtrip(mhub, graph, hub_id, auth)
    agent = await mhub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})

    psid = _psid()
    await _deliver(mhub, webhook(entry(page.page_id, text_event(psid, page.page_id,
                                                                "hello, I need help"))))
    got = (await receiver.wait_for("/agent", 1))[0].json
    activity = got["activity"]
    assert activity["type"] == "message:customer"
    assert activity["integrationId"] == made["integrationId"]
    assert activity["channelId"] == "Messenger"
    assert activity["sender"] == {"id": psid}
    assert activity["message"] == {"type": "text", "text": "hello, I need help"}
    assert activity["metadata"]["pageId"] == page.page_id

    # The agent answers in that conversation through the ingress; Graph gets the send.
    answer = message("happy to help", sender="agent-7", conversation=got["conversationId"])
    r = await mhub.client.post(
        f"/ingress/{agent['integrationId']}", content=answer,
        headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"], answer))
    assert r.status_code == 202, r.text
    sent = await graph.wait_sent(psid, 2)
    assert [s["message"]["text"] for s in sent] == ["Welcome!", "happy to help"]
    for s in sent:
        assert s["recipient"] == {"id": psid}
        assert s["messaging_type"] == "RESPONSE"
    calls = [c for c in graph.sent if c.json["recipient"]["id"] == psid]
    assert all(c.page_id == page.page_id and c.query["access_token"] == page.token
               for c in calls)


async def test_create_checks_the_token(mhub: RunningHub, graph: FakeGraph) -> None:
    hub_id, auth = await mhub.create_hub()
    r = await mhub.client.post(
        f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
        json={"channelId": "Messenger", "name": "fb",
              "configuration": {"pageAccessToken": "EAAnot-a-real-token"}})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["description"] == "Invalid OAuth access token."
    listed = await mhub.client.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)
    assert listed.status_code == 200 and listed.json() == []
    # One Page, one integration: a second one for the same Page is refused.
    _, page = await _messenger(mhub, graph, hub_id, auth, "fb")
    r = await mhub.client.post(
        f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
        json={"channelId": "Messenger", "name": "fb2",
              "configuration": {"pageAccessToken": page.token}})
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["code"] == "page_in_use"


# ---- the webhook's checks ---------------------------------------------------------------


async def test_handshake_and_signatures(mhub: RunningHub, graph: FakeGraph) -> None:
    ok = await mhub.client.get("/ingress/meta", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "wrong",
                    "hub.challenge": "1"}, {"hub.mode": "subscribe", "hub.challenge": "1"}):
        bad = await mhub.client.get("/ingress/meta", params=params)
        assert bad.status_code == 403
        assert bad.json()["errors"][0]["code"] == "invalid_verify_token"

    hub_id, auth = await mhub.create_hub()
    _, page = await _messenger(mhub, graph, hub_id, auth, "fb")
    mid = f"m_forged_{uuid.uuid4().hex}"
    body = webhook(entry(page.page_id, text_event(_psid(), page.page_id, "forged", mid=mid)))
    good = meta_signature(APP_SECRET, body)
    cases = [
        ({"content-type": "application/json"}, body, "missing_signature"),
        (meta_signature("not-the-secret", body), body, "invalid_signature"),
        (good, body.replace(b"forged", b"FORGED"), "invalid_signature"),
        ({**good, "x-hub-signature-256": "sha1=" + "0" * 40}, body, "invalid_signature"),
    ]
    for headers, content, code in cases:
        r = await mhub.client.post("/ingress/meta", content=content, headers=headers)
        assert r.status_code == 401, (code, r.text)
        assert r.json()["errors"][0]["code"] == code
    assert not any(mid in orjson.dumps(a).decode() for a in await _kafka_activities(mhub))


async def test_batches_route_by_page(mhub: RunningHub, graph: FakeGraph,
                                     receiver: Receiver) -> None:
    hub_id, auth = await mhub.create_hub()
    one, p1 = await _messenger(mhub, graph, hub_id, auth, "one")
    two, p2 = await _messenger(mhub, graph, hub_id, auth, "two")
    # A Page of another app, whose secret is set on the integration.
    own, p3 = await _messenger(mhub, graph, hub_id, auth, "own", app_id=OTHER_APP_ID,
                               appSecret=OTHER_SECRET)
    assert own["configuration"]["appSecret"] == "********"
    await _system(mhub, hub_id, auth, receiver.url + "/system", ["message:customer"])
    u1, u2, u3 = _psid(), _psid(), _psid()

    # One delivery from Meta with entries for two Pages (and one nobody knows).
    await _deliver(mhub, webhook(
        entry(p1.page_id, text_event(u1, p1.page_id, "for one")),
        entry(p2.page_id, text_event(u2, p2.page_id, "for two")),
        entry(_page_id(), text_event(_psid(), "0", "for nobody"))))
    got = await receiver.wait_for("/system", 2)
    by_integration = {g.json["activities"][0]["integrationId"]: _text(g.json["activities"][0])
                      for g in got}
    assert by_integration == {one["integrationId"]: "for one",
                              two["integrationId"]: "for two"}

    # Signed with the global secret, a body for the other app's Page is refused...
    r = await mhub.client.post(
        "/ingress/meta", content=(b := webhook(entry(p3.page_id, text_event(
            u3, p3.page_id, "wrong app")))), headers=meta_signature(APP_SECRET, b))
    assert r.status_code == 200  # verified (global secret), but the event is not p3's
    # ...and the other app's secret cannot speak for a Page of the global app.
    spoof = webhook(entry(p1.page_id, text_event(u1, p1.page_id, "spoofed")))
    r = await mhub.client.post("/ingress/meta", content=spoof,
                               headers=meta_signature(OTHER_SECRET, spoof))
    assert r.status_code == 401
    await _deliver(mhub, webhook(
        entry(p3.page_id, text_event(u3, p3.page_id, "for own")),
        entry(p1.page_id, text_event(u1, p1.page_id, "spoofed too"))), secret=OTHER_SECRET)
    got = await receiver.wait_for("/system", 3)
    third = got[2].json["activities"][0]
    assert (third["integrationId"], _text(third)) == (own["integrationId"], "for own")
    texts = {_text(a) for a in await _kafka_activities(mhub)}
    assert {"for one", "for two", "for own"} <= texts
    assert not texts & {"for nobody", "wrong app", "spoofed", "spoofed too"}


async def test_echo_postback_read_and_redelivery(mhub: RunningHub, graph: FakeGraph,
                                                 receiver: Receiver) -> None:
    hub_id, auth = await mhub.create_hub()
    made, page = await _messenger(mhub, graph, hub_id, auth, "fb")
    await _system(mhub, hub_id, auth, receiver.url + "/system",
                  ["message:customer", "event:postback", "event:seen"])
    psid, pid = _psid(), page.page_id
    batch = webhook(entry(
        pid,
        echo_event(pid, psid, "a reply the Page sent", app_id=APP_ID),
        postback_event(psid, pid, "GET_STARTED", "Get Started"),
        text_event(psid, pid, "only once", mid=f"m_{uuid.uuid4().hex}"),
        read_event(psid, pid, 1458668856253),
    ))
    await _deliver(mhub, batch)
    await _deliver(mhub, batch)  # Meta redelivers the same batch
    await _deliver(mhub, webhook(entry(pid, text_event(psid, pid, "after"))))
    # "after" is the sentinel: same conversation, same destination, sent last, so any
    # extra copy of the batch's events would have been delivered before it.
    got = await receiver.wait_until(
        "/system", lambda got: any(_text(g.json["activities"][0]) == "after" for g in got))
    activities = [g.json["activities"][0] for g in got]
    assert [a["type"] for a in activities] == [
        "event:postback", "message:customer", "event:seen", "message:customer"]
    postback, once, seen, after = activities
    assert postback["event"] == {"name": "postback",
                                 "data": {"payload": "GET_STARTED", "title": "Get Started"}}
    assert postback["integrationId"] == made["integrationId"]
    assert _text(once) == "only once" and _text(after) == "after"
    assert seen["event"]["name"] == "seen"
    assert seen["event"]["data"] == {"watermark": 1458668856253}
    assert len({a["conversationId"] for a in activities}) == 1
    assert len(got) == 4


# ---- sends that fail ----------------------------------------------------------------------


async def test_graph_rate_limit_then_success_and_permanent_failure(
        mhub: RunningHub, graph: FakeGraph, receiver: Receiver) -> None:
    hub_id, auth = await mhub.create_hub()
    made, page = await _messenger(mhub, graph, hub_id, auth, "fb")
    agent = await mhub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
    await _system(mhub, hub_id, auth, receiver.url + "/system", ["event:delivery_failed"])
    key = agent["configuration"]["privateSigningKey"]
    busy, gone, chatty = _psid(), _psid(), _psid()
    graph.script[busy] = [RATE_LIMITED]
    graph.script[gone] = [USER_UNAVAILABLE]
    # A long answer goes in two parts; the second fails once with a 500.
    graph.script[chatty] = [None, graph_error("An unexpected error has occurred.", 2,
                                              status=500)]
    long_answer = " ".join(["lorem"] * 500)  # 2999 characters

    for n, psid in enumerate((busy, gone, chatty), start=1):
        await _deliver(mhub, webhook(entry(page.page_id, text_event(psid, page.page_id,
                                                                    f"hi from {n}"))))
        conv = (await receiver.wait_for("/agent", n))[-1].json["conversationId"]
        text = long_answer if psid == chatty else f"answer {n}"
        answer = message(text, sender="agent-7", conversation=conv)
        r = await mhub.client.post(f"/ingress/{agent['integrationId']}", content=answer,
                                   headers=sign_with_cryptography(key, answer))
        assert r.status_code == 202, r.text

    sent = await graph.wait_sent(busy, 1)
    assert sent[0]["message"]["text"] == "answer 1"
    assert graph.attempts_to(busy) == 2  # a 429, then the retry went through

    failed = (await receiver.wait_for("/system", 1))[0].json["activities"][0]
    assert failed["type"] == "event:delivery_failed"
    data = failed["event"]["data"]
    assert data["destinationId"] == made["integrationId"]
    assert data["reason"] == "graph_551_1545041" and data["status"] == 400
    assert data["attempts"] == 1  # permanent: not retried
    assert graph.sent_to(gone) == [] and graph.attempts_to(gone) == 1

    parts = await graph.wait_sent(chatty, 2)
    assert " ".join(p["message"]["text"] for p in parts) == long_answer
    assert graph.attempts_to(chatty) == 3  # the first part was not sent twice


async def test_broker_down_answers_503_so_meta_retries(tmp_path: Path, graph: FakeGraph
                                                       ) -> None:
    broker = start_broker("tansu", tmp_path)
    h = await RunningHub(make_settings(
        broker, produce_timeout_s=1.0, meta_graph_url=graph.url, meta_graph_version=VERSION,
        meta_verify_token=VERIFY_TOKEN, meta_app_secret=APP_SECRET), ["api", "ingress"]).start()
    try:
        hub_id, auth = await h.create_hub()
        _, page = await _messenger(h, graph, hub_id, auth, "fb")
        await _deliver(h, webhook(entry(page.page_id, text_event(_psid(), page.page_id, "a"))))
        broker.kill()
        body = webhook(entry(page.page_id, text_event(_psid(), page.page_id, "b")))
        r = await h.client.post("/ingress/meta", content=body,
                                headers=meta_signature(APP_SECRET, body))
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "broker_unavailable"
    finally:
        await h.stop()
        broker.stop()
