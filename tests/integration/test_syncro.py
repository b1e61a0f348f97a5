"""Syncro through the real hub: create (the token checked with Syncro), the secret inbound
URL, every Notification Center trigger routed to System integrations by their filters,
duplicates delivered once, regenerateKeys; and the client's rate and idempotency rules
against the loopback fake (429 with Retry-After, a POST that times out after creating)."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.services.channels.syncro import SyncroPlugin
from switchboard.services.runtime import Runtime
from tests.conftest import RunningHub, make_settings
from tests.fakes.syncro import Account, FakeSyncro
from tests.support import Receiver
from tests.topics import read_topics

PUBLIC = "https://psa-hooks.example.test/sb"
TICKET_EVENTS = ("syncro:ticket.created", "syncro:ticket.updated", "syncro:ticket.resolved")


@dataclass
class Env:
    hub: RunningHub
    syncro: FakeSyncro
    receiver: Receiver

    def local(self, url: str) -> str:
        """The hub's address for a URL the hub gave out under its public URL."""
        assert url.startswith(PUBLIC), url
        return self.hub.base_url + url[len(PUBLIC):]

    def plugin(self) -> SyncroPlugin:
        return next(w for w in self.hub.app.state.workers if isinstance(w, SyncroPlugin))

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.hub.app.state.runtime
        return runtime


@pytest.fixture(scope="module")
async def env(broker: Any) -> AsyncIterator[Env]:
    fake = await FakeSyncro().start()
    receiver = await Receiver().start()
    settings = make_settings(broker, syncro_api_url=fake.api_url(), public_url=PUBLIC,
                             provider_timeout_s=1.0)
    hub = await RunningHub(settings).start()
    try:
        yield Env(hub, fake, receiver)
    finally:
        await hub.stop()
        await receiver.stop()
        await fake.stop()


@dataclass
class Tenant:
    hub_id: str
    auth: dict[str, str]
    account: Account
    integration: dict[str, Any]
    tag: str


async def tenant(env: Env, **config: Any) -> Tenant:
    tag = uuid.uuid4().hex[:8]
    hub_id, auth = await env.hub.create_hub("msp-" + tag)
    account = env.syncro.add_account("msp" + tag, "tok-" + uuid.uuid4().hex)
    integration = await env.hub.create_integration(
        hub_id, auth, channelId="Syncro", name="psa",
        configuration={"subdomain": account.subdomain, "apiToken": account.token, **config})
    return Tenant(hub_id, auth, account, integration, tag)


async def observer(env: Env, t: Tenant, name: str, events: list[str]) -> str:
    """A System integration of `t`'s hub; returns the receiver path it is delivered to."""
    path = f"/{t.tag}/{name}"
    await env.hub.create_integration(
        t.hub_id, t.auth, channelId="System", name=name,
        configuration={"webhookUrl": env.receiver.url + path, "events": events})
    return path


def types(received: list[Any]) -> list[str]:
    return [a["type"] for r in received for a in r.json["activities"]]


# ---- create, read, rotate ---------------------------------------------------------------


async def test_create_checks_the_token_and_shows_the_inbound_url_once(env: Env) -> None:
    t = await tenant(env, defaultTicketStatus="New", problemType="Remote Support")
    out = t.integration
    iid = out["integrationId"]
    assert out["channelId"] == "Syncro" and out["integrationTypeId"] == "Agent"
    cfg = out["configuration"]
    assert cfg["apiToken"] == "********" and cfg["userName"] == "Tech Tina"
    assert cfg["inboundUrl"] == f"{PUBLIC}/ingress/{iid}/{cfg['inboundSecret']}"
    # Defaults are not shown (commentHidden false, every event), as for other channels.
    assert cfg.get("commentHidden", False) is False
    assert cfg.get("events", ["syncro:*"]) == ["syncro:*"]
    got = (await env.hub.client.get(f"/api/v1/integrations/{iid}", headers=t.auth)).json()
    assert got["configuration"]["apiToken"] == "********"
    assert got["configuration"]["inboundSecret"] == "********"
    assert "inboundUrl" not in got["configuration"]
    assert got["configuration"]["problemType"] == "Remote Support"
    # The numeric code works too.
    other = env.syncro.add_account("code" + t.tag, "tok2")
    r = await env.hub.client.post(f"/api/v1/integrations/hubs/{t.hub_id}", headers=t.auth, json={
        "channelId": 2001, "name": "psa2",
        "configuration": {"subdomain": other.subdomain, "apiToken": "tok2"}})
    assert r.status_code == 201 and r.json()["channelId"] == "Syncro"


