"""End to end through the real API, ingress, router and deliverer on a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.conftest import RunningHub
from tests.support import Receiver, message, sign_with_cryptography, verify_with_cryptography


async def _setup(hub: RunningHub, receiver: Receiver) -> dict[str, dict]:
    hub_id, auth = await hub.create_hub()
    customer = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/customer"})
    agent = await hub.create_integration(
        hub_id, auth, channelId=1, name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
    system = await hub.create_integration(
        hub_id, auth, channelId="System", name="audit",
        configuration={"webhookUrl": receiver.url + "/system", "events": ["message:*"]})
    return {"customer": customer, "agent": agent, "system": system, "auth": auth,
            "hub": {"hubId": hub_id}}


async def test_customer_to_agent_and_back(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        s = await _setup(hub, receiver)
        cust, agent = s["customer"], s["agent"]
        body = message("hello, I need help")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202, r.text
        activity_id = r.json()["activityId"]

        got = (await receiver.wait_for("/agent", 1))[0]
        payload = got.json
        assert payload["hubId"] == s["hub"]["hubId"]
        assert payload["integrationId"] == agent["integrationId"]
        assert payload["activity"]["activityId"] == activity_id
        assert payload["activity"]["type"] == "message:customer"
        assert payload["activity"]["message"] == {"type": "text", "text": "hello, I need help"}
        assert verify_with_cryptography(agent["configuration"]["publicSigningKey"], got)
        # A key belonging to another integration must not verify it.
        assert not verify_with_cryptography(cust["configuration"]["publicSigningKey"], got)

        system = (await receiver.wait_for("/system", 1))[0].json
        assert [a["activityId"] for a in system["activities"]] == [activity_id]

        # The agent answers in the same conversation; the customer gets it.
        conversation = payload["conversationId"]
        answer = message("happy to help", sender="agent-7", conversation=conversation)
        r = await hub.client.post(
            f"/ingress/{agent['integrationId']}", content=answer,
            headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"], answer))
        assert r.status_code == 202, r.text
        back = (await receiver.wait_for("/customer", 1))[0]
        assert back.json["activity"]["type"] == "message:agent"
        assert back.json["activity"]["message"]["text"] == "happy to help"
        assert back.json["conversationId"] == conversation
        assert verify_with_cryptography(cust["configuration"]["publicSigningKey"], back)
        await receiver.wait_for("/system", 2)
        # The agent does not get its own message back (echo is off). Sentinel: the
        # customer writes again in that conversation; routed after the answer, it reaches
        # the agent after anything the answer would have sent it.
        again = message("thank you")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=again,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], again))
        assert r.status_code == 202, r.text
        got_all = await receiver.wait_until("/agent", lambda got: any(
            g.json["activity"]["message"]["text"] == "thank you" for g in got))
        assert [g.json["activity"]["message"]["text"] for g in got_all] == [
            "hello, I need help", "thank you"]
    finally:
        await receiver.stop()


async def test_same_webhook_id_is_delivered_once(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        s = await _setup(hub, receiver)
        cust = s["customer"]
        body = message("only once")
        headers = sign_with_cryptography(cust["configuration"]["privateSigningKey"], body,
                                         msg_id="provider-retry-1")
        ids = set()
        for _ in range(3):
            r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                      headers=headers)
            assert r.status_code == 202
            ids.add(r.json()["activityId"])
        assert len(ids) == 1
        second = message("next")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=second,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], second))
        got = await receiver.wait_for("/agent", 2)
        texts = [g.json["activity"]["message"]["text"] for g in got]
        assert texts == ["only once", "next"]
        assert len({g.headers["webhook-id"] for g in got}) == 2
    finally:
        await receiver.stop()


async def test_echo_and_pause(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        s = await _setup(hub, receiver)
        cust, agent, auth = s["customer"], s["agent"], s["auth"]
        # Echo on for the customer integration; pause the agent.
        r = await hub.client.patch(
            f"/api/v1/integrations/{cust['integrationId']}", headers=auth,
            json={"configuration": {"integrationType": "Customer", "echo": True,
                                    "webhookUrl": receiver.url + "/customer"}})
        assert r.status_code == 200, r.text
        r = await hub.client.post(f"/api/v1/integrations/hubs/{agent['integrationId']}",
                                  headers=auth, json={"statusId": 3002})
        assert r.status_code == 200 and r.json()["statusId"] == 3002
        body = message("echo me")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202
        echoed = (await receiver.wait_for("/customer", 1))[0].json
        assert echoed["activity"]["message"]["text"] == "echo me"
        await receiver.wait_for("/system", 1)
        # A paused integration cannot send either.
        answer = message("paused", sender="a", conversation=echoed["conversationId"])
        r = await hub.client.post(
            f"/ingress/{agent['integrationId']}", content=answer,
            headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"], answer))
        assert r.status_code == 409
        assert r.json()["errors"][0]["code"] == "integration_paused"
        # Resumed, the agent gets what comes next and nothing of its pause. The hub's
        # view has it active once the ingress takes its messages again (one view per
        # process); then the sentinel: the customer's next message in the same
        # conversation, routed after "echo me", so that one would have arrived first.
        r = await hub.client.post(f"/api/v1/integrations/hubs/{agent['integrationId']}",
                                  headers=auth, json={"statusId": 3000})
        assert r.status_code == 200 and r.json()["statusId"] == 3000
        answer = message("back", sender="a", conversation=echoed["conversationId"])
        for _ in range(100):
            r = await hub.client.post(
                f"/ingress/{agent['integrationId']}", content=answer,
                headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"],
                                               answer))
            if r.status_code != 409:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 202, r.text
        resumed = message("after the pause")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=resumed,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], resumed))
        assert r.status_code == 202, r.text
        got_all = await receiver.wait_until("/agent", lambda got: any(
            g.json["activity"]["message"]["text"] == "after the pause" for g in got))
        assert [g.json["activity"]["message"]["text"] for g in got_all] == ["after the pause"]
    finally:
        await receiver.stop()


async def test_start_messages_greet_a_new_conversation(hub: RunningHub) -> None:
    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/c",
                           "start": [{"type": "text", "text": "Welcome!"}]})
        agent = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/a"})
        key = cust["configuration"]["privateSigningKey"]
        for text in ("first", "second"):
            body = message(text)
            r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                      headers=sign_with_cryptography(key, body))
            assert r.status_code == 202
        got = await receiver.wait_for("/c", 1)
        assert got[0].json["activity"]["message"]["text"] == "Welcome!"
        assert got[0].json["activity"]["type"] == "message:bot"
        # Only the first message opened the conversation. Sentinel: an agent answers in
        # it after "third"; another greeting would have reached the customer before that.
        body = message("third")
        r = await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 202
        conversation = orjson.loads(got[0].body)["conversationId"]
        assert conversation
        answer = message("an agent here", sender="agent-7", conversation=conversation)
        r = await hub.client.post(
            f"/ingress/{agent['integrationId']}", content=answer,
            headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"], answer))
        assert r.status_code == 202, r.text
        got = await receiver.wait_until("/c", lambda got: any(
            g.json["activity"]["message"]["text"] == "an agent here" for g in got))
        assert [g.json["activity"]["message"]["text"] for g in got] == [
            "Welcome!", "an agent here"]
        assert {g.json["conversationId"] for g in got} == {conversation}
    finally:
        await receiver.stop()


async def test_permanent_failure_becomes_a_delivery_failed_event(hub: RunningHub) -> None:
    # The agent's endpoint is gone for good (410): the delivery is dead-lettered at once
    # and a System integration subscribed to event:delivery_failed hears about it.
    receiver = await Receiver(lambda path, n: (410, {}, 0.0) if path == "/agent"
                              else (200, {}, 0.0)).start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="c",
            configuration={"integrationType": "Customer"})
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name="a",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
        await hub.create_integration(
            hub_id, auth, channelId="System", name="ops",
            configuration={"webhookUrl": receiver.url + "/ops",
                           "events": ["event:delivery_failed"]})
        body = message("will not arrive")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        activity_id = r.json()["activityId"]
        ops = (await receiver.wait_for("/ops", 1))[0].json
        event = ops["activities"][0]
        assert event["type"] == "event:delivery_failed"
        assert event["event"]["ref"] == activity_id
        assert event["event"]["data"]["reason"] == "gone"
        assert event["event"]["data"]["status"] == 410
        # Only failure events reach ops: its filter excludes messages. Sentinel: a second
        # message of the customer (same conversation) fails too; the first message, had it
        # been sent to ops, would have arrived before either event.
        body = message("will not arrive either")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202
        second_id = r.json()["activityId"]
        got = await receiver.wait_until("/ops", lambda got: any(
            a["event"]["ref"] == second_id for g in got for a in g.json["activities"]
            if a.get("event")))
        events = [a for g in got for a in g.json["activities"]]
        assert [(e["type"], e["event"]["ref"]) for e in events] == [
            ("event:delivery_failed", activity_id), ("event:delivery_failed", second_id)]
    finally:
        await receiver.stop()


async def test_provider_retry_after_a_restart_is_still_delivered_once(broker: object) -> None:
    from tests.conftest import make_settings

    settings = make_settings(broker)
    receiver = await Receiver().start()
    hub = await RunningHub(settings).start()
    try:
        s = await _setup(hub, receiver)
        cust = s["customer"]
        key = cust["configuration"]["privateSigningKey"]
        body = message("once, even across restarts")
        headers = sign_with_cryptography(key, body, msg_id="provider-event-42")
        assert (await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                      headers=headers)).status_code == 202
        await receiver.wait_for("/agent", 1)
        await hub.stop()
        # A new router owns the partitions now; the provider retries the same event.
        hub = await RunningHub(settings).start()
        retry = sign_with_cryptography(key, body, msg_id="provider-event-42")
        assert (await hub.client.post(f"/ingress/{cust['integrationId']}", content=body,
                                      headers=retry)).status_code == 202
        after = message("after the retry")
        assert (await hub.client.post(f"/ingress/{cust['integrationId']}", content=after,
                                      headers=sign_with_cryptography(key, after))).status_code \
            == 202
        await receiver.wait_until("/agent", lambda got: "after the retry" in [
            g.json["activity"]["message"]["text"] for g in got])
        # The deliverer may redeliver what it had not committed when it stopped
        # (at-least-once, same webhook-id); the router must not route the retry again.
        first_by_id: dict[str, str] = {}
        for g in receiver.at("/agent"):
            first_by_id.setdefault(g.headers["webhook-id"], g.json["activity"]["message"]["text"])
        assert list(first_by_id.values()) == ["once, even across restarts", "after the retry"]
        deliveries = await _delivery_records(settings)
        assert sorted(d["activity"]["message"]["text"] for d in deliveries
                      if d["destinationId"] == s["agent"]["integrationId"]) == [
            "after the retry", "once, even across restarts"]
    finally:
        await hub.stop()
        await receiver.stop()


async def _delivery_records(settings: Any) -> list[dict[str, Any]]:
    """Every record on the deliveries topic (what the router produced)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from switchboard.kafka import DELIVERIES

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(DELIVERIES), p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out += [orjson.loads(r.value) for r in batch.get(tp, [])]
        return out
    finally:
        await consumer.stop()


async def test_hmac_signing_on_request_verifies_with_standardwebhooks(hub: RunningHub) -> None:
    from standardwebhooks.webhooks import Webhook

    receiver = await Receiver().start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="c",
            configuration={"integrationType": "Customer"})
        system = await hub.create_integration(
            hub_id, auth, channelId="System", name="audit",
            configuration={"webhookUrl": receiver.url + "/sys", "events": ["*"],
                           "hmacSigning": True})
        secret = system["configuration"]["webhookSecret"]
        assert secret.startswith("whsec_")
        got = (await hub.client.get(f"/api/v1/integrations/{system['integrationId']}",
                                    headers=auth)).json()
        assert "webhookSecret" not in got["configuration"]  # shown once
        body = message("audit me")
        await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        delivery = (await receiver.wait_for("/sys", 1))[0]
        # The independent library checks the v1 HMAC; the Ed25519 v1a is there as well.
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert payload["activities"][0]["message"]["text"] == "audit me"
        assert verify_with_cryptography(system["configuration"]["publicSigningKey"], delivery)
    finally:
        await receiver.stop()
