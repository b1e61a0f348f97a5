"""Write access to Kafka does not let anyone speak for the hub (#9, section 4).

Records are written straight to the hub's topics with a plain producer, as someone holding
a Kafka principal with Write (and no secret key) could: a hub whose token the attacker
knows, an integration pointing at the attacker, a delivery the hub would sign and send, a
conversation that would redirect answers. Every one is refused by its readers, and the
hub's own writes after them still work. Records signed under an older key listed second
in SWITCHBOARD_SECRET_KEYS are read; a deployment upgraded from a release without MACs
reads its old records with SWITCHBOARD_RECORD_MAC=accept-unsigned until `reseal` has
signed them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import TopicPartition
from websockets.asyncio.client import ClientConnection, connect

from switchboard.conversations import ConversationRecord, conversation_encoder
from switchboard.kafka import CONVERSATIONS, DELIVERIES, PARKED, REGISTRY
from switchboard.kafka_topics import ensure_topics
from switchboard.keys import generate_secret_key_b64, hash_token, new_access_token
from switchboard.model import DeliveryRef, delivery_decoder
from switchboard.parking import ParkedDelivery, parked_encoder
from switchboard.record_mac import MAC_HEADER, RecordMac, guard_for
from switchboard.registry import (
    HubRecord,
    IntegrationRecord,
    hub_key,
    integration_key,
    record_decoder,
    record_encoder,
)
from switchboard.services.reseal import reseal
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.support import Receiver, message, sign_with_cryptography
from tests.topics import partitions

Raw = ConsumerRecord[bytes, bytes]


async def _raw(settings: Settings, name: str) -> list[Raw]:
    """Every record of one of the hub's topics, headers included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic(name)
        tps = [TopicPartition(topic, p) for p in (await partitions(settings, [topic]))[topic]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Raw] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            out.extend(r for rs in batch.values() for r in rs)
        return out
    finally:
        await consumer.stop()


