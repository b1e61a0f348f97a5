"""Secrets stay secret (issue #9): one integration of every channel with every secret it
can hold — created, then its credentials rotated — traffic through each, and neither a raw
record of any topic (read from offset 0) nor any log line at DEBUG holds one in plaintext.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.messenger import FakeGraph, entry, meta_signature, text_event, webhook
from tests.fakes.slack import FakeSlack, Install
from tests.fakes.twilio import FakeTwilio
from tests.support import Receiver, message, sign_with_cryptography, slack_state
from tests.topics import read_topics

APP_ID, APP_SECRET = "app-at-rest", "meta-app-secret-" + uuid.uuid4().hex
LOGGERS = ("", "switchboard", "aiokafka", "uvicorn", "uvicorn.error", "uvicorn.access",
           "httpx", "aiohttp", "starlette")


async def _every_record(h: RunningHub) -> list[bytes]:
    """Key and value of every record of every topic of this hub, from offset 0."""
    records = await read_topics(h.settings)
    prefix = h.settings.topic_prefix
    assert {"registry", "activities", "deliveries"} <= {t[len(prefix):] for t, _, _ in records}
    return [(k or b"") + b"\x00" + (v or b"") for _, k, v in records]


async def test_no_secret_reaches_a_topic_or_a_log_line(
        broker: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    twilio, graph, slack = (await FakeTwilio().start(), await FakeGraph().start(),
                            await FakeSlack().start())
    graph.add_app(APP_ID, APP_SECRET)
    settings = make_settings(
        broker, twilio_api_url=twilio.url, meta_graph_url=graph.url,
        meta_graph_version=graph.version, slack_api_url=slack.url,
        slack_client_id=slack.client_id, slack_client_secret=slack.client_secret,
        slack_signing_secret="slack-signing-" + uuid.uuid4().hex)
    h = RunningHub(settings)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    await h.start()
    secrets: dict[str, str] = {"admin token": settings.admin_token}
    try:
        c = h.client
        hub_id, auth = await h.create_hub("at-rest")
        secrets["hub token"] = auth["Authorization"].removeprefix("Bearer ")
        r = await c.post(f"/api/v1/hubs/{hub_id}/rotateToken", headers=auth)
        auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        secrets["rotated hub token"] = r.json()["accessToken"]

        # Direct and System, with HMAC signing, keys regenerated once.
        agent = await h.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "hmacSigning": True,
                           "webhookUrl": receiver.url + "/agent"})
        secrets["direct private key"] = agent["configuration"]["privateSigningKey"]
        secrets["direct webhook secret"] = agent["configuration"]["webhookSecret"]
        r = await c.patch(f"/api/v1/integrations/{agent['integrationId']}", headers=auth, json={
            "configuration": {"integrationType": "Agent", "hmacSigning": True,
                              "webhookUrl": receiver.url + "/agent", "regenerateKeys": True}})
        agent_key = r.json()["configuration"]["privateSigningKey"]
        secrets["regenerated private key"] = agent_key
        secrets["regenerated webhook secret"] = r.json()["configuration"]["webhookSecret"]
        system = await h.create_integration(
            hub_id, auth, channelId="System", name="audit",
            configuration={"webhookUrl": receiver.url + "/system", "events": ["*"],
                           "hmacSigning": True})
        secrets["system private key"] = system["configuration"]["privateSigningKey"]
        secrets["system webhook secret"] = system["configuration"]["webhookSecret"]
        await h.create_integration(hub_id, auth, channelId="WebChat", name="chat",
                                   configuration={"allowedOrigins": ["example.com"]})

        # TwilioSMS: auth token and SharedKey secret; the auth token rotated.
        sid, token = twilio.add_account()
        number = twilio.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
        shared = "twilio-shared-" + uuid.uuid4().hex
        sms = await h.create_integration(
            hub_id, auth, channelId="TwilioSMS", name="sms",
            configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid,
                           "sharedKeySecret": shared})
        secrets |= {"twilio auth token": token, "twilio shared key": shared}
        new_token = uuid.uuid4().hex
        r = await c.patch(f"/api/v1/integrations/{sms['integrationId']}", headers=auth,
                          json={"configuration": {"authToken": new_token}})
        assert r.status_code == 400  # Twilio does not know that token yet
        twilio.accounts[sid] = new_token
        r = await c.patch(f"/api/v1/integrations/{sms['integrationId']}", headers=auth,
                          json={"configuration": {"authToken": new_token,
                                                  "sharedKeySecret": "********"}})
        assert r.status_code == 200, r.text
        assert r.json()["configuration"]["authToken"] == "********"
        secrets["rotated twilio auth token"] = new_token

        # Messenger: page token and app secret; the page token rotated.
        page = graph.add_page("page-" + uuid.uuid4().hex[:8], APP_ID)
        fb = await h.create_integration(
            hub_id, auth, channelId="Messenger", name="fb",
            configuration={"pageAccessToken": page.token, "appSecret": APP_SECRET})
        secrets |= {"page token": page.token, "meta app secret": APP_SECRET}
        other_page = graph.add_page("page-other", APP_ID)
        r = await c.patch(f"/api/v1/integrations/{fb['integrationId']}", headers=auth,
                          json={"configuration": {"pageAccessToken": other_page.token}})
        assert r.status_code == 400  # a token of another Page
        fresh_page = graph.add_page(page.page_id, APP_ID)
        r = await c.patch(f"/api/v1/integrations/{fb['integrationId']}", headers=auth,
                          json={"configuration": {"pageAccessToken": fresh_page.token}})
        assert r.status_code == 200, r.text
        secrets["rotated page token"] = fresh_page.token

        # Slack: OAuth code and the state (it carries the client secret), the bot token
        # it yields; the bot token rotated.
        code, install = slack.grant("T" + uuid.uuid4().hex[:8].upper())
        state = slack_state(slack.client_secret)
        made = await h.create_integration(
            hub_id, auth, channelId="Slack", name="slack",
            configuration={"code": code, "state": state, "defaultPublicChannel": "general"})
        secrets |= {"slack code": code, "slack client secret": slack.client_secret,
                    "slack bot token": install.bot_token}
        rotated = Install(team_id=install.team_id, team_name=install.team_name)
        slack.installs.append(rotated)
        r = await c.patch(f"/api/v1/integrations/{made['integrationId']}", headers=auth,
                          json={"configuration": {"botAccessToken": rotated.bot_token}})
        assert r.status_code == 200, r.text
        secrets["rotated slack bot token"] = rotated.bot_token

        # Traffic through each, with the rotated credentials: an SMS in (signed with the
        # new auth token) reaches the agent and Slack; the agent answers (sent to Twilio).
        public = settings.public_url
        r = await twilio.incoming_sms(number, "+15550009", "hello there",
                                      rewrite=lambda u: h.base_url + u[len(public):])
        assert r.status_code == 200, r.text
        [got] = await receiver.wait_for("/agent", 1)
        body = message("on my way", sender="agent-1", conversation=got.json["conversationId"])
        r = await c.post(f"/ingress/{agent['integrationId']}", content=body,
                         headers=sign_with_cryptography(agent_key, body))
        assert r.status_code == 202, r.text
        await twilio.wait_for("+15550009", 1)
        await slack.wait_for_posts(1)
        assert [p for p in slack.delivered if p.token == rotated.bot_token]
        fb_body = webhook(entry(page.page_id, text_event("psid-1", page.page_id, "hi fb")))
        r = await c.post("/ingress/meta", content=fb_body,
                         headers=meta_signature(APP_SECRET, fb_body))
        assert r.status_code == 200, r.text
        await receiver.wait_for("/agent", 2)

        # Reads never show a secret either.
        reads = [(await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)).text,
                 (await c.get(f"/api/v1/hubs/{hub_id}", headers=auth)).text]
        records = await _every_record(h)
    finally:
        await h.stop()
        for fake in (twilio, graph, slack):
            await fake.stop()

    logs = caplog.text
    assert "registry" in logs or len(caplog.records) > 50, "DEBUG logging was not captured"
    blobs = {"topics": b"\n".join(records), "logs": logs.encode(),
             "api reads": "\n".join(reads).encode()}
    for what, blob in blobs.items():
        for name, secret in secrets.items():
            assert secret.encode() not in blob, f"{name} in plaintext in the {what}"
        # No key material of any kind, including the hub's own private signing keys.
        for prefix in (b"whsk_", b"whsec_", b"sbat_"):
            assert prefix not in blob, f"{prefix!r} in the {what}"
