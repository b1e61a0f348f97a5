"""Tenants are walls (issue #9, tokens and secrets): hub tokens rotate and hubs delete,
another hub's ids answer like unknown ones, 503s say nothing about the broker, signing keys
rotate with a bounded grace, unsigned floods spend nobody's budget, conversations belong to
their hub, and `reseal` moves every secret to a new key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from switchboard.brokers import start_broker
from switchboard.kafka import DELIVERIES, REGISTRY, SYNC_PROFILES, make_producer
from switchboard.keys import generate_secret_key_b64, new_access_token
from switchboard.model import delivery_decoder
from switchboard.progress import Progress
from switchboard.registry import IntegrationRecord, record_decoder
from switchboard.sealer import Sealer
from switchboard.sealing import sealed_values
from switchboard.services.reseal import reseal
from switchboard.sync.profiles import ProfileRecord, open_credentials, profile_decoder
from tests.conftest import RunningHub, make_settings
from tests.fakes.messenger import FakeGraph, meta_signature, text_event
from tests.fakes.messenger import entry as meta_entry
from tests.fakes.messenger import webhook as meta_webhook
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import message_event as slack_message_event
from tests.fakes.slack import signed as slack_signed_request
from tests.fakes.twilio import FakeTwilio
from tests.integration.test_sync_runs import body as sync_body
from tests.integration.test_sync_runs import run_and_wait as sync_run_and_wait
from tests.integration.test_sync_runs import sides as sync_sides
from tests.support import (
    Receiver,
    message,
    sign_with_cryptography,
    slack_state,
    verify_with_cryptography,
)
from tests.topics import read_topics


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _read_topic(settings: Any, name: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(k, v) for _, k, v in await read_topics(settings, [name])]


def _latest_profile(records: list[tuple[bytes | None, bytes | None]], pid: str
                    ) -> ProfileRecord:
    [*_, value] = [v for k, v in records if k == pid.encode()]
    assert value is not None
    return profile_decoder.decode(value)


# ---- hub tokens, hub delete, no existence oracle ------------------------------------------


async def test_hub_token_rotation(hub: RunningHub) -> None:
    c = hub.client
    hub_id, auth = await hub.create_hub("acme")
    got = (await c.get(f"/api/v1/hubs/{hub_id}", headers=auth)).json()
    assert got["tokenRotatedAt"] is None and got["tokenIssuedAt"] == got["createdAt"]
    assert "accessToken" not in got and got["integrationCount"] == 0
    # The hub rotates its own token: the old one stops working at once.
    r = await c.post(f"/api/v1/hubs/{hub_id}/rotateToken", headers=auth)
    assert r.status_code == 200, r.text
    new = _bearer(r.json()["accessToken"])
    assert r.json()["tokenRotatedAt"] is not None
    assert (await c.get(f"/api/v1/hubs/{hub_id}", headers=auth)).status_code == 401
    r = await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "invalid_token"
    assert (await c.get(f"/api/v1/hubs/{hub_id}", headers=new)).status_code == 200
    # The admin may rotate it too; then the hub's current token stops.
    r = await c.post(f"/api/v1/hubs/{hub_id}/rotateToken", headers=hub.admin)
    assert r.status_code == 200
    assert (await c.get(f"/api/v1/hubs/{hub_id}", headers=new)).status_code == 401
    third = _bearer(r.json()["accessToken"])
    listed = (await c.get("/api/v1/hubs", headers=third)).json()
    assert [h["hubId"] for h in listed] == [hub_id]
    assert all("accessToken" not in h for h in listed)


async def test_another_hubs_ids_answer_like_unknown_ones(hub: RunningHub) -> None:
    c = hub.client
    a_id, a_auth = await hub.create_hub("a")
    b_id, b_auth = await hub.create_hub("b")
    a_int = (await hub.create_integration(a_id, a_auth, channelId="Direct", name="x",
                                          configuration={"integrationType": "Agent"}))
    unknown = str(uuid.uuid4())
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/api/v1/hubs/{}", None),
        ("PATCH", "/api/v1/hubs/{}", {"retrySchedule": None}),
        ("DELETE", "/api/v1/hubs/{}", None),
        ("POST", "/api/v1/hubs/{}/rotateToken", None),
        ("GET", "/api/v1/integrations/hubs/{}", None),
        ("POST", "/api/v1/integrations/hubs/{}",
         {"channelId": "Direct", "name": "y", "configuration": {"integrationType": "Bot"}}),
    ]
    for method, path, body in requests:
        theirs = await c.request(method, path.format(a_id), headers=b_auth, json=body)
        nobody = await c.request(method, path.format(unknown), headers=b_auth, json=body)
        assert theirs.status_code == nobody.status_code == 404, (method, path, theirs.text)
        assert theirs.content == nobody.content, (method, path)
    for method in ("GET", "PATCH", "DELETE"):
        theirs = await c.request(method, f"/api/v1/integrations/{a_int['integrationId']}",
                                 headers=b_auth, json={"name": "z"} if method == "PATCH" else None)
        nobody = await c.request(method, f"/api/v1/integrations/{unknown}", headers=b_auth,
                                 json={"name": "z"} if method == "PATCH" else None)
        assert (theirs.status_code, theirs.content) == (nobody.status_code, nobody.content)
    # Nothing was changed by any of it.
    assert (await c.get(f"/api/v1/hubs/{a_id}", headers=a_auth)).json()["name"] == "a"
    assert len((await c.get(f"/api/v1/integrations/hubs/{a_id}", headers=a_auth)).json()) == 1
    # Its own hub: a hub token may not delete it (admin only).
    r = await c.delete(f"/api/v1/hubs/{b_id}", headers=b_auth)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "admin_only"


async def test_deleting_a_hub_deprovisions_and_deletes_its_integrations(broker: Any) -> None:
    fake = await FakeTwilio().start()
    h = await RunningHub(make_settings(broker, twilio_api_url=fake.url)).start()
    try:
        c = h.client
        hub_id, auth = await h.create_hub("gone")
        sid, token = fake.add_account()
        number = fake.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
        sms = await h.create_integration(hub_id, auth, channelId="TwilioSMS", name="sms",
                                         configuration={"accountSid": sid, "authToken": token,
                                                        "numberSid": number.sid})
        assert number.sms_url and sms["integrationId"] in number.sms_url
        direct = await h.create_integration(hub_id, auth, channelId="Direct", name="d",
                                            configuration={"integrationType": "Agent"})
        got = (await c.get(f"/api/v1/hubs/{hub_id}", headers=h.admin)).json()
        assert got["integrationCount"] == 2
        assert (await c.delete(f"/api/v1/hubs/{hub_id}", headers=h.admin)).status_code == 204
        assert number.sms_url == ""  # Twilio no longer posts to the hub
        for iid in (sms["integrationId"], direct["integrationId"]):
            r = await c.get(f"/api/v1/integrations/{iid}", headers=h.admin)
            assert r.status_code == 404
        assert (await c.get(f"/api/v1/hubs/{hub_id}", headers=h.admin)).status_code == 404
        assert (await c.get("/api/v1/hubs", headers=auth)).status_code == 401
        assert hub_id not in {x["hubId"] for x in
                              (await c.get("/api/v1/hubs", headers=h.admin)).json()}
        # And so in a fresh process's view, folded from the topic.
        fresh = await RunningHub(h.settings, ["api"]).start()
        try:
            r = await fresh.client.get(f"/api/v1/integrations/{direct['integrationId']}",
                                       headers=fresh.admin)
            assert r.status_code == 404
            assert (await fresh.client.get(f"/api/v1/hubs/{hub_id}",
                                           headers=fresh.admin)).status_code == 404
        finally:
            await fresh.stop()
    finally:
        await h.stop()
        await fake.stop()


# ---- tokens before the broker, and 503s that say nothing -----------------------------------


async def test_tokens_are_checked_before_the_broker_and_503s_say_nothing(
        tmp_path: Path) -> None:
    broker = start_broker("tansu", tmp_path)
    h = await RunningHub(make_settings(broker, produce_timeout_s=1.0), ["api", "ingress"]
                         ).start()
    try:
        hub_id, auth = await h.create_hub()
        made = await h.create_integration(hub_id, auth, channelId="Direct", name="c",
                                          configuration={"integrationType": "Customer"})
        broker.kill()
        c = h.client
        # No, malformed or unknown tokens: 401 at once, the broker is never asked.
        for headers in ({}, _bearer("nope"), _bearer(new_access_token())):
            r = await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=headers)
            assert r.status_code == 401, r.text
        answers = [
            await c.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth),
            await c.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
                "channelId": "Direct", "name": "d", "configuration": {"integrationType": "Bot"}}),
            await c.post("/api/v1/hubs", headers=h.admin, json={"name": "x"}),
            await c.get(f"/api/v1/integrations/{made['integrationId']}/deliveries",
                        headers=auth),
            await c.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=auth),
        ]
        body = message("during")
        answers.append(await c.post(
            f"/ingress/{made['integrationId']}", content=body,
            headers=sign_with_cryptography(made["configuration"]["privateSigningKey"], body)))
        port = broker.bootstrap.rsplit(":", 1)[1]
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"].isdigit()
            [err] = r.json()["errors"]
            assert err["code"] == "broker_unavailable"
            text = r.text
            for leak in (broker.bootstrap, port, "Error", "Exception", "Kafka", "(", "'"):
                assert leak not in text, (leak, text)
    finally:
        await h.stop()
        broker.stop()


def test_serve_refuses_a_short_admin_token() -> None:
    env = {**os.environ, "SWITCHBOARD_SECRET_KEY": generate_secret_key_b64(),
           "SWITCHBOARD_ADMIN_TOKEN": "too-short-admin-token"}
    env.pop("SWITCHBOARD_SECRET_KEYS", None)
    done = subprocess.run(
        [sys.executable, "-m", "switchboard.services.cli", "serve", "api", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "SWITCHBOARD_ADMIN_TOKEN must be at least 32 characters" in done.stderr
    assert "too-short-admin-token" not in done.stderr + done.stdout


# ---- signing key rotation through the API ---------------------------------------------------


async def _post(h: RunningHub, iid: str, key: str, text: str,
                conversation: str | None = None) -> httpx.Response:
    body = message(text, conversation=conversation)
    return await h.client.post(f"/ingress/{iid}", content=body,
                               headers=sign_with_cryptography(key, body))


async def _regenerate(h: RunningHub, auth: dict[str, str], iid: str, itype: str,
                      **extra: Any) -> dict[str, Any]:
    r = await h.client.patch(f"/api/v1/integrations/{iid}", headers=auth, json={
        "configuration": {"integrationType": itype, **extra}})
    assert r.status_code == 200, r.text
    cfg: dict[str, Any] = r.json()["configuration"]
    return cfg


async def test_key_rotation_through_the_api(hub: RunningHub, receiver: Receiver) -> None:
    hub_id, auth = await hub.create_hub()
    cust = await hub.create_integration(hub_id, auth, channelId="Direct", name="site",
                                        configuration={"integrationType": "Customer"})
    agent = await hub.create_integration(
        hub_id, auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
    cid, k1 = cust["integrationId"], cust["configuration"]["privateSigningKey"]
    aid, pub1 = agent["integrationId"], agent["configuration"]["publicSigningKey"]

    # Deliveries: two signatures during the grace window, old and new key.
    hook = receiver.url + "/agent"
    pub2 = (await _regenerate(hub, auth, aid, "Agent", regenerateKeys=True,
                              webhookUrl=hook))["publicSigningKey"]
    assert (await _post(hub, cid, k1, "one")).status_code == 202
    [got] = await receiver.wait_for("/agent", 1)
    assert len(got.headers["webhook-signature"].split()) == 2
    assert verify_with_cryptography(pub1, got) and verify_with_cryptography(pub2, got)
    # revokePrevious ends the grace at once: only the new key signs.
    cfg = await _regenerate(hub, auth, aid, "Agent", revokePrevious=True, webhookUrl=hook)
    assert cfg["publicSigningKey"] == pub2 and "privateSigningKey" not in cfg
    assert (await _post(hub, cid, k1, "two")).status_code == 202
    got = (await receiver.wait_for("/agent", 2))[1]
    assert len(got.headers["webhook-signature"].split()) == 1
    assert verify_with_cryptography(pub2, got) and not verify_with_cryptography(pub1, got)

    # The ingress: old and new key verify during grace...
    k2 = (await _regenerate(hub, auth, cid, "Customer", regenerateKeys=True))["privateSigningKey"]
    assert (await _post(hub, cid, k1, "k1 in grace")).status_code == 202
    assert (await _post(hub, cid, k2, "k2")).status_code == 202
    # ... a third generation inside the window retires the oldest at once ...
    k3 = (await _regenerate(hub, auth, cid, "Customer", regenerateKeys=True))["privateSigningKey"]
    assert (await _post(hub, cid, k1, "k1 retired")).status_code == 401
    assert (await _post(hub, cid, k2, "k2 in grace")).status_code == 202
    assert (await _post(hub, cid, k3, "k3")).status_code == 202
    # ... and regenerate with revokePrevious leaves only the newest.
    k4 = (await _regenerate(hub, auth, cid, "Customer", regenerateKeys=True,
                            revokePrevious=True))["privateSigningKey"]
    for old in (k2, k3):
        assert (await _post(hub, cid, old, "revoked")).status_code == 401
    assert (await _post(hub, cid, k4, "k4")).status_code == 202


# ---- the ingress: unsigned floods, and one answer before authentication ---------------------


async def test_unsigned_floods_spend_no_integrations_budget(broker: Any) -> None:
    h = await RunningHub(make_settings(broker, ingress_rate_per_s=0.01, ingress_burst=2,
                                       ingress_unverified_rate_per_s=0.01,
                                       ingress_unverified_burst=12),
                         ["api", "ingress"]).start()
    try:
        hub_id, auth = await h.create_hub()
        made = await h.create_integration(hub_id, auth, channelId="Direct", name="c",
                                          configuration={"integrationType": "Customer"})
        iid, key = made["integrationId"], made["configuration"]["privateSigningKey"]
        paused = await h.create_integration(hub_id, auth, channelId="Direct", name="p",
                                            statusId=3002,
                                            configuration={"integrationType": "Customer"})
        system = await h.create_integration(
            hub_id, auth, channelId="System", name="s",
            configuration={"webhookUrl": "http://127.0.0.1:9/x", "events": ["*"]})
        chat = await h.create_integration(hub_id, auth, channelId="WebChat", name="w",
                                          configuration={"allowedOrigins": ["example.com"]})
        body = message("hello")
        signed = sign_with_cryptography(key, body)
        # Before authentication, one answer: unknown, paused, another channel, unsigned.
        seen = set()
        for target, headers in (
                (str(uuid.uuid4()), signed),
                (paused["integrationId"], signed),
                (system["integrationId"], signed),
                (chat["integrationId"], signed),
                (iid, {"content-type": "application/json"}),
                (iid, {**signed, "content-type": "application/x-www-form-urlencoded"})):
            r = await h.client.post(f"/ingress/{target}", content=body, headers=headers)
            assert r.status_code == 401
            seen.add(r.content)
        assert len(seen) == 1, seen
        # A flood of unsigned requests is charged to the sender's address (through the
        # trusted proxy in front of the hub: X-Forwarded-For) ...
        flooder = {"content-type": "application/json", "x-forwarded-for": "203.0.113.7"}
        codes = []
        for _ in range(14):
            r = await h.client.post(f"/ingress/{iid}", content=body, headers=flooder)
            codes.append(r.status_code)
        assert codes == [401] * 12 + [429] * 2, codes
        assert int(r.headers["retry-after"]) >= 1
        r = await h.client.post(f"/ingress/{iid}", content=body, headers=signed | {
            "x-forwarded-for": "203.0.113.7"})
        assert r.status_code == 429  # that address is refused before any work
        # ... never to the integration: its signed requests still get its whole burst.
        assert (await _post(h, iid, key, "a")).status_code == 202
        assert (await _post(h, iid, key, "b")).status_code == 202
        r = await _post(h, iid, key, "c")
        assert r.status_code == 429 and "integration" in r.json()["errors"][0]["description"]
        # Only now, authenticated, does a paused integration say that it is paused.
        r = await h.client.post(f"/ingress/{paused['integrationId']}", content=body,
                                headers=sign_with_cryptography(
                                    paused["configuration"]["privateSigningKey"], body))
        assert r.status_code == 409 and r.json()["errors"][0]["code"] == "integration_paused"
    finally:
        await h.stop()


# ---- conversations belong to their hub -------------------------------------------------------


async def test_a_direct_integration_cannot_name_another_hubs_conversation(
        hub: RunningHub, receiver: Receiver) -> None:
    def direct(itype: str, path: str) -> dict[str, Any]:
        return {"channelId": "Direct", "name": path.strip("/"),
                "configuration": {"integrationType": itype, "webhookUrl": receiver.url + path}}

    a_id, a_auth = await hub.create_hub("a")
    b_id, b_auth = await hub.create_hub("b")
    a_cust = await hub.create_integration(a_id, a_auth, **direct("Customer", "/a-cust"))
    a_agent = await hub.create_integration(a_id, a_auth, **direct("Agent", "/a-agent"))
    b_cust = await hub.create_integration(b_id, b_auth, **direct("Customer", "/b-cust"))
    b_agent = await hub.create_integration(b_id, b_auth, **direct("Agent", "/b-agent"))

    def key(rec: dict[str, Any]) -> str:
        k: str = rec["configuration"]["privateSigningKey"]
        return k

    assert (await _post(hub, b_cust["integrationId"], key(b_cust), "hi B")).status_code == 202
    [first] = await receiver.wait_for("/b-agent", 1)
    theirs = first.json["conversationId"]
    # Hub A's agent answers into B's conversation: the same 404 as a made-up id (no
    # oracle), routed nowhere. A's customer naming it gets a conversation of its own (a
    # customer's ids are scoped to it), which A's agent sees.
    r = await _post(hub, a_agent["integrationId"], key(a_agent), "hijack", conversation=theirs)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "conversation_not_found"
    r = await _post(hub, a_cust["integrationId"], key(a_cust), "squat", conversation=theirs)
    assert r.status_code == 202
    [squat] = await receiver.wait_for("/a-agent", 1)
    assert squat.json["conversationId"] == f"{a_cust['integrationId']}:{theirs}"
    # Sentinel: B's own agent answers in the same conversation (same partition, routed
    # after them); B's customer gets exactly that.
    r = await _post(hub, b_agent["integrationId"], key(b_agent), "sentinel", conversation=theirs)
    assert r.status_code == 202
    [got] = await receiver.wait_for("/b-cust", 1)
    assert got.json["activity"]["message"]["text"] == "sentinel"
    # Every delivery of that conversation stays inside hub B.
    records = await _read_topic(hub.settings, DELIVERIES)
    deliveries = [delivery_decoder.decode(v) for _, v in records if v]
    mine = [d for d in deliveries if d.conversation_id == theirs]
    assert {d.destination_id for d in mine} == {b_agent["integrationId"],
                                                b_cust["integrationId"]}
    assert {d.activity.integration_id for d in mine} == {b_cust["integrationId"],
                                                         b_agent["integrationId"]}
    assert len(receiver.at("/a-agent")) == 1 and len(receiver.at("/b-agent")) == 1


# ---- reseal under a new key -------------------------------------------------------------------


async def test_reseal_with_two_keys(broker: Any, receiver: Receiver, tmp_path: Path) -> None:
    old_key, new_key = generate_secret_key_b64(), generate_secret_key_b64()
    settings = make_settings(broker, secret_key=old_key, sync_test_connectors=True)
    portal, mailbox = sync_sides(tmp_path)
    portal.create("contact", first_name="Ada", email="ada@example.test")
    h = await RunningHub(settings, ["api"]).start()
    try:
        hub_id, auth = await h.create_hub()
        agent = await h.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "hmacSigning": True,
                           "webhookUrl": receiver.url + "/agent"})
        await _regenerate(h, auth, agent["integrationId"], "Agent", regenerateKeys=True,
                          hmacSigning=True, webhookUrl=receiver.url + "/agent")
        cust = await h.create_integration(hub_id, auth, channelId="Direct", name="site",
                                          configuration={"integrationType": "Customer"})
        # Two sync profiles with sealed credentials (one each side).
        profiles = []
        for _ in range(2):
            r = await h.client.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth,
                                    json=sync_body(portal, mailbox, review=False,
                                                   modules=("contacts",)))
            assert r.status_code == 201, r.text
            profiles.append(r.json()["profileId"])
    finally:
        await h.stop()
    # A profile whose credential was copied from another: it opens under no key here.
    first = _latest_profile(await _read_topic(settings, SYNC_PROFILES), profiles[0])
    moved = msgspec.structs.replace(first, profile_id="moved-" + uuid.uuid4().hex[:8])
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(SYNC_PROFILES),
                                     msgspec.json.encode(moved), key=moved.profile_id.encode())
    finally:
        await producer.stop()

    rotated = msgspec.structs.replace(settings, secret_key="", secret_keys=f"{new_key},{old_key}")
    lines: list[str] = []
    shown: list[str] = []
    bar = Progress("reseal", shown.append, tty=False)
    report = await reseal(rotated, dry_run=True, say=lines.append, progress=bar)
    assert (report.rewritten, report.unchanged) == (2, 0)
    assert report.profiles is not None and report.profiles.rewritten == 2
    assert report.profiles.unreadable == [moved.profile_id]
    assert "sync profiles: would reseal 2 profile(s), 0 already current, 1 unreadable" \
        in "\n".join(lines)
    # Progress: a line per step (the registry's 3 records, each table read), no line per
    # record.
    assert "reseal: registry 3/3 (100 %) done\n" in shown
    assert any(line.startswith("reseal: sync.profiles read ") for line in shown)
    report = await reseal(rotated, say=lines.append)
    assert report.rewritten == 2 and not report.conflicts
    assert report.unreadable == [f"sync profile {moved.profile_id}"]
    assert report.profiles is not None and report.profiles.rewritten == 2
    assert f"sync profile {moved.profile_id}: cannot open its credentials" in "\n".join(lines)
    # The unreadable profile is deleted; then nothing is left to reseal.
    producer = make_producer(rotated)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(SYNC_PROFILES), None,
                                     key=moved.profile_id.encode())
    finally:
        await producer.stop()
    again = await reseal(rotated, say=lines.append)
    assert (again.rewritten, again.unchanged) == (0, 2)  # nothing left to reseal
    assert again.profiles is not None and again.profiles.rewritten == 0
    assert not again.unreadable and not again.conflicts
    # The command line says the same.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "SWITCHBOARD_BROKER_KIND": settings.broker_kind,
            "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
            "SWITCHBOARD_SECRET_KEYS": f"{new_key},{old_key}"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "switchboard.services.cli", "reseal"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "resealed 0 integration(s), 2 already current, 0 unreadable" in done.stdout
    assert "sync profiles: resealed 0 profile(s), 2 already current, 0 unreadable" \
        in done.stdout
    # Not a terminal: the progress is plain lines on stderr.
    assert "reseal: registry 3/3 (100 %) done" in done.stderr.splitlines()
    assert "\r" not in done.stderr
    assert new_key not in done.stdout + done.stderr and old_key not in done.stdout + done.stderr
    # Every sealed value on the registry now opens with the new key alone.
    only_new = Sealer.from_b64(new_key)
    latest: dict[bytes, IntegrationRecord] = {}
    records = await _read_topic(settings, REGISTRY)
    for k, v in records:
        rec = record_decoder.decode(v) if v else None
        if k is not None and isinstance(rec, IntegrationRecord):
            latest[k] = rec
    values = [(ctx, val) for rec in latest.values() for ctx, val in sealed_values(rec)]
    # The agent's two key generations (private key and HMAC secret each), the customer's
    # private key.
    assert len(values) == 5
    for ctx, val in values:
        assert only_new.is_current(val)
        only_new.open(val, ctx)
    # So does every profile credential (a token each side, per profile).
    records = await _read_topic(settings, SYNC_PROFILES)
    for pid in profiles:
        rec = _latest_profile(records, pid)
        creds = {side: open_credentials(only_new, rec, side) for side in ("portal", "mailbox")}
        assert creds == {"portal": {"token": portal.meta("token")},
                         "mailbox": {"token": mailbox.meta("token")}}
        assert all(only_new.is_current(v) for v in rec.portal.credentials.values())

    # A hub with only the new key still signs with the integration's keys, and runs the
    # profile with its resealed credentials.
    h = await RunningHub(msgspec.structs.replace(settings, secret_key=new_key)).start()
    try:
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{profiles[0]}"
        done_run = await sync_run_and_wait(h.client, url, auth, initial=True)
        assert done_run["status"].get("errMessage") is None, done_run["status"]
        assert done_run["status"]["modules"]["contacts"]["created"] == 1
        assert [c.email for c in mailbox.live("contact")] == ["ada@example.test"]
        pub = (await h.client.get(f"/api/v1/integrations/{agent['integrationId']}",
                                  headers=auth)).json()["configuration"]["publicSigningKey"]
        assert (await _post(h, cust["integrationId"], cust["configuration"]["privateSigningKey"],
                            "after reseal")).status_code == 202
        [got] = await receiver.wait_for("/agent", 1)
        assert verify_with_cryptography(pub, got)
        assert any(s.startswith("v1,") for s in got.headers["webhook-signature"].split())
    finally:
        await h.stop()


@pytest.mark.parametrize("keys", ["", "not-base64", f"{generate_secret_key_b64()},short"])
def test_serve_refuses_bad_sealing_keys(keys: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SWITCHBOARD_SECRET_KEY", "SWITCHBOARD_SECRET_KEYS")}
    env["SWITCHBOARD_SECRET_KEYS"] = keys
    done = subprocess.run(
        [sys.executable, "-m", "switchboard.services.cli", "serve", "router"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "SWITCHBOARD_SECRET_KEY" in done.stderr



# ---- WebChat visitor sessions expire ---------------------------------------------------------


async def test_webchat_sessions_expire(broker: Any) -> None:
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    h = await RunningHub(make_settings(broker, webchat_session_ttl_s=2),
                         ["api", "ingress"]).start()
    try:
        hub_id, auth = await h.create_hub()
        chat = await h.create_integration(hub_id, auth, channelId="WebChat", name="w",
                                          configuration={"allowedOrigins": ["localhost"]})
        url = f"ws://127.0.0.1:{h.port}/webchat/{chat['integrationId']}/ws"

        async def hello(session: str | None) -> dict[str, Any] | int:
            async with connect(url, origin="http://localhost") as ws:
                await ws.send(json.dumps({"type": "hello", "session": session}))
                try:
                    async with asyncio.timeout(10):
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame["type"] == "session":
                                return dict(frame)
                except ConnectionClosed as exc:
                    return exc.rcvd.code if exc.rcvd else -1

        first = await hello(None)
        assert isinstance(first, dict)
        again = await hello(first["session"])
        # Resumed within the TTL, with a fresh token (the TTL counts from the last visit).
        assert isinstance(again, dict) and again["resumed"] is True
        assert again["visitorId"] == first["visitorId"]
        assert again["session"] != first["session"]
        await asyncio.sleep(2.5)
        assert await hello(again["session"]) == 4401
    finally:
        await h.stop()


async def test_rotating_or_deleting_ends_open_streams(hub: RunningHub) -> None:
    import orjson
    import websockets
    from websockets.exceptions import ConnectionClosed

    hub_id, auth = await hub.create_hub()
    made = await hub.create_integration(hub_id, auth, channelId="Direct", name="app",
                                        configuration={"integrationType": "Customer"})
    url = f"ws://127.0.0.1:{hub.port}/v1/integrations/{made['integrationId']}/stream"

    async def closed_with(ws: Any) -> int | None:
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
        return info.value.rcvd.code if info.value.rcvd else None

    async with websockets.connect(url, additional_headers=auth) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        r = await hub.client.post(f"/api/v1/hubs/{hub_id}/rotateToken", headers=auth)
        assert r.status_code == 200
        assert await closed_with(ws) == 4401
    new = _bearer(r.json()["accessToken"])
    async with websockets.connect(url, additional_headers=auth) as ws:
        assert await closed_with(ws) == 4401  # the old token opens nothing either
    async with websockets.connect(url, additional_headers=new) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        assert (await hub.client.delete(f"/api/v1/hubs/{hub_id}",
                                        headers=hub.admin)).status_code == 204
        assert await closed_with(ws) in (4401, 4404)


async def test_a_sealed_value_moved_to_another_integration_does_not_open(broker: Any) -> None:
    """Someone who can write to the registry copies integration A's sealed Twilio auth
    token into B's record: B does not accept A's signatures (the value does not open
    there), while A still does."""
    from switchboard.channels import TwilioSmsConfig
    from tests.fakes.twilio import FakeTwilio as Fake

    fake = await Fake().start()
    h = await RunningHub(make_settings(broker, twilio_api_url=fake.url)).start()
    try:
        hub_id, auth = await h.create_hub()
        made = []
        for name in ("a", "b"):
            sid, token = fake.add_account()
            number = fake.add_number(sid, "+1416" + str(uuid.uuid4().int)[:7])
            rec = await h.create_integration(
                hub_id, auth, channelId="TwilioSMS", name=name,
                configuration={"accountSid": sid, "authToken": token, "numberSid": number.sid})
            made.append((rec["integrationId"], number))
        (a_id, a_number), (b_id, b_number) = made
        registry = h.app.state.runtime.registry
        view = await registry.sync()
        a, b = view.integrations[a_id], view.integrations[b_id]
        assert isinstance(a.configuration, TwilioSmsConfig)
        assert isinstance(b.configuration, TwilioSmsConfig)
        # B now claims A's account and A's (sealed) token.
        forged = msgspec.structs.replace(
            b, version=b.version + 1, configuration=msgspec.structs.replace(
                b.configuration, account_sid=a.configuration.account_sid,
                auth_token=a.configuration.auth_token))
        assert (await registry.put(forged)).accepted
        public = h.settings.public_url

        def rewrite(u: str) -> str:
            return h.base_url + u[len(public):]

        # Signed with A's token, for B's URL, from A's account: B cannot open the value.
        b_number.account_sid = a.configuration.account_sid
        r = await fake.incoming_sms(b_number, "+15550001", "moved", rewrite=rewrite)
        assert r.status_code == 401, r.text
        r = await fake.incoming_sms(a_number, "+15550001", "genuine", rewrite=rewrite)
        assert r.status_code == 200, r.text
    finally:
        await h.stop()
        await fake.stop()


async def test_unsigned_floods_to_slack_and_meta_spend_the_address_budget(
        broker: Any, receiver: Receiver) -> None:
    """/ingress/slack and /ingress/meta (one URL for every workspace, every Page) charge a
    request refused before its signature holds to the client address, like
    /ingress/{integrationId}: that address then gets 429 before any work, while correctly
    signed events from elsewhere still get through."""
    slack_secret, meta_secret = "slack-" + uuid.uuid4().hex, "meta-" + uuid.uuid4().hex
    fake_slack = await FakeSlack().start()
    graph = await FakeGraph("v19.0").start()
    graph.add_app("1001", meta_secret)
    h = await RunningHub(make_settings(
        broker, ingress_unverified_rate_per_s=0.01, ingress_unverified_burst=4,
        slack_api_url=fake_slack.url, slack_signing_secret=slack_secret,
        slack_client_id=fake_slack.client_id, slack_client_secret=fake_slack.client_secret,
        meta_graph_url=graph.url, meta_graph_version="v19.0", meta_app_secret=meta_secret,
        meta_verify_token="vt-" + uuid.uuid4().hex)
    ).start()
    try:
        hub_id, auth = await h.create_hub()
        cust = await h.create_integration(
            hub_id, auth, channelId="Direct", name="site",
            configuration={"integrationType": "Customer",
                           "webhookUrl": receiver.url + "/customer"})
        await h.create_integration(
            hub_id, auth, channelId="Direct", name="desk",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/agent"})
        code, install = fake_slack.grant("T0FLOOD")
        await h.create_integration(hub_id, auth, channelId="Slack", name="slack",
                                   configuration={"code": code, "defaultPublicChannel": "general",
                                                  "state": slack_state(fake_slack.client_secret)})
        page = graph.add_page("123456789012345", "1001")
        await h.create_integration(hub_id, auth, channelId="Messenger", name="fb",
                                   configuration={"pageAccessToken": page.token})
        # A customer message opens a Slack thread (for the Slack sentinel below).
        opener = message("hello", sender="+15550001")
        r = await h.client.post(f"/ingress/{cust['integrationId']}", content=opener,
                                headers=sign_with_cryptography(
                                    cust["configuration"]["privateSigningKey"], opener))
        assert r.status_code == 202, r.text
        (parent,) = await fake_slack.wait_for_posts(1)

        reply = slack_message_event(install.team_id, parent.channel, text="slack sentinel",
                                    thread_ts=parent.ts, event_id="EvFLOOD1")
        meta_event = meta_webhook(meta_entry(page.page_id, text_event(
            "5550001000000001", page.page_id, "meta sentinel")))
        slack_body, slack_signed = slack_signed_request(slack_secret, reply)
        floods = {
            "/ingress/slack": (slack_body, slack_signed, [
                {"content-type": "application/json"},  # unsigned
                {**slack_signed, "X-Slack-Signature": "v0=" + "0" * 64},
                {**slack_signed, "X-Slack-Request-Timestamp": "1"}]),
            "/ingress/meta": (meta_event, meta_signature(meta_secret, meta_event), [
                {"content-type": "application/json"},  # unsigned
                meta_signature("not-the-app-secret", meta_event),
                {"x-hub-signature-256": "sha256=zz"}]),
        }
        for n, (path, (body, good, bad)) in enumerate(floods.items()):
            address = f"203.0.113.{20 + n}"
            codes = []
            for i in range(6):
                r = await h.client.post(path, content=body,
                                        headers=bad[i % len(bad)] | {"x-forwarded-for": address})
                codes.append(r.status_code)
            assert codes == [401] * 4 + [429] * 2, (path, codes)
            assert int(r.headers["retry-after"]) >= 1
            # That address is refused before any work, correctly signed or not ...
            r = await h.client.post(path, content=body, headers=good | {
                "x-forwarded-for": address})
            assert r.status_code == 429, (path, r.status_code)
        # ... while correctly signed events from elsewhere still get through and arrive.
        r = await h.client.post("/ingress/slack", content=slack_body, headers=slack_signed)
        assert r.status_code == 200, r.text
        r = await h.client.post("/ingress/meta", content=meta_event,
                                headers=meta_signature(meta_secret, meta_event))
        assert r.status_code == 200 and r.text == "EVENT_RECEIVED", r.text
        back = (await receiver.wait_for("/customer", 1))[0].json
        assert back["activity"]["message"]["text"] == "slack sentinel"
        got = await receiver.wait_for("/agent", 2)  # the opener, then the sentinel
        assert [g.json["activity"]["message"]["text"] for g in got] == ["hello",
                                                                         "meta sentinel"]
    finally:
        await h.stop()
        await graph.stop()
        await fake_slack.stop()
