"""The first hour with the API: names in any case, an answer to a conversation that does
not exist refused with 404, on a real broker with a real hub, receiver and Twilio fake; and
`switchboard dev` starting, carrying a conversation and stopping without an ERROR line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from switchboard.brokers import free_port
from tests.conftest import BROKER_KIND, RunningHub, make_settings
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_resilience import Service, _stop_all
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
        env: Env, tmp_path: Path) -> None:
    """The router of one process creates the conversation; the agent's answer goes at once
    to an ingress in another OS process, whose view of conversations has not read it:
    idle, that view looks at the topic only every 30 s on Tansu (`switchboard.pacing`),
    and no producer of its own process wakes it. The miss waits for the view to reach the
    topic's end, and the answer is taken."""
    hub, receiver, tag = env.hub, env.receiver, uuid.uuid4().hex[:8]
    settings = msgspec.structs.replace(hub.settings, fetch_idle_poll_ms=30_000)
    ingress = Service("ingress", settings, tmp_path)
    try:
        await ingress.wait_ready()
        hub_id, auth = await hub.create_hub(f"race-{tag}")
        customer = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer",
                           "webhookUrl": f"{receiver.url}/{tag}/customer"})
        agent = await hub.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent",
                           "webhookUrl": f"{receiver.url}/{tag}/agent"})
        async with httpx.AsyncClient(base_url=ingress.url, timeout=30) as other:
            for i in range(3):
                await asyncio.sleep(1.5)  # the other process's readers go idle
                r = await _post(hub, customer, message(f"hello {i}", sender=f"cust-{i}"))
                assert r.status_code == 202, r.text
                got = await receiver.wait_for(f"/{tag}/agent", i + 1)
                body = message(f"answer {i}", sender="agent-7",
                               conversation=got[-1].json["conversationId"])
                key = agent["configuration"]["privateSigningKey"]
                r = await other.post(f"/ingress/{agent['integrationId']}", content=body,
                                     headers=sign_with_cryptography(key, body))
                assert r.status_code == 202, r.text
            # And a made-up one is still refused there.
            body = message("lost", sender="agent-7", conversation=f"made-up-{tag}")
            r = await other.post(f"/ingress/{agent['integrationId']}", content=body,
                                 headers=sign_with_cryptography(key, body))
            assert r.status_code == 404, r.text
        back = await receiver.wait_for(f"/{tag}/customer", 3)
        assert sorted(b.json["activity"]["message"]["text"] for b in back) == [
            "answer 0", "answer 1", "answer 2"]
    finally:
        await _stop_all([ingress])


# A log line at ERROR or CRITICAL in either format (ours and uvicorn's), or a traceback.
BAD_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


async def test_a_normal_dev_run_logs_no_error(broker: Any, tmp_path: Path) -> None:
    """`switchboard dev` as a user runs it: start, a conversation both ways, SIGTERM."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env["SWITCHBOARD_ADMIN_TOKEN"] = admin_token = "dev-admin-" + uuid.uuid4().hex
    if BROKER_KIND == "kafka":
        # dev starts Tansu itself; on the Kafka tier it uses the test's Apache Kafka.
        env |= {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "SWITCHBOARD_BROKER_KIND": "kafka",
                "SWITCHBOARD_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}."}
    log_path = tmp_path / "dev.log"
    receiver = await Receiver().start()
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.services.cli", "dev", "--port", str(port),
            "--data-dir", str(tmp_path / "var"),
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            deadline = time.monotonic() + 90
            while True:
                assert proc.returncode is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                try:
                    if (await c.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            r = await c.post("/api/v1/hubs", json={"name": "first"},
                             headers={"Authorization": f"Bearer {admin_token}"})
            assert r.status_code == 201, r.text
            hub_id = r.json()["hubId"]
            auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
            made = {}
            for name, itype in (("site", "customer"), ("desk", "agent")):
                r = await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
                                 json={"channelId": "direct", "name": name, "configuration": {
                                     "integrationType": itype,
                                     "webhookUrl": f"{receiver.url}/{name}"}})
                assert r.status_code == 201, r.text
                made[name] = r.json()

            async def post(who: str, body: bytes) -> httpx.Response:
                key = made[who]["configuration"]["privateSigningKey"]
                return await c.post(f"/ingress/{made[who]['integrationId']}", content=body,
                                    headers=sign_with_cryptography(key, body))

            assert (await post("site", message("hello", sender="ada"))).status_code == 202
            [got] = await receiver.wait_for("/desk", 1)
            r = await post("desk", message("hi Ada", sender="agent-7",
                                           conversation=got.json["conversationId"]))
            assert r.status_code == 202, r.text
            r = await post("desk", message("lost", sender="agent-7", conversation="nope"))
            assert r.status_code == 404, r.text
            [back] = await receiver.wait_for("/site", 1)
            assert back.json["activity"]["message"]["text"] == "hi Ada"
            assert (await c.get("/docs")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await receiver.stop()
    out = log_path.read_text()
    assert "Application shutdown complete" in out, out
    assert [line for line in out.splitlines() if BAD_LINE.search(line)] == [], out
