"""Sync runs triggered and reported on a real broker: `sync:*` events delivered (signed,
in order) to a System integration; a profile's change-notification webhook (Standard
Webhooks, its own secret) coalescing a burst into few runs; a Syncro `customer.created`
webhook running the profiles on that Syncro account. Both sides are `testfile`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.webhooks import Signer
from tests.conftest import RunningHub, make_settings
from tests.fakes.syncro import FakeSyncro
from tests.integration.test_sync_runs import body, emails, run_and_wait, sides, wait_job
from tests.support import Receiver, verify_with_cryptography

PUBLIC = "https://hub.example.test/sb"


@pytest.fixture
async def stack(broker: Any) -> AsyncIterator[tuple[RunningHub, Receiver, FakeSyncro]]:
    fake = await FakeSyncro().start()
    receiver = await Receiver().start()
    hub = await RunningHub(make_settings(broker, sync_test_connectors=True, public_url=PUBLIC,
                                         syncro_api_url=fake.api_url(),
                                         provider_timeout_s=2.0)).start()
    try:
        yield hub, receiver, fake
    finally:
        await hub.stop()
        await receiver.stop()
        await fake.stop()


def local(hub: RunningHub, url: str) -> str:
    assert url.startswith(PUBLIC), url
    return hub.base_url + url[len(PUBLIC):]


def activities(got: list[Any]) -> list[dict[str, Any]]:
    return [a for r in got for a in r.json["activities"]]


async def test_a_runs_transitions_reach_system_integrations_in_order_and_signed(
        stack: tuple[RunningHub, Receiver, FakeSyncro], tmp_path: Path) -> None:
    hub, receiver, _ = stack
    c = hub.client
    hub_id, auth = await hub.create_hub("events")
    path = f"/{uuid.uuid4().hex}/sync"
    system = await hub.create_integration(
        hub_id, auth, channelId="System", name="ops",
        configuration={"webhookUrl": receiver.url + path, "events": ["sync:*"]})
    portal, mailbox = sides(tmp_path)
    portal.create("contact", first_name="Ada", email="ada@example.test")
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                     json=body(portal, mailbox, review=False, modules=("contacts",)),
                     headers=auth)
    assert r.status_code == 201, r.text
    pid = r.json()["profileId"]
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    done = await run_and_wait(c, url, auth)
    job = done["status"]["lastJobId"]
    got = await receiver.wait_until(path, lambda g: len(activities(g)) >= 4)
    events = activities(got)
    assert [e["type"] for e in events] == ["sync:requested", "sync:queued", "sync:started",
                                           "sync:finished"]
    assert {e["event"]["data"]["jobId"] for e in events} == {job}
    assert [e["event"]["data"]["syncState"] for e in events] == [
        "REQUESTED", "QUEUED", "EXECUTING", "IDLE"]
    finished = events[-1]["event"]["data"]
    assert finished["modules"]["contacts"]["created"] == 1
    assert finished["lastSuccessfulSync"] == done["status"]["lastSuccessfulSync"]
    assert finished["profileId"] == pid and finished["origin"] == "api"
    for r in got:
        assert verify_with_cryptography(system["configuration"]["publicSigningKey"], r)

    # A refused credential: the run ends in sync:failed naming the side.
    r = await c.patch(url, json={"mailbox": {"kind": "testfile",
                                             "configuration": {"path": mailbox.path},
                                             "credentials": {"token": "wrong"}}},
                      headers=auth)
    assert r.status_code == 200, r.text
    await run_and_wait(c, url, auth)
    got = await receiver.wait_until(path, lambda g: len(activities(g)) >= 8)
    events = activities(got)[4:]
    assert [e["type"] for e in events] == ["sync:requested", "sync:queued", "sync:started",
                                           "sync:failed"]
    assert events[-1]["event"]["data"]["errSvcId"] == "mailbox"


def signed(secret: str, payload: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {"content-type": "application/json",
            **Signer(hmac=[secret]).headers(f"msg_{uuid.uuid4().hex}", ts, payload)}


async def test_change_notifications_run_incrementally_and_a_burst_coalesces(
        stack: tuple[RunningHub, Receiver, FakeSyncro], tmp_path: Path) -> None:
    hub, _, _ = stack
    c = hub.client
    hub_id, auth = await hub.create_hub("hooks")
    portal, mailbox = sides(tmp_path)
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                     json=body(portal, mailbox, review=False, modules=("contacts",)),
                     headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    pid, secret = created["profileId"], created["webhookSecret"]
    assert secret.startswith("whsec_")
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    hook = local(hub, created["webhookUrl"])
    assert "webhookSecret" not in (await c.get(url, headers=auth)).json()  # shown once
    await run_and_wait(c, url, auth)  # the watermarks exist: later runs are incremental

    # Refusals: a 4xx each, never a 500.
    payload = b'{"changed": ["contacts"]}'
    async with httpx.AsyncClient(timeout=30) as raw:
        r = await raw.post(hook, content=payload, headers={"content-type": "application/json"})
        assert r.status_code == 401, r.text
        r = await raw.post(hook, content=payload, headers=signed("whsec_" + "A" * 44, payload))
        assert r.status_code == 401, r.text
        r = await raw.post(hook, content=payload,
                           headers=signed(secret, payload, int(time.time()) - 3600))
        assert r.status_code == 401 and "stale" in r.text, r.text
        r = await raw.post(hook, content=payload, headers={**signed(secret, payload),
                                                          "webhook-timestamp": "soon"})
        assert r.status_code == 400, r.text
        other = hook.replace(pid, str(uuid.uuid4()))
        r = await raw.post(other, content=payload, headers=signed(secret, payload))
        assert r.status_code == 404, r.text

        # One change, then a burst of 100 notifications at once.
        portal.create("contact", first_name="Neo", email="neo@example.test")
        answers = await asyncio.gather(*(raw.post(hook, content=payload,
                                                  headers=signed(secret, payload))
                                         for _ in range(100)))
    assert all(a.status_code == 202 for a in answers), {a.status_code for a in answers}
    jobs = [a.json()["jobId"] for a in answers if not a.json()["coalesced"]]
    assert 1 <= len(jobs) <= 5, len(jobs)
    assert sum(a.json()["coalesced"] for a in answers) == 100 - len(jobs)
    done = await wait_job(c, url, auth, jobs[-1])
    assert done["status"].get("errMessage") is None, done["status"]
    assert "neo@example.test" in emails(mailbox)

    # Rotating the secret: the old one stops working, the new one works.
    r = await c.post(url + "/webhookSecret", headers=auth)
    assert r.status_code == 200, r.text
    new = r.json()["webhookSecret"]
    async with httpx.AsyncClient(timeout=30) as raw:
        r = await raw.post(hook, content=payload, headers=signed(secret, payload))
        assert r.status_code == 401, r.text
        r = await raw.post(hook, content=payload, headers=signed(new, payload))
        assert r.status_code == 202, r.text
        await wait_job(c, url, auth, r.json()["jobId"] or jobs[-1])
        # A deleted hub's profiles take no more notifications.
        r = await c.delete(f"/api/v1/hubs/{hub_id}", headers=hub.admin)
        assert r.status_code == 204, r.text
        r = await raw.post(hook, content=payload, headers=signed(new, payload))
        assert r.status_code == 404, r.text


async def test_a_syncro_customer_created_runs_the_profiles_on_that_account(
        stack: tuple[RunningHub, Receiver, FakeSyncro], tmp_path: Path) -> None:
    hub, _, fake = stack
    c = hub.client
    hub_id, auth = await hub.create_hub("psa")
    account = fake.add_account("msp" + uuid.uuid4().hex[:8], "tok-" + uuid.uuid4().hex)
    integration = await hub.create_integration(
        hub_id, auth, channelId="Syncro", name="psa",
        configuration={"subdomain": account.subdomain, "apiToken": account.token})
    iid = integration["integrationId"]
    pids = []
    for name, conf in (("on syncro", {"syncroIntegrationId": iid}), ("elsewhere", {})):
        where = tmp_path / name.replace(" ", "_")
        where.mkdir()
        portal, mailbox = sides(where)
        spec = body(portal, mailbox, review=False, modules=("contacts",))
        spec["portal"]["configuration"].update(conf)
        portal.create("contact", first_name="Cy", email=f"cy-{len(pids)}@example.test")
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", json=spec, headers=auth)
        assert r.status_code == 201, r.text
        pids.append((r.json()["profileId"], mailbox))

    inbound = local(hub, integration["configuration"]["inboundUrl"])
    r = await fake.send_webhook(inbound, account.subdomain, "customer.created",
                                {"id": 901, "business_name": "New Co"})
    assert r.status_code == 200, r.text
    # The trigger was durable before Syncro got its answer: the status says so already.
    (on, on_mailbox), (off, off_mailbox) = pids
    status = (await c.get(f"/api/v1/hubs/{hub_id}/syncProfiles/{on}", headers=auth)).json()
    job = status["status"]["jobId"]
    assert job is not None
    done = await wait_job(c, f"/api/v1/hubs/{hub_id}/syncProfiles/{on}", auth, job)
    assert done["status"].get("errMessage") is None, done["status"]
    assert emails(on_mailbox) == ["cy-0@example.test"]
    other = (await c.get(f"/api/v1/hubs/{hub_id}/syncProfiles/{off}", headers=auth)).json()
    assert other["status"].get("jobId") is None and emails(off_mailbox) == []