async def test_a_refused_token_is_a_400_with_syncros_words_and_nothing_stored(env: Env
                                                                             ) -> None:
    tag = uuid.uuid4().hex[:8]
    hub_id, auth = await env.hub.create_hub("bad-" + tag)
    account = env.syncro.add_account("bad" + tag, "right")
    r = await env.hub.client.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth, json={
        "channelId": "Syncro", "name": "psa",
        "configuration": {"subdomain": account.subdomain, "apiToken": "wrong"}})
    assert r.status_code == 400, r.text
    [err] = r.json()["errors"]
    assert err["code"] == "provider_error" and err["field"] == "configuration.apiToken"
    assert "Not authorized" in err["description"]
    assert "wrong" not in r.text
    listed = await env.hub.client.get(f"/api/v1/integrations/hubs/{hub_id}", headers=auth)
    assert listed.json() == []


async def test_syncro_down_or_unreachable_is_a_503(env: Env, broker: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    hub_id, auth = await env.hub.create_hub("down-" + tag)
    account = env.syncro.add_account("down" + tag, "tok")
    body = {"channelId": "Syncro", "name": "psa",
            "configuration": {"subdomain": account.subdomain, "apiToken": "tok"}}
    env.syncro.fail_with = 502
    try:
        r = await env.hub.client.post(f"/api/v1/integrations/hubs/{hub_id}", headers=auth,
                                      json=body)
    finally:
        env.syncro.fail_with = None
    assert r.status_code == 503 and r.headers["retry-after"]
    # Nothing listens at all: a port held bound without listening refuses every connection
    # (a merely free port may be taken by another test's server in the meantime).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    settings = make_settings(broker, syncro_api_url=f"http://127.0.0.1:{closed.getsockname()[1]}/"
                             "{subdomain}/api/v1")
    api = await RunningHub(settings, services=["api"]).start()
    try:
        h, a = await api.create_hub("x")
        r = await api.client.post(f"/api/v1/integrations/hubs/{h}", headers=a, json=body)
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "provider_unavailable"
        assert (await api.client.get(f"/api/v1/integrations/hubs/{h}", headers=a)).json() == []
    finally:
        await api.stop()
        closed.close()


async def test_the_token_is_rotated_by_update_after_syncro_accepts_it(env: Env) -> None:
    t = await tenant(env)
    iid = t.integration["integrationId"]
    t.account.token = "rotated-" + t.tag
    r = await env.hub.client.patch(f"/api/v1/integrations/{iid}", headers=t.auth,
                                   json={"configuration": {"apiToken": "not-it"}})
    assert r.status_code == 400 and "Not authorized" in r.text
    r = await env.hub.client.patch(f"/api/v1/integrations/{iid}", headers=t.auth,
                                   json={"configuration": {"apiToken": t.account.token}})
    assert r.status_code == 200, r.text
    assert r.json()["configuration"]["apiToken"] == "********"
    plugin = env.plugin()
    rec = env.runtime.registry.view.integrations[iid]
    from switchboard.sealing import open_config_secret

    assert open_config_secret(env.runtime.sealer, rec, "api_token") == t.account.token
    assert plugin.channel.value == "Syncro"


# ---- webhooks in ---------------------------------------------------------------------------

TRIGGERS = ("customer.created", "ticket.created", "ticket.updated", "ticket.comment",
            "ticket.resolved", "invoice.created", "payment.created", "rmm_alert.created")