async def _forge(settings: Settings, name: str, records: list[tuple[bytes, bytes | None]],
                 headers: list[tuple[str, bytes]] | None = None,
                 partition: int | None = None) -> list[int]:
    """Write records with a plain producer (no secret key): what an attacker with Write on
    the topic can do. Returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                acks="all", enable_idempotence=False)
    await producer.start()
    try:
        offsets = []
        for key, value in records:
            md = await producer.send_and_wait(settings.topic(name), value, key=key,
                                              partition=partition, headers=headers)
            offsets.append(md.offset)
        return offsets
    finally:
        await producer.stop()


def _foreign_mac(kind: str, key: bytes, value: bytes | None) -> list[tuple[str, bytes]]:
    """A well-formed MAC under a key this deployment does not hold."""
    return [(MAC_HEADER, RecordMac.from_b64(generate_secret_key_b64()).sign(kind, key, value))]


async def _send(h: RunningHub, integration: dict[str, Any], text: str,
                conversation: str | None = None, sender: str = "cust-1") -> None:
    body = message(text, sender=sender, conversation=conversation)
    r = await h.client.post(
        f"/ingress/{integration['integrationId']}", content=body,
        headers=sign_with_cryptography(integration["configuration"]["privateSigningKey"], body))
    assert r.status_code == 202, r.text


async def _desk(h: RunningHub, receiver: Receiver, hub_name: str = "acme"
                ) -> tuple[str, dict[str, str], dict[str, Any], dict[str, Any]]:
    hub_id, auth = await h.create_hub(hub_name)
    customer = await h.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/customer"})
    agent = await h.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
    return hub_id, auth, customer, agent


def _texts(got: list[Any]) -> list[str]:
    return [g.json["activity"]["message"]["text"] for g in got]


async def _latest_registry(settings: Settings, key: bytes) -> IntegrationRecord:
    [*_, last] = [r for r in await _raw(settings, REGISTRY) if r.key == key and r.value]
    rec = record_decoder.decode(last.value)
    assert isinstance(rec, IntegrationRecord)
    return rec


# ---- registry -------------------------------------------------------------------------------


async def test_forged_registry_records_are_refused(hub: RunningHub, receiver: Receiver) -> None:
    s = hub.settings
    hub_id, auth, customer, agent = await _desk(hub, receiver)
    guard = guard_for(s)
    assert guard is not None
    refused_before = guard.refused_total

    # A hub whose token the attacker knows: unsigned, and with a MAC of another key.
    token = new_access_token()
    evil_hub = HubRecord(hub_id="hub_evil", name="evil", token_hash=hash_token(token),
                         created_at=int(time.time() * 1000))
    value = record_encoder.encode(evil_hub)
    await _forge(s, REGISTRY, [(hub_key("hub_evil"), value)])
    await _forge(s, REGISTRY, [(hub_key("hub_evil"), value)],
                 headers=_foreign_mac("registry", hub_key("hub_evil"), value))
    # The agent's webhook moved to the attacker (the next version, so the view would take
    # it), and a new System integration in the victim's hub that would see every message.
    real = await _latest_registry(s, integration_key(agent["integrationId"]))
    cfg = msgspec.structs.replace(real.configuration, webhook_url=receiver.url + "/attacker")
    moved = msgspec.structs.replace(real, configuration=cfg, version=real.version + 1)
    spy = msgspec.structs.replace(moved, integration_id="in_spy", name="spy", version=1)
    # A legitimate record signed by the hub, replayed with another value under its MAC.
    signed = [r for r in await _raw(s, REGISTRY)
              if r.key == integration_key(agent["integrationId"])][-1]
    await _forge(s, REGISTRY, [(integration_key(agent["integrationId"]),
                                record_encoder.encode(moved))], headers=list(signed.headers))
    await _forge(s, REGISTRY, [(integration_key("in_spy"), record_encoder.encode(spy))])
    # Tombstones are refused too: the victim's hub is not deleted.
    await _forge(s, REGISTRY, [(hub_key(hub_id), None)])

    # Sentinel: a legitimate write after them is applied (so the view has read past them).
    later = await hub.create_integration(hub_id, auth, channelId="Direct", name="later",
                                         configuration={"integrationType": "Customer"})
    c = hub.client
    assert (await c.get(f"/api/v1/integrations/{later['integrationId']}",
                        headers=auth)).status_code == 200
    evil = {"Authorization": f"Bearer {token}"}
    assert (await c.get("/api/v1/hubs/hub_evil", headers=evil)).status_code == 401
    assert (await c.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 200
    assert (await c.get("/api/v1/integrations/in_spy", headers=auth)).status_code == 404
    got = (await c.get(f"/api/v1/integrations/{agent['integrationId']}", headers=auth)).json()
    assert got["configuration"]["webhookUrl"] == receiver.url + "/agent"
    assert guard.refused_total - refused_before == 5
    assert guard.refused[("registry", "unsigned")] >= 3
    assert guard.refused[("registry", "unknown_key")] >= 1
    assert guard.refused[("registry", "bad_mac")] >= 1

    # Messages still reach the real agent, and no delivery is made for the forged ones.
    await _send(hub, customer, "hello")
    await receiver.wait_for("/agent", 1)
    deliveries = [delivery_decoder.decode(r.value) for r in await _raw(s, DELIVERIES)]
    assert {d.destination_id for d in deliveries} == {agent["integrationId"]}
    assert receiver.at("/attacker") == []


# ---- deliveries -----------------------------------------------------------------------------


async def _stream_frame(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame: dict[str, Any] = orjson.loads(await ws.recv())
            if frame["type"] != "ping":
                return frame


async def test_a_forged_delivery_is_never_sent(hub: RunningHub, receiver: Receiver) -> None:
    """Neither by the deliverer (webhook) nor by the stream gateway (websocket)."""
    s = hub.settings
    hub_id, auth, customer, agent = await _desk(hub, receiver)
    streamed = await hub.create_integration(hub_id, auth, channelId="Direct", name="ws-desk",
                                            configuration={"integrationType": "Agent"})
    url = (hub.base_url.replace("http://", "ws://")
           + f"/v1/integrations/{streamed['integrationId']}/stream")
    async with connect(url, additional_headers=auth) as ws:
        assert (await _stream_frame(ws))["type"] == "ready"
        await _send(hub, customer, "first")
        await receiver.wait_for("/agent", 1)
        frame = await _stream_frame(ws)
        assert frame["payload"]["activity"]["message"]["text"] == "first"
        records = await _raw(s, DELIVERIES)
        for dest in (agent, streamed):
            [legit] = [r for r in records
                       if delivery_decoder.decode(r.value).destination_id
                       == dest["integrationId"]]
            conversation = await _forge_copies(s, legit)
        # Sentinel: the next message of the same conversation arrives, alone and in order.
        await _send(hub, customer, "second")
        got = await receiver.wait_for("/agent", 2)
        assert [g.json["conversationId"] for g in got] == [conversation] * 2
        assert _texts(got) == ["first", "second"]
        frame = await _stream_frame(ws)
        assert frame["payload"]["activity"]["message"]["text"] == "second", frame
    deliverer = next(w for w in hub.app.state.workers if hasattr(w, "attempter"))
    assert deliverer.stats.skipped >= 3
    # Each refused for its own reason: no MAC, a key the hub does not hold, another
    # record's MAC.
    guard = guard_for(s)
    assert guard is not None
    assert guard.refused[("deliveries", "unsigned")] >= 2
    assert guard.refused[("deliveries", "unknown_key")] >= 2
    assert guard.refused[("deliveries", "bad_mac")] >= 2


async def test_a_forged_parked_delivery_is_never_sent(hub: RunningHub,
                                                      receiver: Receiver) -> None:
    """A parked lane is folded from `deliveries.parked` and its head sent when due: a
    record there that the deliverer did not write is not part of any lane."""
    s = hub.settings
    _hub_id, _auth, customer, _agent = await _desk(hub, receiver)
    await _send(hub, customer, "first")
    await receiver.wait_for("/agent", 1)
    [legit] = await _raw(s, DELIVERIES)
    d = delivery_decoder.decode(legit.value)
    activity = msgspec.structs.replace(
        d.activity, activity_id="forged-parked",
        message=msgspec.structs.replace(d.activity.message, text="forged parked"))
    parked = parked_encoder.encode(ParkedDelivery(
        delivery=msgspec.structs.replace(d, delivery_id="msg_forged_parked",
                                         activity=activity),
        attempts=1, due_at=0, source=DeliveryRef(legit.partition, legit.offset)))
    await _forge(s, PARKED, [(legit.key, parked)], partition=legit.partition)
    await _forge(s, PARKED, [(legit.key, parked)], partition=legit.partition,
                 headers=_foreign_mac("deliveries.parked", legit.key, parked))
    # A delivery's own MAC does not make it a parked record (the topic is part of it).
    await _forge(s, PARKED, [(legit.key, legit.value)], partition=legit.partition,
                 headers=list(legit.headers))
    await _send(hub, customer, "second")
    got = await receiver.wait_for("/agent", 2)
    assert _texts(got) == ["first", "second"]
    guard = guard_for(s)
    assert guard is not None
    assert guard.refused[("deliveries.parked", "unsigned")] == 1
    assert guard.refused[("deliveries.parked", "unknown_key")] == 1
    assert guard.refused[("deliveries.parked", "bad_mac")] == 1


async def _forge_copies(s: Settings, legit: Raw) -> str:
    """Three forged deliveries on the lane of `legit` (same destination, conversation and
    partition), with a payload the hub would sign: unsigned, with a MAC of a foreign key,
    with `legit`'s own MAC. Returns the conversation."""
    d = delivery_decoder.decode(legit.value)
    forged = []
    for n in range(3):
        activity = msgspec.structs.replace(
            d.activity, activity_id=f"forged-{n}",
            message=msgspec.structs.replace(d.activity.message, text=f"forged {n}"))
        forged.append(msgspec.json.encode(msgspec.structs.replace(
            d, delivery_id=f"msg_forged{n}", activity=activity)))
    key = legit.key
    await _forge(s, DELIVERIES, [(key, forged[0])], partition=legit.partition)
    await _forge(s, DELIVERIES, [(key, forged[1])], partition=legit.partition,
                 headers=_foreign_mac("deliveries", key, forged[1]))
    await _forge(s, DELIVERIES, [(key, forged[2])], partition=legit.partition,
                 headers=list(legit.headers))
    return d.conversation_id


