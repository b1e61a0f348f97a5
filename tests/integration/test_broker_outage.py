"""Acked means durable: with the broker gone the ingress answers 503, never 202.

On Tansu (killed, not restarted: it keeps nothing) the Direct ingress answers 503. On
Apache Kafka every ingress path (Direct, Twilio, Meta, Slack) answers 503 + Retry-After
while the broker is stopped, and the provider's retry of the same webhook, once the broker
is back, is acknowledged and delivered exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.brokers import start_broker
from switchboard.brokers.kafka import KafkaBroker
from tests.conftest import RunningHub, make_settings
from tests.fakes.messenger import FakeGraph, entry, meta_signature, text_event, webhook
from tests.fakes.slack import FakeSlack, message_event, signed
from tests.fakes.twilio import FakeTwilio
from tests.support import Receiver, message, sign_with_cryptography, slack_state

UNAVAILABLE = {"status": 503, "errors": [
    {"code": "broker_unavailable", "description": "could not store the activity; retry"}]}


async def test_ingress_answers_503_when_the_broker_is_down(tmp_path: Path) -> None:
    broker = start_broker("tansu", tmp_path)
    hub = await RunningHub(make_settings(broker, produce_timeout_s=1.0),
                           ["api", "ingress"]).start()
    try:
        hub_id, auth = await hub.create_hub()
        made = await hub.create_integration(hub_id, auth, channelId="Direct", name="c",
                                            configuration={"integrationType": "Customer"})
        key = made["configuration"]["privateSigningKey"]
        body = message("before")
        r = await hub.client.post(f"/ingress/{made['integrationId']}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 202
        broker.kill()
        body = message("during")
        r = await hub.client.post(f"/ingress/{made['integrationId']}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert r.json()["errors"][0]["code"] == "broker_unavailable"
        assert (await hub.client.get("/readyz")).status_code == 503
        assert (await hub.client.get("/healthz")).status_code == 200
    finally:
        await hub.stop()
        broker.stop()


# ---- Apache Kafka: every ingress path, through a stop and a start ----------------------------

PUBLIC = "https://hooks.example.test/sb"
GRAPH_VERSION = "v19.0"
APP_ID = "1001"
APP_SECRET = "meta-app-secret-" + uuid.uuid4().hex
SLACK_SECRET = "slack-signing-" + uuid.uuid4().hex
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

Post = Callable[[], Awaitable[httpx.Response]]


def _texts(got: list[Any]) -> list[str]:
    return [g.json["activity"]["message"]["text"] for g in got]


def _of(receiver: Receiver, path: str, conversation: str) -> list[str]:
    return _texts([g for g in receiver.at(path) if g.json["conversationId"] == conversation])


async def _retried(post: Post, timeout: float = 90.0) -> httpx.Response:
    """The provider's side: retry the same webhook while the hub answers 503."""
    deadline = time.monotonic() + timeout
    while True:
        r = await post()
        if r.status_code != 503:
            return r
        assert time.monotonic() < deadline, f"still 503 after {timeout} s: {r.text}"
        await asyncio.sleep(0.5)


