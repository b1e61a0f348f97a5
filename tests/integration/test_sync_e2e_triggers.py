"""End to end with the real connector kinds (Syncro ⇄ the reference platform, over HTTP
against their fakes): after the first run, a Syncro `customer.created` webhook, a
platform's signed change notification and then a schedule each run the sync, and each
change reaches the other side. Extends `test_sync_e2e` (its helpers are reused)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from switchboard.webhooks import Signer
from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.platform import FakePlatform
from tests.fakes.syncro import FakeSyncro
from tests.integration.test_sync_e2e import E2E, ops
from tests.integration.test_sync_runs import wait_job

PUBLIC = "https://hub.example.test/sb"


@pytest.fixture
async def e2e(broker: Any) -> AsyncIterator[E2E]:
    platform = await FakePlatform(page_size=3).start()
    graph = FakeGraph(page_size=3)  # unused here; E2E carries one
    syncro = await FakeSyncro(per_page=3).start()
    settings = make_settings(broker, syncro_api_url=syncro.api_url(), provider_timeout_s=5.0,
                             public_url=PUBLIC, sync_schedule_minute_s=1.0)
    hub = await RunningHub(settings, ["api", "ingress", "sync"]).start()
    try:
        hub_id, auth = await hub.create_hub("e2e-triggers")
        yield E2E(hub, platform, graph, syncro, hub_id, auth)
    finally:
        await hub.stop()
        await syncro.stop()
        await platform.stop()


def local(hub: RunningHub, url: str) -> str:
    assert url.startswith(PUBLIC), url
    return hub.base_url + url[len(PUBLIC):]


async def wait_for(what: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_a_syncro_customer_a_platform_notification_and_a_schedule_each_run_the_sync(
        e2e: E2E) -> None:
    p, s, c = e2e.platform, e2e.syncro, e2e.client
    p.add_user("ptok9", user_id="u9", email="pat@platform.test")
    account = s.add_account("trg" + uuid.uuid4().hex[:6], "stok9")
    s.add_customer(account, business_name="Acme", email="boss@acme.test")
    integration = await e2e.hub.create_integration(
        e2e.hub_id, e2e.auth, channelId="Syncro", name="psa",
        configuration={"subdomain": account.subdomain, "apiToken": "stok9"})
    r = await c.post(f"/api/v1/hubs/{e2e.hub_id}/syncProfiles", json={
        "name": "Syncro ⇄ CRM",
        "portal": e2e.portal("ptok9"),
        "mailbox": {"kind": "syncro", "configuration": {"subdomain": account.subdomain},
                    "credentials": {"apiToken": "stok9"}},
        "modules": {"accounts": {"options": {"direction": "BOTH"}, "needReview": False}}},
        headers=e2e.auth)
    assert r.status_code == 201, r.text
    url = f"/api/v1/hubs/{e2e.hub_id}/syncProfiles/{r.json()['profileId']}"
    secret, hook = r.json()["webhookSecret"], local(e2e.hub, r.json()["webhookUrl"])
    await e2e.run(url, initial=True)

    def platform_accounts() -> set[str]:
        return {a["name"] for a in p.live("account") if a.get("ownerId") == "u9"}

    assert platform_accounts() == {"Acme"}

    # Syncro says a customer was created: the profile on that account runs.
    before = (await c.get(url, headers=e2e.auth)).json()["status"]["jobId"]
    newco = s.add_customer(account, business_name="Newco", email="hi@newco.test")
    r = await s.send_webhook(local(e2e.hub, integration["configuration"]["inboundUrl"]),
                             account.subdomain, "customer.created", newco)
    assert r.status_code == 200, r.text
    status = (await c.get(url, headers=e2e.auth)).json()["status"]
    assert status["jobId"] not in (None, before), status  # requested before the answer
    done = await wait_job(c, url, e2e.auth, status["jobId"])
    assert done["status"].get("errMessage") is None and ops(done["status"]) == 1
    assert platform_accounts() == {"Acme", "Newco"}

    # The platform says its records changed (signed with the profile's secret).
    p.add("account", owner_id="u9", name="Platco", domain="platco.test")
    payload = b'{"changed": ["accounts"]}'
    headers = {"content-type": "application/json",
               **Signer(hmac=[secret]).headers(f"msg_{uuid.uuid4().hex}", int(time.time()),
                                               payload)}
    async with httpx.AsyncClient(timeout=30) as raw:
        r = await raw.post(hook, content=payload, headers=headers)
    assert r.status_code == 202 and r.json()["jobId"], r.text
    done = await wait_job(c, url, e2e.auth, r.json()["jobId"])
    assert done["status"].get("errMessage") is None, done["status"]
    assert "Platco" in {x["business_name"] for x in account.customers}

    # A schedule every 2 "minutes" (a second each here) picks up the next change.
    s.add_customer(account, business_name="Schedco", email="x@schedco.test")
    r = await c.patch(url, json={"schedule": {"intervalType": 0, "interval": 2}},
                      headers=e2e.auth)
    assert r.status_code == 200 and r.json()["schedule"]["interval"] == 2, r.text
    await wait_for(lambda: "Schedco" in platform_accounts())
    # The run writes its status after its last write to the platform: poll for it.
    deadline = time.monotonic() + 60.0
    while not (status := (await c.get(url, headers=e2e.auth)).json()["status"]
               ).get("lastSlotDone"):
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)
    r = await c.patch(url, json={"schedule": {"intervalType": 0, "interval": 2,
                                              "enabled": False}}, headers=e2e.auth)
    assert r.status_code == 200, r.text
    assert len({a["name"] for a in p.live("account")} & {"Acme", "Newco", "Platco",
                                                           "Schedco"}) == 4
    assert sum(1 for x in account.customers if x["business_name"] == "Platco") == 1