async def test_redeliver_does_not_launder_a_forged_delivery(hub: RunningHub,
                                                            receiver: Receiver) -> None:
    """Replay reads deliveries back and writes them again, signed: it must skip what the
    hub did not write, or replay would sign an attacker's record."""
    s = hub.settings
    _hub_id, auth, customer, agent = await _desk(hub, receiver)
    await _send(hub, customer, "first")
    await receiver.wait_for("/agent", 1)
    [legit] = await _raw(s, DELIVERIES)
    d = delivery_decoder.decode(legit.value)
    activity = msgspec.structs.replace(
        d.activity, activity_id="forged", message=msgspec.structs.replace(
            d.activity.message, text="forged"))
    value = msgspec.json.encode(msgspec.structs.replace(d, delivery_id="msg_forged",
                                                        activity=activity))
    await _forge(s, DELIVERIES, [(legit.key, value)], partition=legit.partition)
    r = await hub.client.post(
        f"/api/v1/integrations/{agent['integrationId']}/replay", headers=auth,
        json={"since": int(time.time() * 1000) - 3_600_000,
              "until": int(time.time() * 1000) + 60_000})
    assert r.status_code == 202, r.text
    job_id = r.json()["jobId"]
    for _ in range(200):
        job = (await hub.client.get(f"/api/v1/jobs/{job_id}", headers=auth)).json()
        if job["state"] == "done":
            break
        await asyncio.sleep(0.05)
    # Only the hub's own delivery was chosen and written again (signed).
    assert (job["state"], job["total"], job["done"]) == ("done", 1, 1), job
    again = [r for r in await _raw(s, DELIVERIES) if r.offset > legit.offset
             and r.partition == legit.partition and r.value == legit.value]
    assert len(again) == 1 and dict(again[0].headers).get(MAC_HEADER)
    assert len([r for r in await _raw(s, DELIVERIES) if b"msg_forged" in (r.value or b"")]) == 1
    # Sentinel: the replayed "first" and the next message arrive; nothing forged.
    await _send(hub, customer, "sentinel")
    got = await receiver.wait_until("/agent", lambda g: "sentinel" in _texts(g))
    assert _texts(got) == ["first", "first", "sentinel"]


