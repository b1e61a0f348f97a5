"""Slack end to end: a real hub on a real broker, a loopback Slack, Events signed by
slack_sdk. Customer (Direct) → Slack thread → agent reply in the thread → customer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.slack import FakeSlack, Install, message_event, signed
from tests.support import Receiver, sign_with_cryptography, slack_state

SIGNING_SECRET = "slack-signing-" + uuid.uuid4().hex


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    try:
        yield fake
    finally:
        await fake.stop()


def _settings(broker: Any, fake: FakeSlack, **overrides: Any) -> Any:
    return make_settings(broker, slack_api_url=fake.url, slack_signing_secret=SIGNING_SECRET,
                         slack_client_id=fake.client_id, slack_client_secret=fake.client_secret,
                         **overrides)


async def _customer_says(hub: RunningHub, cust: dict[str, Any], text: str,
                         who: str = "+15550001", name: str = "Alice") -> str:
    body = orjson.dumps({"type": "message", "sender": {"id": who, "name": name},
                         "message": {"type": "text", "text": text}})
    r = await hub.client.post(
        f"/ingress/{cust['integrationId']}", content=body,
        headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text
    return str(r.json()["activityId"])


async def _slack_event(hub: RunningHub, payload: dict[str, Any] | bytes, **kw: Any) -> Any:
    body, headers = signed(SIGNING_SECRET, payload, **kw)
    return await hub.client.post("/ingress/slack", content=body, headers=headers)


async def _setup(hub: RunningHub, fake: FakeSlack, receiver: Receiver, *,
                 team: str = "T0ACME") -> dict[str, Any]:
    hub_id, auth = await hub.create_hub()
    cust = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/customer"})
    code, install = fake.grant(team)
    agent = await hub.create_integration(
        hub_id, auth, channelId="Slack", name="desk",
        configuration={"code": code, "state": slack_state(fake.client_secret),
                       "defaultPublicChannel": "general"})
    return {"hub_id": hub_id, "auth": auth, "cust": cust, "slack": agent, "install": install}


async def test_customer_to_slack_thread_and_back(broker: Any, fake_slack: FakeSlack,
                                                 receiver: Receiver) -> None:
    hub = await RunningHub(_settings(broker, fake_slack)).start()
    try:
        s = await _setup(hub, fake_slack, receiver)
        install, agent = s["install"], s["slack"]
        # Installed: the code was exchanged, the secrets are masked, nothing of the code kept.
        cfg = agent["configuration"]
        assert agent["channelId"] == "Slack" and agent["integrationTypeId"] == "Agent"
        assert cfg["botAccessToken"] == "********"
        assert cfg["teamId"] == install.team_id and cfg["botUserId"] == install.bot_user_id
        assert cfg["botName"] == install.bot_name and cfg["defaultPublicChannel"] == "general"
        assert "code" not in cfg and "state" not in cfg
        assert fake_slack.oauth_calls[-1]["client_id"] == fake_slack.client_id

        # Slack verifies the events URL when it is set in the app's settings.
        r = await _slack_event(hub, {"token": "t", "challenge": "chal-123",
                                     "type": "url_verification"})
        assert r.status_code == 200 and r.json() == {"challenge": "chal-123"}

        # 1. The customer writes: a new thread in #general, opened by the bot.
        await _customer_says(hub, s["cust"], "my parcel is late")
        (parent,) = await fake_slack.wait_for_posts(1)
        assert parent.token == install.bot_token
        assert parent.content_type.startswith("application/json")
        assert parent.body["channel"] == "general" and parent.thread_ts is None
        header = parent.body["blocks"][0]["elements"][0]["text"]
        assert header == "*Alice* (+15550001) · Direct · _site_"
        assert parent.body["blocks"][1]["text"]["text"] == "my parcel is late"

        # 2. The next message of the conversation goes into that thread.
        await _customer_says(hub, s["cust"], "order #42 & counting")
        second = (await fake_slack.wait_for_posts(2))[1]
        assert second.body["channel"] == parent.channel == "C0GENERAL"
        assert second.thread_ts == parent.ts
        assert second.body["blocks"][0]["text"]["text"] == "order #42 &amp; counting"

        # 3. An agent answers in the thread: the customer gets it, in that conversation.
        reply = message_event(install.team_id, "C0GENERAL", text="On its way &amp; tracked",
                              thread_ts=parent.ts, display_name="Dana", event_id="EvREPLY1")
        r = await _slack_event(hub, reply)
        assert r.status_code == 200, r.text
        back = (await receiver.wait_for("/customer", 1))[0].json
        conversation = back["conversationId"]
        assert back["activity"]["type"] == "message:agent"
        assert back["activity"]["message"] == {"type": "text", "text": "On its way & tracked"}
        assert back["activity"]["sender"] == {"id": "U0AGENT", "name": "Dana"}
        assert back["activity"]["integrationId"] == agent["integrationId"]
        assert parent.body["blocks"][0]["elements"][1]["text"] == f"conversation `{conversation}`"

        # Slack retries the same event (it did not hear us in time): acknowledged, once.
        r = await _slack_event(hub, reply, retry_num=1)
        assert r.status_code == 200
        # Our own bot's post and an edit in the thread are not answers.
        bot_echo = message_event(install.team_id, "C0GENERAL", text="order #42",
                                 thread_ts=parent.ts, bot_id=install.bot_id)
        assert (await _slack_event(hub, bot_echo)).status_code == 200
        edit = message_event(install.team_id, "C0GENERAL", text="x", thread_ts=parent.ts,
                             subtype="message_changed")
        assert (await _slack_event(hub, edit)).status_code == 200
        # A thread the hub did not start, a top-level message, another workspace: ignored.
        for other in (
            message_event(install.team_id, "C0GENERAL", text="?", thread_ts="1.000001"),
            message_event(install.team_id, "C0GENERAL", text="top", thread_ts=None),
            message_event("T0NOBODY", "C0GENERAL", text="?", thread_ts=parent.ts),
        ):
            assert (await _slack_event(hub, other)).status_code == 200

        # Forged, unsigned and replayed requests are refused before anything is stored.
        forged = message_event(install.team_id, "C0GENERAL", text="forged",
                               thread_ts=parent.ts)
        body, headers = signed("not-the-secret", forged)
        r = await hub.client.post("/ingress/slack", content=body, headers=headers)
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "invalid_signature"
        r = await hub.client.post("/ingress/slack", content=orjson.dumps(forged),
                                  headers={"Content-Type": "application/json"})
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "missing_signature"
        r = await _slack_event(hub, forged, timestamp=int(time.time()) - 6 * 60)
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "stale_timestamp"
        body, headers = signed(SIGNING_SECRET, forged)
        r = await hub.client.post("/ingress/slack", content=body + b" ", headers=headers)
        assert r.status_code == 401

        # The next real answer arrives after exactly one copy of the first.
        r = await _slack_event(hub, message_event(
            install.team_id, "C0GENERAL", text="Anything else?", thread_ts=parent.ts,
            event_id="EvREPLY2"))
        assert r.status_code == 200
        # A sentinel: same thread, same customer; any second copy of the first answer (or
        # of anything the hub should have ignored) would have been delivered before it.
        got = await receiver.wait_until("/customer", lambda got: any(
            g.json["activity"]["message"]["text"] == "Anything else?" for g in got))
        texts = [g.json["activity"]["message"]["text"] for g in got]
        assert texts == ["On its way & tracked", "Anything else?"]
        assert {g.json["conversationId"] for g in got} == {conversation}
        # Nothing the hub ignored went to Slack either: only the customer's two messages.
        assert len(fake_slack.posts) == 2
    finally:
        await hub.stop()


async def test_rate_limits_failures_and_bad_codes(broker: Any, fake_slack: FakeSlack,
                                                  receiver: Receiver) -> None:
    # The schedule's longest wait (0.5 s) caps a Retry-After.
    hub = await RunningHub(_settings(broker, fake_slack,
                                     retry_schedule="0,0.05,0.1,0.5")).start()
    try:
        hub_id, auth = await hub.create_hub()
        # A bad OAuth code: Slack's error, and nothing stored.
        r = await hub.client.post(
            f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
            json={"channelId": "Slack", "name": "desk",
                  "configuration": {"code": "1234.not-a-code",
                                    "state": slack_state(fake_slack.client_secret)}})
        assert r.status_code == 400, r.text
        err = r.json()["errors"][0]
        assert err["code"] == "slack_oauth_failed" and "invalid_code" in err["description"]
        r = await hub.client.post(
            f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
            json={"channelId": 1001, "name": "desk", "configuration": {"state": "x"}})
        assert r.status_code == 400, r.text
        r = await hub.client.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)
        assert r.status_code == 200 and r.json() == []

        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer",
                           "webhookUrl": receiver.url + "/customer"})
        system = await hub.create_integration(
            hub_id, auth, channelId="System", name="audit",
            configuration={"webhookUrl": receiver.url + "/system",
                           "events": ["event:delivery_failed"]})
        # Two workspaces: one posts to #support, one names a channel that does not exist.
        code, good = fake_slack.grant("T0GOOD")
        ok = await hub.create_integration(
            hub_id, auth, channelId="Slack", name="desk",
            configuration={"code": code, "state": slack_state(fake_slack.client_secret),
                           "defaultPublicChannel": "#support"})
        # The other is connected with a bot token instead of a code (checked by auth.test).
        r = await hub.client.post(
            f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
            json={"channelId": "Slack", "name": "lost",
                  "configuration": {"botAccessToken": "xoxb-revoked"}})
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["code"] == "slack_auth_failed"
        fake_slack.installs.append(Install(team_id="T0LOST", team_name="Lost"))
        lost = await hub.create_integration(
            hub_id, auth, channelId="Slack", name="lost",
            configuration={"botAccessToken": fake_slack.installs[-1].bot_token,
                           "defaultPublicChannel": "nowhere"})
        assert lost["configuration"]["teamId"] == "T0LOST"
        assert lost["configuration"]["botAccessToken"] == "********"
        # The same workspace cannot be connected twice (events are routed by team).
        code, _ = fake_slack.grant("T0GOOD")
        r = await hub.client.post(
            f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
            json={"channelId": "Slack", "name": "again", "configuration": {"code": code,
                                    "state": slack_state(fake_slack.client_secret)}})
        assert r.status_code == 409, r.text

        # Slack rate-limits the first post (HTTP 429, Retry-After), then takes it.
        fake_slack.script["support"] = [(429, {"ok": False, "error": "ratelimited"},
                                         {"Retry-After": "1"})]
        started = time.monotonic()
        activity_id = await _customer_says(hub, cust, "hello?")
        (post,) = await fake_slack.wait_for_posts(1)
        assert post.channel == "C0SUPPORT" and post.token == good.bot_token
        attempts = [p for p in fake_slack.posts if p.token == good.bot_token]
        assert [p.status for p in attempts] == [429, 200]
        # Retry-After is honoured (capped by the schedule's longest wait, 0.5 s).
        assert time.monotonic() - started >= 0.4

        # channel_not_found fails for good: dead-lettered and announced to System.
        failed = (await receiver.wait_for("/system", 1))[0].json
        (event,) = failed["activities"]
        assert event["type"] == "event:delivery_failed"
        assert event["integrationId"] == lost["integrationId"]
        assert event["event"]["ref"] == activity_id
        assert event["event"]["data"]["reason"] == "slack_channel_not_found"
        assert failed["integrationId"] == system["integrationId"]
        lost_posts = [p for p in fake_slack.posts if p.body.get("channel") == "nowhere"]
        assert len(lost_posts) == 1  # not retried
        assert ok["configuration"]["teamId"] == "T0GOOD"
    finally:
        await hub.stop()


async def test_thread_mapping_survives_a_restart(broker: Any, fake_slack: FakeSlack,
                                                 receiver: Receiver) -> None:
    settings = _settings(broker, fake_slack)
    hub = await RunningHub(settings).start()
    try:
        s = await _setup(hub, fake_slack, receiver)
        await _customer_says(hub, s["cust"], "before the restart")
        (parent,) = await fake_slack.wait_for_posts(1)
    finally:
        await hub.stop()

    # A whole new hub process on the same topics: it knows the thread from Kafka alone.
    hub = await RunningHub(settings).start()
    try:
        install = s["install"]
        r = await _slack_event(hub, message_event(install.team_id, parent.channel or "",
                                                  text="still here", thread_ts=parent.ts))
        assert r.status_code == 200, r.text
        back = (await receiver.wait_for("/customer", 1))[0].json
        assert back["activity"]["message"]["text"] == "still here"
        assert back["conversationId"] == parent.body["blocks"][0]["elements"][1]["text"].split(
            "`")[1]
        # And the customer's next message continues the same thread.
        await _customer_says(hub, s["cust"], "after the restart")
        after = (await fake_slack.wait_for_posts(2))[1]
        assert after.thread_ts == parent.ts and after.body["channel"] == parent.channel
    finally:
        await hub.stop()


async def test_fake_speaks_what_slack_sdk_speaks(fake_slack: FakeSlack) -> None:
    """The fake's wire format, checked with Slack's own client."""
    from slack_sdk import WebClient

    code, install = fake_slack.grant("T0SDK")
    base = fake_slack.url + "/"

    def calls() -> None:
        client = WebClient(base_url=base)
        grant = client.oauth_v2_access(client_id=fake_slack.client_id,
                                       client_secret=fake_slack.client_secret, code=code)
        assert grant["access_token"] == install.bot_token
        assert grant["team"]["id"] == "T0SDK"
        bot = WebClient(token=install.bot_token, base_url=base)
        assert bot.auth_test()["user_id"] == install.bot_user_id
        posted = bot.chat_postMessage(channel="general", text="hi")
        threaded = bot.chat_postMessage(channel=posted["channel"], text="re",
                                        thread_ts=posted["ts"])
        assert threaded["message"]["thread_ts"] == posted["ts"]

    await asyncio.to_thread(calls)
    assert [p.thread_ts for p in fake_slack.delivered] == [None, fake_slack.delivered[0].ts]