@pytest.mark.kafka_only
async def test_every_ingress_path_answers_503_in_a_kafka_outage_then_delivers_once(
        tmp_path: Path) -> None:
    broker = KafkaBroker.start(tmp_path / "kafka")
    twilio = await FakeTwilio().start()
    graph = await FakeGraph(GRAPH_VERSION).start()
    slack = await FakeSlack().start()
    receiver = await Receiver().start()
    hub: RunningHub | None = None
    try:
        settings = make_settings(
            broker, produce_timeout_s=2.0, public_url=PUBLIC, twilio_api_url=twilio.url,
            meta_graph_url=graph.url, meta_graph_version=GRAPH_VERSION,
            meta_verify_token="verify-" + uuid.uuid4().hex, meta_app_secret=APP_SECRET,
            slack_api_url=slack.url, slack_signing_secret=SLACK_SECRET,
            slack_client_id=slack.client_id, slack_client_secret=slack.client_secret)
        hub = h = await RunningHub(settings).start()

        def rewrite(url: str) -> str:  # the proxy in front of the hub
            assert url.startswith(PUBLIC), url
            return h.base_url + url[len(PUBLIC):]

        hub_id, auth = await hub.create_hub()
        site = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer",
                           "webhookUrl": receiver.url + "/customer"})
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
        sid, token = twilio.add_account()
        number = twilio.add_number(sid, "+14165550100")
        await hub.create_integration(
            hub_id, auth, channelId="TwilioSMS", name="sms",
            configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid})
        graph.add_app(APP_ID, APP_SECRET)
        page = graph.add_page(str(random.randrange(10**14, 10**15)), APP_ID)
        await hub.create_integration(hub_id, auth, channelId="Messenger", name="fb",
                                     configuration={"pageAccessToken": page.token})
        code, install = slack.grant("T0OUTAGE")
        await hub.create_integration(
            hub_id, auth, channelId="Slack", name="slack",
            configuration={"code": code, "state": slack_state(slack.client_secret),
                           "defaultPublicChannel": "general"})

        # Before the outage: a Direct customer opens a Slack thread for the Slack reply.
        site_key = site["configuration"]["privateSigningKey"]
        visitor = "visitor-" + uuid.uuid4().hex[:6]
        opened = message("open a thread", sender=visitor)
        r = await hub.client.post(f"/ingress/{site['integrationId']}", content=opened,
                                  headers=sign_with_cryptography(site_key, opened))
        assert r.status_code == 202, r.text
        (parent,) = await slack.wait_for_posts(1, timeout=60)
        [first] = await receiver.wait_for("/agent", 1, timeout=60)
        site_conversation = first.json["conversationId"]

        # One correctly signed webhook per ingress path, each sent again as is (Slack
        # marks its retries) as the provider would.
        direct = message("direct, during the outage", sender=visitor)
        direct_headers = sign_with_cryptography(site_key, direct, msg_id="outage-direct")
        texter, sms_sid = "+14165550199", "SM" + uuid.uuid4().hex
        psid = str(random.randrange(10**15, 10**16))
        meta_body = webhook(entry(page.page_id, text_event(psid, page.page_id,
                                                           "meta, during the outage")))
        reply = message_event(install.team_id, "C0GENERAL", text="slack, during the outage",
                              thread_ts=parent.ts, event_id="EvOUTAGE1", display_name="Dana")
        slack_tries = 0

        async def post_slack() -> httpx.Response:
            nonlocal slack_tries
            body, headers = signed(SLACK_SECRET, reply, retry_num=slack_tries or None)
            slack_tries += 1
            return await h.client.post("/ingress/slack", content=body, headers=headers)

        paths: dict[str, tuple[Post, int, str]] = {
            "Direct": (lambda: h.client.post(f"/ingress/{site['integrationId']}",
                                             content=direct, headers=direct_headers),
                       202, ""),
            "Twilio": (lambda: twilio.incoming_sms(number, texter, "sms, during the outage",
                                                   sid=sms_sid, rewrite=rewrite),
                       200, TWIML),
            "Meta": (lambda: h.client.post("/ingress/meta", content=meta_body,
                                           headers=meta_signature(APP_SECRET, meta_body)),
                     200, "EVENT_RECEIVED"),
            "Slack": (post_slack, 200, ""),
        }

        await asyncio.to_thread(broker.stop)
        for name, (post, _, _) in paths.items():
            r = await post()
            assert r.status_code == 503, (name, r.status_code, r.text)
            assert r.headers["retry-after"].isdigit(), name
            assert int(r.headers["retry-after"]) >= 1, name
            # Only the documented answer: no broker address, no exception text.
            assert r.json() == UNAVAILABLE, (name, r.text)
            assert str(broker.port) not in r.text, name

        await asyncio.to_thread(broker.restart)
        for name, (post, status, text) in paths.items():
            r = await _retried(post)
            assert r.status_code == status, (name, r.status_code, r.text)
            if text:
                assert r.text == text, name
        assert r.status_code == 200 and slack_tries >= 2

        # Later messages on the same lanes (same conversation, same destination) as
        # sentinels: once each has arrived, any second copy would have arrived before it.
        after = message("direct, sentinel", sender=visitor)
        r = await hub.client.post(f"/ingress/{site['integrationId']}", content=after,
                                  headers=sign_with_cryptography(site_key, after))
        assert r.status_code == 202, r.text
        r = await twilio.incoming_sms(number, texter, "sms, sentinel", rewrite=rewrite)
        assert r.status_code == 200, r.text
        sentinel = webhook(entry(page.page_id, text_event(psid, page.page_id,
                                                          "meta, sentinel")))
        r = await hub.client.post("/ingress/meta", content=sentinel,
                                  headers=meta_signature(APP_SECRET, sentinel))
        assert r.status_code == 200, r.text
        body, headers = signed(SLACK_SECRET, message_event(
            install.team_id, "C0GENERAL", text="slack, sentinel", thread_ts=parent.ts,
            event_id="EvOUTAGE2", display_name="Dana"))
        r = await hub.client.post("/ingress/slack", content=body, headers=headers)
        assert r.status_code == 200, r.text

        sentinels = {"direct, sentinel", "sms, sentinel", "meta, sentinel"}
        await receiver.wait_until(
            "/agent", lambda got: sentinels <= set(_texts(got)), timeout=60)
        await receiver.wait_until(
            "/customer", lambda got: "slack, sentinel" in _texts(got), timeout=60)

        by_conversation: dict[str, list[str]] = {}
        for g in receiver.at("/agent"):
            by_conversation.setdefault(g.json["conversationId"], []).append(
                g.json["activity"]["message"]["text"])
        assert sorted(by_conversation.values()) == [
            ["meta, during the outage", "meta, sentinel"],
            ["open a thread", "direct, during the outage", "direct, sentinel"],
            ["sms, during the outage", "sms, sentinel"],
        ]
        assert _of(receiver, "/customer", site_conversation) == [
            "slack, during the outage", "slack, sentinel"]
        assert len(receiver.at("/customer")) == 2
    finally:
        if hub is not None:
            await hub.stop()
        await receiver.stop()
        await slack.stop()
        await graph.stop()
        await twilio.stop()
        broker.stop()