# ---- conversations -------------------------------------------------------------------------


async def test_a_forged_conversation_does_not_redirect_answers(hub: RunningHub,
                                                               receiver: Receiver) -> None:
    s = hub.settings
    hub_id, auth, customer, agent = await _desk(hub, receiver)
    other = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="attacker-site",
        configuration={"integrationType": "Customer", "webhookUrl": receiver.url + "/evil"})
    await _send(hub, customer, "hello")
    [first] = await receiver.wait_for("/agent", 1)
    conversation = first.json["conversationId"]
    # The conversation now belongs to the attacker's customer integration.
    rec = ConversationRecord(conversation_id=conversation, hub_id=hub_id,
                             customer_integration_id=other["integrationId"],
                             customer_id="evil", created_at=int(time.time() * 1000))
    value = conversation_encoder.encode(rec)
    await _forge(s, CONVERSATIONS, [(conversation.encode(), value)])
    await _forge(s, CONVERSATIONS, [(conversation.encode(), value)],
                 headers=_foreign_mac("conversations", conversation.encode(), value))
    # Every reader has read past them (the table is followed from the topic).
    await hub.app.state.runtime.conversations.sync()
    answer = message("answer", sender="agent-7", conversation=conversation)
    r = await hub.client.post(
        f"/ingress/{agent['integrationId']}", content=answer,
        headers=sign_with_cryptography(agent["configuration"]["privateSigningKey"], answer))
    assert r.status_code == 202, r.text
    [back] = await receiver.wait_for("/customer", 1)
    assert back.json["activity"]["message"]["text"] == "answer"
    # The answer's deliveries are written together: none went to the attacker.
    deliveries = [delivery_decoder.decode(r.value) for r in await _raw(s, DELIVERIES)]
    assert other["integrationId"] not in {x.destination_id for x in deliveries}
    assert receiver.at("/evil") == []
    table = hub.app.state.runtime.conversations.get(conversation)
    assert table is not None and table.customer_integration_id == customer["integrationId"]


# ---- key rotation and the upgrade path ------------------------------------------------------