def record(trigger: str, n: int) -> dict[str, Any]:
    base: dict[str, Any] = {"id": 500 + n, "updated_at": f"2026-12-02T10:00:0{n}.000-00:00"}
    if trigger.startswith("ticket."):
        base |= {"id": 77, "subject": "Printer", "customer_id": 4, "comments": [
            {"id": 1, "body": "It jams", "hidden": False}],
            "status": "Resolved" if trigger == "ticket.resolved" else "New"}
    if trigger == "rmm_alert.created":
        base["properties"] = {"disk": {"C:": {"free_gb": 1}}}
    return base


async def test_every_trigger_reaches_system_integrations_by_their_filter(env: Env) -> None:
    t = await tenant(env)
    everything = await observer(env, t, "all", ["syncro:*"])
    tickets = await observer(env, t, "tickets", ["syncro:ticket.*"])
    invoices = await observer(env, t, "invoices", ["syncro:invoice.created"])
    url = env.local(t.integration["configuration"]["inboundUrl"])
    for n, trigger in enumerate(TRIGGERS):
        r = await env.syncro.send_webhook(url, t.account.subdomain, trigger, record(trigger, n))
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] is True
    expected = ["syncro:customer.created", "syncro:ticket.created", "syncro:ticket.updated",
                "syncro:ticket.updated", "syncro:ticket.resolved", "syncro:invoice.created",
                "syncro:payment.created", "syncro:rmm_alert.created"]
    got = await env.receiver.wait_until(everything, lambda g: len(types(g)) >= 8)
    assert sorted(types(got)) == sorted(expected)
    got_tickets = await env.receiver.wait_until(tickets, lambda g: len(types(g)) >= 4)
    # One ticket is one lane: its events arrive in the order Syncro sent them.
    assert types(got_tickets) == [e for e in expected if e in TICKET_EVENTS]
    got_invoices = await env.receiver.wait_for(invoices, 1)
    [invoice] = [a for r in got_invoices for a in r.json["activities"]]
    assert invoice["event"]["data"]["record"] == record("invoice.created", 5)
    alert = next(a for r in got for a in r.json["activities"]
                 if a["type"] == "syncro:rmm_alert.created")
    assert alert["event"]["data"]["record"]["properties"] == {"disk": {"C:": {"free_gb": 1}}}
    assert alert["channelId"] == "Syncro"


async def test_the_integration_accepts_only_its_events(env: Env) -> None:
    t = await tenant(env, events=["syncro:ticket.*"])
    path = await observer(env, t, "all", ["syncro:*"])
    url = env.local(t.integration["configuration"]["inboundUrl"])
    r = await env.syncro.send_webhook(url, t.account.subdomain, "invoice.created",
                                      record("invoice.created", 1))
    assert r.status_code == 200 and r.json()["accepted"] is False
    r = await env.syncro.send_webhook(url, t.account.subdomain, "ticket.created",
                                      record("ticket.created", 2))
    assert r.json()["accepted"] is True
    got = await env.receiver.wait_for(path, 1)
    assert types(got) == ["syncro:ticket.created"]


