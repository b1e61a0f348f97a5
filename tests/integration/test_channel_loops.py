"""Whole loops across real channels (loopback provider fakes, a real broker):
a customer texts a Twilio number, an agent answers in a Slack thread, the customer gets
an SMS — with every service restarted in the middle of the conversation."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import RunningHub, make_settings
from tests.fakes.slack import FakeSlack, message_event, signed
from tests.fakes.twilio import FakeTwilio
from tests.support import slack_state

PUBLIC = "https://hub.example.test"
SIGNING_SECRET = "slack-signing-" + uuid.uuid4().hex


async def test_sms_to_slack_thread_and_back_across_a_restart(broker: Any) -> None:
    twilio = await FakeTwilio().start()
    slack = await FakeSlack().start()
    settings = make_settings(
        broker, public_url=PUBLIC, twilio_api_url=twilio.url, slack_api_url=slack.url,
        slack_signing_secret=SIGNING_SECRET, slack_client_id=slack.client_id,
        slack_client_secret=slack.client_secret)
    hub = await RunningHub(settings).start()

    def to_hub(url: str) -> str:  # the proxy between Twilio and the hub
        assert url.startswith(PUBLIC), url
        return hub.base_url + url[len(PUBLIC):]

    try:
        hub_id, auth = await hub.create_hub()
        sid, token = twilio.add_account()
        number = twilio.add_number(sid, "+14165550100")
        await hub.create_integration(
            hub_id, auth, channelId="TwilioSMS", name="sms",
            configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid})
        code, install = slack.grant("T0LOOP")
        await hub.create_integration(hub_id, auth, channelId="Slack", name="desk",
                                     configuration={"code": code,
                                                    "state": slack_state(slack.client_secret),
                                                    "defaultPublicChannel": "support"})
        customer = "+14165559999"

        r = await twilio.incoming_sms(number, customer, "Where is my order?", rewrite=to_hub)
        assert r.status_code == 200 and "<Response/>" in r.text
        (parent,) = await slack.wait_for_posts(1)
        assert parent.body["channel"] == "support" and parent.thread_ts is None
        assert "Where is my order?" in str(parent.body)

        # Every service goes down and comes back: state lives in Kafka only.
        await hub.stop()
        hub = await RunningHub(settings).start()

        r = await twilio.incoming_sms(number, customer, "It was due Monday", rewrite=to_hub)
        assert r.status_code == 200
        second = (await slack.wait_for_posts(2))[1]
        assert second.thread_ts == parent.ts  # same conversation, same thread

        reply = message_event(install.team_id, parent.channel, text="It ships today!",
                              thread_ts=parent.ts, display_name="Dana")
        body, headers = signed(SIGNING_SECRET, reply)
        r = await hub.client.post("/ingress/slack", content=body, headers=headers)
        assert r.status_code == 200, r.text

        (sms,) = await twilio.wait_for(customer, 1)
        assert sms.get("From") == number.phone_number
        assert sms.get("Body") == "It ships today!"
        assert len(slack.delivered) == 2  # the agent's own reply is not posted back
    finally:
        await hub.stop()
        await slack.stop()
        await twilio.stop()


async def test_webchat_in_the_browser_to_slack_and_back(broker: Any) -> None:
    from playwright.async_api import async_playwright, expect

    from tests.integration.test_webchat import CHROMIUM, CHROMIUM_ARGS

    slack = await FakeSlack().start()
    settings = make_settings(broker, slack_api_url=slack.url,
                             slack_signing_secret=SIGNING_SECRET,
                             slack_client_id=slack.client_id,
                             slack_client_secret=slack.client_secret)
    hub = await RunningHub(settings).start()
    try:
        hub_id, auth = await hub.create_hub()
        chat = await hub.create_integration(
            hub_id, auth, channelId="WebChat", name="site",
            configuration={"allowedOrigins": ["localhost"]})
        code, install = slack.grant("T0WEB")
        await hub.create_integration(hub_id, auth, channelId="Slack", name="desk",
                                     configuration={"code": code,
                                                    "state": slack_state(slack.client_secret)})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"http://localhost:{hub.port}/webchat/{chat['integrationId']}")
                panel = page.locator(".sb-panel")
                await expect(panel).to_have_attribute("data-state", "ready", timeout=20_000)
                await page.locator(".sb-input").fill("Do you ship to Norway?")
                await page.locator(".sb-input").press("Enter")

                (parent,) = await slack.wait_for_posts(1)
                assert "Do you ship to Norway?" in str(parent.body)
                reply = message_event(install.team_id, parent.channel, thread_ts=parent.ts,
                                      text="We do, in 3-5 days.", display_name="Dana")
                body, headers = signed(SIGNING_SECRET, reply)
                r = await hub.client.post("/ingress/slack", content=body, headers=headers)
                assert r.status_code == 200, r.text

                bodies = page.locator(".sb-msg .sb-body")
                expected = ["Do you ship to Norway?", "We do, in 3-5 days."]
                await expect(bodies).to_have_text(expected, timeout=20_000)
                await page.reload()
                await expect(bodies).to_have_text(expected, timeout=20_000)
            finally:
                await browser.close()
    finally:
        await hub.stop()
        await slack.stop()
