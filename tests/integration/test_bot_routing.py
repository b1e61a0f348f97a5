"""Routing to and from Bot integrations, through a real hub on a real broker.

The README's rules: customer messages go to the hub's Agent *and Bot* integrations; agent
and bot messages go to the conversation's Customer integration only (never to another
agent or bot, nor back to their source unless it has `echo`). A bot's answer reaches the
customer as `message:bot`, signed for the customer, on any channel (here Direct and SMS).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.twilio import FakeTwilio
from tests.support import Receiver, message, sign_with_cryptography, verify_with_cryptography


def _texts(got: list[Any]) -> list[str]:
    return [g.json["activity"]["message"]["text"] for g in got]


async def _post(hub: RunningHub, integration: dict[str, Any], body: bytes) -> Any:
    return await hub.client.post(
        f"/ingress/{integration['integrationId']}", content=body,
        headers=sign_with_cryptography(integration["configuration"]["privateSigningKey"],
                                       body))


async def _direct(hub: RunningHub, hub_id: str, auth: dict[str, str], name: str, kind: str,
                  url: str, **config: Any) -> dict[str, Any]:
    return await hub.create_integration(
        hub_id, auth, channelId="Direct", name=name,
        configuration={"integrationType": kind, "webhookUrl": url, **config})


async def test_bots_get_customer_messages_and_their_answers_reach_only_the_customer(
        hub: RunningHub, receiver: Receiver) -> None:
    hub_id, auth = await hub.create_hub()
    cust = await _direct(hub, hub_id, auth, "site", "Customer", receiver.url + "/cust")
    agent = await _direct(hub, hub_id, auth, "desk", "Agent", receiver.url + "/agent")
    bot = await _direct(hub, hub_id, auth, "faq-bot", "Bot", receiver.url + "/bot")
    # A second bot, with echo: it gets its own answers back, and still not the others'.
    echo_bot = await _direct(hub, hub_id, auth, "echo-bot", "Bot", receiver.url + "/echo-bot",
                             echo=True)
    assert bot["integrationTypeId"] == echo_bot["integrationTypeId"] == "Bot"

    # 1. The customer writes: every Agent and Bot integration gets it, as message:customer.
    r = await _post(hub, cust, message("where is my parcel?", sender="cust-1"))
    assert r.status_code == 202, r.text
    customer_activity = r.json()["activityId"]
    for path, dest in (("/agent", agent), ("/bot", bot), ("/echo-bot", echo_bot)):
        [got] = await receiver.wait_for(path, 1)
        assert got.json["integrationId"] == dest["integrationId"]
        assert got.json["activity"]["type"] == "message:customer"
        assert got.json["activity"]["activityId"] == customer_activity
        assert verify_with_cryptography(dest["configuration"]["publicSigningKey"], got)
    conversation = (receiver.at("/bot"))[0].json["conversationId"]

    # A bot must name the conversation it answers.
    r = await _post(hub, bot, message("to whom?", sender="faq-bot"))
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "missing_conversation"

    # 2. The bot answers: the customer gets it as message:bot, signed for the customer.
    r = await _post(hub, bot, message("It left the depot this morning.", sender="faq-bot",
                                      conversation=conversation))
    assert r.status_code == 202, r.text
    bot_activity = r.json()["activityId"]
    [back] = await receiver.wait_for("/cust", 1)
    assert back.json["integrationId"] == cust["integrationId"]
    assert back.json["conversationId"] == conversation
    assert back.json["activity"]["type"] == "message:bot"
    assert back.json["activity"]["activityId"] == bot_activity
    assert back.json["activity"]["integrationId"] == bot["integrationId"]
    assert back.json["activity"]["sender"] == {"id": "faq-bot", "name": "faq-bot"}
    assert back.json["activity"]["message"] == {"type": "text",
                                                "text": "It left the depot this morning."}
    assert verify_with_cryptography(cust["configuration"]["publicSigningKey"], back)

    # 3. The echoing bot and the agent answer too: the customer gets both, in order.
    r = await _post(hub, echo_bot, message("Anything else?", sender="echo-bot",
                                           conversation=conversation))
    assert r.status_code == 202, r.text
    r = await _post(hub, agent, message("A human here.", sender="agent-7",
                                        conversation=conversation))
    assert r.status_code == 202, r.text

    # 4. Sentinel: the customer writes again in the same conversation. Everything above was
    # routed before it (same conversation, same partition) and is delivered to each
    # destination in conversation order, so anything misrouted would have arrived first.
    r = await _post(hub, cust, message("thanks", sender="cust-1"))
    assert r.status_code == 202, r.text
    for path in ("/agent", "/bot", "/echo-bot"):
        await receiver.wait_until(path, lambda got: "thanks" in _texts(got))
    assert _texts(receiver.at("/cust")) == [
        "It left the depot this morning.", "Anything else?", "A human here."]
    assert [g.json["activity"]["type"] for g in receiver.at("/cust")] == [
        "message:bot", "message:bot", "message:agent"]
    # Agents and bots never hear each other's answers; a bot only its own, with echo.
    assert _texts(receiver.at("/agent")) == ["where is my parcel?", "thanks"]
    assert _texts(receiver.at("/bot")) == ["where is my parcel?", "thanks"]
    assert _texts(receiver.at("/echo-bot")) == ["where is my parcel?", "Anything else?",
                                                "thanks"]
    assert {g.json["conversationId"] for g in receiver.received} == {conversation}


async def test_a_bot_answers_only_in_its_own_hub(hub: RunningHub, receiver: Receiver) -> None:
    """A bot naming another hub's conversation is refused as if it did not exist; that
    hub's own bot reaches it."""
    a_id, a_auth = await hub.create_hub("a")
    b_id, b_auth = await hub.create_hub("b")
    a_cust = await _direct(hub, a_id, a_auth, "site", "Customer", receiver.url + "/a-cust")
    a_bot = await _direct(hub, a_id, a_auth, "bot", "Bot", receiver.url + "/a-bot")
    b_bot = await _direct(hub, b_id, b_auth, "bot", "Bot", receiver.url + "/b-bot")

    r = await _post(hub, a_cust, message("hello from a", sender="cust-a"))
    assert r.status_code == 202, r.text
    [got] = await receiver.wait_for("/a-bot", 1)
    theirs = got.json["conversationId"]

    # B's bot names A's conversation: the same 404 as a made-up id, nothing routed.
    r = await _post(hub, b_bot, message("hijack", sender="b-bot", conversation=theirs))
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "conversation_not_found"
    # Sentinel on A's customer lane (same conversation, same destination): A's own bot
    # answers after it; A's customer gets exactly that.
    r = await _post(hub, a_bot, message("from a's bot", sender="a-bot", conversation=theirs))
    assert r.status_code == 202, r.text
    got_all = await receiver.wait_until("/a-cust", lambda g: "from a's bot" in _texts(g))
    assert _texts(got_all) == ["from a's bot"]
    assert receiver.at("/b-bot") == []  # nothing of hub A went to hub B's bot either


