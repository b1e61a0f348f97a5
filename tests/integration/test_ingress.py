"""Bad input gets a clear 4xx with a JSON body and never reaches Kafka."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from switchboard.kafka import ACTIVITIES
from tests.conftest import RunningHub
from tests.support import message, sign_with_cryptography


async def _activity_count(hub: RunningHub) -> int:
    s = hub.settings
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(s.topic(ACTIVITIES), p) for p in range(s.partitions)]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _customer(hub: RunningHub, **config: Any) -> tuple[str, str, dict[str, str]]:
    hub_id, auth = await hub.create_hub()
    made = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="site",
        configuration={"integrationType": "Customer", **config})
    return made["integrationId"], made["configuration"]["privateSigningKey"], auth


async def test_rejections(hub: RunningHub) -> None:
    iid, key, _ = await _customer(hub)
    url = f"/ingress/{iid}"
    body = message("hi")
    good = sign_with_cryptography(key, body)
    other_key = (await hub.create_integration(
        *(await hub.create_hub("b")), channelId="Direct", name="x",
        configuration={"integrationType": "Customer"}))["configuration"]["privateSigningKey"]

    def strip(h: dict[str, str], name: str) -> dict[str, str]:
        return {k: v for k, v in h.items() if k != name}

    # Before authentication every refusal is the same 401 (it tells nothing about the
    # integration); after it, errors say what is wrong.
    unauth = (401, "unauthenticated")
    cases: list[tuple[str, bytes, dict[str, str], tuple[int, str]]] = [
        ("no signature", body, strip(good, "webhook-signature"), unauth),
        ("wrong key", body, sign_with_cryptography(other_key, body), unauth),
        ("tampered body", message("hi!"), good, unauth),
        ("stale", body, sign_with_cryptography(key, body, timestamp=int(time.time()) - 301),
         unauth),
        ("future", body, sign_with_cryptography(key, body, timestamp=int(time.time()) + 400),
         unauth),
        ("long id", body, sign_with_cryptography(key, body, msg_id="x" * 257), unauth),
        ("space in id", body, sign_with_cryptography(key, body, msg_id="a b"), unauth),
        ("form body", body, {**good, "content-type": "application/x-www-form-urlencoded"},
         unauth),
        ("not json", b"{nope", sign_with_cryptography(key, b"{nope"), (400, "invalid_json")),
        ("wrong shape", b'{"type":"message"}', sign_with_cryptography(key, b'{"type":"message"}'),
         (400, "invalid_activity")),
    ]
    answers = {}
    for name, content, headers, (status, code) in cases:
        r = await hub.client.post(url, content=content, headers=headers)
        assert r.status_code == status, (name, r.text)
        err = r.json()
        assert err["status"] == status and err["errors"][0]["code"] == code, (name, err)
        answers[name] = r.content

    big = b'{"x":"' + b"a" * (hub.settings.max_body_bytes + 1) + b'"}'
    r = await hub.client.post(url, content=big, headers=sign_with_cryptography(key, big))
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "payload_too_large"

    r = await hub.client.post("/ingress/00000000-0000-0000-0000-000000000000", content=body,
                              headers=good)
    assert (r.status_code, r.content) == (401, answers["no signature"])

    # An agent must say which conversation it answers.
    agent = await hub.create_integration(
        *(await hub.create_hub("c")), channelId="Direct", name="desk",
        configuration={"integrationType": "Agent"})
    akey = agent["configuration"]["privateSigningKey"]
    r = await hub.client.post(f"/ingress/{agent['integrationId']}", content=body,
                              headers=sign_with_cryptography(akey, body))
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "conversationId"

    assert await _activity_count(hub) == 0, "a rejected request reached Kafka"
    r = await hub.client.post(url, content=body, headers=good)
    assert r.status_code == 202
    assert await _activity_count(hub) == 1


async def test_key_regeneration_grace_window(hub: RunningHub) -> None:
    iid, old_key, auth = await _customer(hub)
    r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth, json={
        "configuration": {"integrationType": "Customer", "regenerateKeys": True}})
    assert r.status_code == 200
    new_key = r.json()["configuration"]["privateSigningKey"]
    assert new_key != old_key
    for key in (old_key, new_key):  # within the grace window both verify
        body = message(f"signed with {key[:12]}")
        r = await hub.client.post(f"/ingress/{iid}", content=body,
                                  headers=sign_with_cryptography(key, body))
        assert r.status_code == 202, r.text
    # A second regeneration retires the first new key; the original is still in grace.
    r = await hub.client.patch(f"/api/v1/integrations/{iid}", headers=auth, json={
        "configuration": {"integrationType": "Customer", "regenerateKeys": True}})
    assert r.status_code == 200


async def test_grace_window_expires(broker: Any) -> None:
    from tests.conftest import make_settings

    h = await RunningHub(make_settings(broker, key_grace_s=0)).start()
    try:
        iid, old_key, auth = await _customer(h)
        r = await h.client.patch(f"/api/v1/integrations/{iid}", headers=auth, json={
            "configuration": {"integrationType": "Customer", "regenerateKeys": True}})
        new_key = r.json()["configuration"]["privateSigningKey"]
        body = message("late")
        r = await h.client.post(f"/ingress/{iid}", content=body,
                                headers=sign_with_cryptography(old_key, body))
        assert r.status_code == 401
        r = await h.client.post(f"/ingress/{iid}", content=body,
                                headers=sign_with_cryptography(new_key, body))
        assert r.status_code == 202
    finally:
        await h.stop()


async def test_rate_limit_is_per_integration(broker: Any) -> None:
    from tests.conftest import make_settings

    h = await RunningHub(make_settings(broker, ingress_rate_per_s=0.5, ingress_burst=2),
                         ["api", "ingress"]).start()
    try:
        noisy, noisy_key, _ = await _customer(h)
        hub_id, auth = await h.create_hub("quiet")
        quiet = await h.create_integration(hub_id, auth, channelId="Direct", name="q",
                                           configuration={"integrationType": "Customer"})
        codes = []
        for i in range(3):
            body = message(f"n{i}")
            r = await h.client.post(f"/ingress/{noisy}", content=body,
                                    headers=sign_with_cryptography(noisy_key, body))
            codes.append(r.status_code)
        assert codes == [202, 202, 429]
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["errors"][0]["code"] == "rate_limited"
        body = message("q")
        r = await h.client.post(
            f"/ingress/{quiet['integrationId']}", content=body,
            headers=sign_with_cryptography(quiet["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202
    finally:
        await h.stop()