async def test_the_secret_url_refuses_a_wrong_or_missing_secret_alike(env: Env) -> None:
    t = await tenant(env)
    iid = t.integration["integrationId"]
    secret = t.integration["configuration"]["inboundSecret"]
    path = await observer(env, t, "all", ["syncro:*"])
    body = FakeSyncro.webhook_body(t.account.subdomain, "ticket.created",
                                   record("ticket.created", 1))
    answers = []
    for url in (f"/ingress/{iid}/{secret[:-1]}x", f"/ingress/{iid}", f"/ingress/{iid}/",
                f"/ingress/{iid}/{secret.upper()}", f"/ingress/{uuid.uuid4()}/{secret}"):
        r = await env.hub.client.post(url, json=body)
        answers.append((url, r.status_code, r.text))
    refused = [a for a in answers if a[1] == 401]
    # The trailing slash finds no route (404 from the router, not ours to shape).
    assert len(refused) == 4, answers
    assert len({a[2] for a in refused}) == 1  # the same body, whatever was wrong
    # Nothing reached the observer; a right one does, after them.
    r = await env.hub.client.post(f"/ingress/{iid}/{secret}", json=body)
    assert r.status_code == 200
    got = await env.receiver.wait_for(path, 1)
    await asyncio.sleep(0.3)
    assert types(env.receiver.at(path)) == ["syncro:ticket.created"] and len(got) == 1
    # JSON only (once the secret is right).
    r = await env.hub.client.post(f"/ingress/{iid}/{secret}", content=b"text=1",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await env.hub.client.post(f"/ingress/{iid}/{secret}", content=b"[" * 200,
                                  headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_json"


async def test_other_channels_have_no_secret_url(env: Env) -> None:
    t = await tenant(env)
    system = await env.hub.create_integration(
        t.hub_id, t.auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent", "webhookUrl": env.receiver.url + "/d"})
    r = await env.hub.client.post(f"/ingress/{system['integrationId']}/anything",
                                  json={"type": "message"})
    assert r.status_code == 401


async def test_a_duplicate_webhook_is_delivered_once(env: Env) -> None:
    t = await tenant(env)
    path = await observer(env, t, "all", ["syncro:*"])
    url = env.local(t.integration["configuration"]["inboundUrl"])
    first = await env.syncro.send_webhook(url, t.account.subdomain, "ticket.updated",
                                          record("ticket.updated", 1))
    again = await env.syncro.send_webhook(url, t.account.subdomain, "ticket.updated",
                                          record("ticket.updated", 1))
    assert first.json()["activityId"] == again.json()["activityId"]
    # A later change of the same ticket (same lane) is the sentinel.
    await env.syncro.send_webhook(url, t.account.subdomain, "ticket.resolved",
                                  record("ticket.resolved", 2))
    got = await env.receiver.wait_until(path, lambda g: "syncro:ticket.resolved" in types(g))
    assert types(got) == ["syncro:ticket.updated", "syncro:ticket.resolved"]


async def test_regenerate_keys_rotates_the_inbound_secret(env: Env) -> None:
    t = await tenant(env)
    iid = t.integration["integrationId"]
    old = env.local(t.integration["configuration"]["inboundUrl"])
    r = await env.hub.client.patch(f"/api/v1/integrations/{iid}", headers=t.auth,
                                   json={"configuration": {"regenerateKeys": True}})
    assert r.status_code == 200, r.text
    cfg = r.json()["configuration"]
    new = env.local(cfg["inboundUrl"])
    assert new != old and cfg["inboundSecret"] in new
    body = record("customer.created", 1)
    assert (await env.syncro.send_webhook(old, t.account.subdomain, "customer.created",
                                          body)).status_code == 401
    assert (await env.syncro.send_webhook(new, t.account.subdomain, "customer.created",
                                          body)).status_code == 200
    got = (await env.hub.client.get(f"/api/v1/integrations/{iid}", headers=t.auth)).json()
    assert got["configuration"]["inboundSecret"] == "********"


async def test_no_token_or_inbound_secret_reaches_a_topic_or_a_log_line(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("", "switchboard", "uvicorn", "uvicorn.access", "uvicorn.error", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    t = await tenant(env)
    iid = t.integration["integrationId"]
    secrets = [t.account.token, t.integration["configuration"]["inboundSecret"]]
    t.account.token = "rotated-" + uuid.uuid4().hex
    secrets.append(t.account.token)
    await env.hub.client.patch(f"/api/v1/integrations/{iid}", headers=t.auth,
                               json={"configuration": {"apiToken": t.account.token}})
    r = await env.hub.client.patch(f"/api/v1/integrations/{iid}", headers=t.auth,
                                   json={"configuration": {"regenerateKeys": True}})
    secrets.append(r.json()["configuration"]["inboundSecret"])
    for url in (t.integration["configuration"]["inboundUrl"],
                r.json()["configuration"]["inboundUrl"]):
        await env.syncro.send_webhook(env.local(url), t.account.subdomain, "ticket.created",
                                      record("ticket.created", 1))
    records = await read_topics(env.hub.settings)
    everything = b"".join((k or b"") + b"\x00" + (v or b"") for _, k, v in records)
    assert iid.encode() in everything  # the integration is there, sealed
    for secret in secrets:
        assert secret.encode() not in everything
        assert secret not in caplog.text
    if f"/ingress/{iid}/" in caplog.text:  # uvicorn's access log: the path, not its secret
        assert f"/ingress/{iid}/[redacted]" in caplog.text