async def test_records_signed_under_an_older_key_are_read(broker: Any,
                                                          receiver: Receiver) -> None:
    old_key, new_key = generate_secret_key_b64(), generate_secret_key_b64()
    settings = make_settings(broker, secret_key=old_key)
    h = await RunningHub(settings).start()
    try:
        hub_id, auth, customer, agent = await _desk(h, receiver)
        await _send(h, customer, "before")
        [first] = await receiver.wait_for("/agent", 1)
        conversation = first.json["conversationId"]
    finally:
        await h.stop()
    rotated = msgspec.structs.replace(settings, secret_key="",
                                      secret_keys=f"{new_key},{old_key}")
    h = await RunningHub(rotated).start()
    try:
        # The registry (hub token, integrations) and the conversation, signed by the old key.
        assert (await h.client.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 200
        await _answer(h, agent, conversation, "answer under two keys")
        [back] = await receiver.wait_for("/customer", 1)
        assert _texts([back]) == ["answer under two keys"]
    finally:
        await h.stop()
    lines: list[str] = []
    report = await reseal(rotated, say=lines.append)
    assert not report.conflicts and not report.unreadable, lines
    [conversations] = [t for t in report.tables if t.table == CONVERSATIONS]
    assert conversations.resigned == 1 and conversations.refused == 0, lines
    # After reseal the old key can go: everything is read under the new key alone.
    only_new = msgspec.structs.replace(settings, secret_key=new_key)
    h = await RunningHub(only_new).start()
    try:
        assert (await h.client.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 200
        await _answer(h, agent, conversation, "answer under the new key")
        got = await receiver.wait_for("/customer", 2)
        assert _texts(got)[-1] == "answer under the new key"
        # What the old key signed is still on the topics (superseded, until compaction):
        # refused as signed by a key this deployment no longer holds, nothing else.
        guard = guard_for(only_new)
        assert guard is not None and {why for _, why in guard.refused} <= {"unknown_key"}
    finally:
        await h.stop()


async def _answer(h: RunningHub, agent: dict[str, Any], conversation: str, text: str) -> None:
    await _send(h, agent, text, conversation=conversation, sender="agent-7")


async def _copy_unsigned(src: Settings, dst: Settings, names: list[str]) -> int:
    """Copy tables to another prefix without their MACs: what a release before MACs wrote."""
    producer = AIOKafkaProducer(bootstrap_servers=src.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=False)
    await producer.start()
    n = 0
    try:
        for name in names:
            for r in await _raw(src, name):
                await producer.send_and_wait(dst.topic(name), r.value, key=r.key, partition=0)
                n += 1
    finally:
        await producer.stop()
    return n


async def test_upgrade_from_unsigned_records(broker: Any, receiver: Receiver) -> None:
    src = make_settings(broker)
    h = await RunningHub(src).start()
    try:
        hub_id, auth, customer, agent = await _desk(h, receiver)
        await _send(h, customer, "before the upgrade")
        [first] = await receiver.wait_for("/agent", 1)
        conversation = first.json["conversationId"]
    finally:
        await h.stop()
    old = make_settings(broker, secret_key=src.secret_key)
    await ensure_topics(old)
    assert await _copy_unsigned(src, old, [REGISTRY, CONVERSATIONS]) >= 4
    # Enforced, records without a MAC are refused: the hub does not exist.
    h = await RunningHub(old).start()
    try:
        assert (await h.client.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 401
    finally:
        await h.stop()
    upgrading = msgspec.structs.replace(old, record_mac="accept-unsigned")
    h = await RunningHub(upgrading).start()
    try:
        assert (await h.client.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 200
        await _answer(h, agent, conversation, "during the upgrade")
        [back] = await receiver.wait_for("/customer", 1)
        assert _texts([back]) == ["during the upgrade"]
        # A forged MAC is still refused in this mode (only a missing one is let through).
        token = new_access_token()
        value = record_encoder.encode(HubRecord(hub_id="hub_evil", name="evil",
                                                token_hash=hash_token(token), created_at=1))
        await _forge(upgrading, REGISTRY, [(hub_key("hub_evil"), value)],
                     headers=_foreign_mac("registry", hub_key("hub_evil"), value))
        await h.app.state.runtime.registry.sync()
        assert (await h.client.get("/api/v1/hubs/hub_evil", headers={
            "Authorization": f"Bearer {token}"})).status_code == 401
    finally:
        await h.stop()
    lines: list[str] = []
    report = await reseal(upgrading, say=lines.append)
    assert not report.conflicts and not report.unreadable, lines
    [conversations] = [t for t in report.tables if t.table == CONVERSATIONS]
    assert conversations.resigned == 1, lines
    # Enforced again: everything the old release wrote is read, now signed.
    h = await RunningHub(old).start()
    try:
        assert (await h.client.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 200
        await _answer(h, agent, conversation, "after the upgrade")
        got = await receiver.wait_for("/customer", 2)
        assert _texts(got)[-1] == "after the upgrade"
    finally:
        await h.stop()
    assert orjson.loads(first.body)["hubId"] == hub_id