# ---- a bot's answer over SMS ------------------------------------------------------------------

PUBLIC = "https://sms.example.test/sb"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = await FakeTwilio().start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_a_bot_answers_an_sms_customer(broker: Any, twilio: FakeTwilio,
                                             receiver: Receiver) -> None:
    hub = await RunningHub(make_settings(broker, twilio_api_url=twilio.url,
                                         public_url=PUBLIC)).start()
    try:
        hub_id, auth = await hub.create_hub()
        sid, token = twilio.add_account()
        number = twilio.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
        await hub.create_integration(
            hub_id, auth, channelId="TwilioSMS", name="sms",
            configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid})
        bot = await _direct(hub, hub_id, auth, "bot", "Bot", receiver.url + "/bot")

        def rewrite(url: str) -> str:
            assert url.startswith(PUBLIC), url
            return hub.base_url + url[len(PUBLIC):]

        customer = "+1647" + str(uuid.uuid4().int)[:7]
        r = await twilio.incoming_sms(number, customer, "opening hours?", rewrite=rewrite)
        assert r.status_code == 200, r.text
        [got] = await receiver.wait_for("/bot", 1)
        assert got.json["activity"]["type"] == "message:customer"
        assert got.json["activity"]["channelId"] == "TwilioSMS"
        assert _texts([got]) == ["opening hours?"]

        r = await _post(hub, bot, message("9 to 5, Monday to Friday.", sender="bot",
                                          conversation=got.json["conversationId"]))
        assert r.status_code == 202, r.text
        [sms] = await twilio.wait_for(customer, 1)
        assert (sms.get("From"), sms.get("To")) == (number.phone_number, customer)
        assert sms.get("Body") == "9 to 5, Monday to Friday."
        # The bot's own answer does not come back to it (no echo): the customer's next
        # text, behind it in the conversation, is the next thing the bot gets.
        r = await twilio.incoming_sms(number, customer, "thanks", rewrite=rewrite)
        assert r.status_code == 200, r.text
        got_all = await receiver.wait_until("/bot", lambda g: "thanks" in _texts(g))
        assert _texts(got_all) == ["opening hours?", "thanks"]
        assert [s.get("Body") for s in twilio.accepted(customer)] == [
            "9 to 5, Monday to Friday."]
    finally:
        await hub.stop()
