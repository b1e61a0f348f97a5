"""The first hour with the API: names in any case, an answer to a conversation that does
not exist refused with 404, on a real broker with a real hub, receiver and Twilio fake."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.twilio import FakeTwilio
from tests.support import Receiver, message, sign_with_cryptography


@dataclass
class Env:
    hub: RunningHub
    twilio: FakeTwilio
    receiver: Receiver


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    fake = await FakeTwilio().start()
    receiver = await Receiver().start()
    hub = await RunningHub(make_settings(broker, twilio_api_url=fake.url,
                                         public_url="https://sms.example.test/sb")).start()
    try:
        yield Env(hub, fake, receiver)
    finally:
        await hub.stop()
        await receiver.stop()
        await fake.stop()


async def _post(hub: RunningHub, integration: dict[str, Any], body: bytes) -> Any:
    key = integration["configuration"]["privateSigningKey"]
    return await hub.client.post(f"/ingress/{integration['integrationId']}", content=body,
                                 headers=sign_with_cryptography(key, body))


async def test_names_are_case_insensitive_and_answered_canonical(env: Env) -> None:
    hub, tag = env.hub, uuid.uuid4().hex[:8]
    hub_id, auth = await hub.create_hub(f"names-{tag}")
    customer = await hub.create_integration(
        hub_id, auth, channelId="direct", name="site", statusId="active",
        configuration={"integrationType": "customer", "signatureScheme": "STANDARD"})
    assert customer["channelId"] == "Direct" and customer["integrationTypeId"] == "Customer"
    assert customer["statusId"] == 3000
    assert customer["configuration"]["integrationType"] == "Customer"
    sid, token = env.twilio.add_account()
    number = env.twilio.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
    sms = await hub.create_integration(
        hub_id, auth, channelId="TWILIOSMS", name="sms", integrationTypeId="CUSTOMER",
        configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid})
    assert sms["channelId"] == "TwilioSMS" and sms["integrationTypeId"] == "Customer"
    audit = await hub.create_integration(
        hub_id, auth, channelId="system", name="audit",
        configuration={"webhookUrl": f"{env.receiver.url}/{tag}/audit",
                       "events": ["MESSAGE:Customer", "Event:*"]})
    assert audit["channelId"] == "System"
    assert audit["configuration"]["events"] == ["message:customer", "event:*"]

    # Stored canonical: a read, and the hub's list, say the same.
    got = (await hub.client.get(f"/api/v1/integrations/{customer['integrationId']}",
                                headers=auth)).json()
    assert got["channelId"] == "Direct" and got["configuration"]["integrationType"] == "Customer"
    # statusId by name on an update too; query names in any case.
    r = await hub.client.patch(f"/api/v1/integrations/{sms['integrationId']}",
                               json={"statusId": "PAUSED"}, headers=auth)
    assert r.status_code == 200 and r.json()["statusId"] == 3002, r.text
    r = await hub.client.get(f"/api/v1/integrations/{customer['integrationId']}/deliveries",
                             params={"status": "Delivered"}, headers=auth)
    assert r.status_code == 200, r.text
    r = await hub.client.get(f"/api/v1/integrations/{customer['integrationId']}",
                             params={"compat": "Hubster"}, headers=auth)
    assert r.status_code == 200 and r.json()["channelId"] == 1, r.text

    # The filter works as the canonical name: a customer message reaches the audit.
    r = await _post(hub, customer, message("hello", sender="ada"))
    assert r.status_code == 202, r.text
    [seen] = await env.receiver.wait_for(f"/{tag}/audit", 1)
    assert seen.json["activities"][0]["type"] == "message:customer"

    # Names that are not ours are still a clear 400.
    for body, code in (
        ({"channelId": "twilio", "name": "x", "configuration": {}}, "invalid_channel"),
        ({"channelId": "Direct", "name": "x", "configuration": {"integrationType": "client"}},
         "invalid_configuration"),
        ({"channelId": "Direct", "name": "x", "statusId": "running",
          "configuration": {"integrationType": "Agent"}}, "invalid_status"),
    ):
        r = await hub.client.post(f"/api/v1/integrations/hubs/{hub_id}", json=body,
                                  headers=auth)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == code, r.text


async def test_an_answer_to_a_conversation_that_does_not_exist_is_404(env: Env) -> None:
    hub, receiver, tag = env.hub, env.receiver, uuid.uuid4().hex[:8]
    hub_id, auth = await hub.create_hub(f"conv-{tag}")
    customer = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer",
                       "webhookUrl": f"{receiver.url}/{tag}/customer"})
    agent = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": f"{receiver.url}/{tag}/agent"})
    bot = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="bot",
        configuration={"integrationType": "Bot"})

    for who in (agent, bot):
        r = await _post(hub, who, message("hello?", sender="agent-7",
                                          conversation=f"made-up-{tag}"))
        assert r.status_code == 404, r.text
        assert r.json() == {"status": 404, "errors": [{
            "code": "conversation_not_found", "field": "conversationId",
            "description": "no such conversation in this hub (it may have ended)"}]}

    # A real one: the customer writes, the agent answers at once with the id it was given.
    r = await _post(hub, customer, message("where is my order?", sender="ada"))
    assert r.status_code == 202, r.text
    [got] = await receiver.wait_for(f"/{tag}/agent", 1)
    conversation = got.json["conversationId"]
    r = await _post(hub, agent, message("on its way", sender="agent-7",
                                        conversation=conversation))
    assert r.status_code == 202, r.text
    back = await receiver.wait_for(f"/{tag}/customer", 1)
    assert [b.json["activity"]["message"]["text"] for b in back] == ["on its way"]

    # Another hub's agent naming that conversation gets the same 404 as a made-up id.
    other_id, other_auth = await hub.create_hub(f"conv-other-{tag}")
    intruder = await hub.create_integration(
        other_id, other_auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent"})
    r = await _post(hub, intruder, message("hijack", sender="x", conversation=conversation))
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "conversation_not_found"
    # Sentinel: the customer gets the next answer, and nothing between.
    r = await _post(hub, agent, message("sentinel", sender="agent-7", conversation=conversation))
    assert r.status_code == 202, r.text
    back = await receiver.wait_until(f"/{tag}/customer", lambda g: len(g) >= 2)
    assert [b.json["activity"]["message"]["text"] for b in back] == ["on its way", "sentinel"]


async def test_a_conversation_created_a_moment_ago_in_another_process_is_found(
        env: Env, broker: Any) -> None:
    """The router of one process creates the conversation; an ingress-only process, whose
    view of conversations may not have read it yet, takes the agent's answer at once."""
    hub, receiver, tag = env.hub, env.receiver, uuid.uuid4().hex[:8]
    # A second process on the same topics, serving only the ingress: its conversations
    # view learns of the new conversation only by reading the topic.
    ingress = await RunningHub(env.hub.settings, services=["ingress"]).start()
    try:
        hub_id, auth = await hub.create_hub(f"race-{tag}")
        customer = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer",
                           "webhookUrl": f"{receiver.url}/{tag}/customer"})
        agent = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent",
                           "webhookUrl": f"{receiver.url}/{tag}/agent"})
        for i in range(3):
            r = await _post(hub, customer, message(f"hello {i}", sender=f"cust-{i}"))
            assert r.status_code == 202, r.text
            got = await receiver.wait_for(f"/{tag}/agent", i + 1)
            conversation = got[-1].json["conversationId"]
            # The very moment the agent has it, to the other process.
            r = await _post(ingress, agent, message(f"answer {i}", sender="agent-7",
                                                    conversation=conversation))
            assert r.status_code == 202, r.text
        back = await receiver.wait_for(f"/{tag}/customer", 3)
        assert sorted(b.json["activity"]["message"]["text"] for b in back) == [
            "answer 0", "answer 1", "answer 2"]
    finally:
        await ingress.stop()
