"""End to end with the real connector kinds, Graph ⇄ the reference platform (over HTTP
against their fakes), all four modules: review → report → allowSync → a run converges;
then a schedule (every 2 "minutes", a second each here) runs the sync with no run asked
for and brings a contact and a to-do made in Outlook to the platform; then, the schedule
disabled, the platform's signed change notification runs it and brings what changed on
the platform to the mailbox. Extends `test_sync_e2e` and `test_sync_e2e_triggers` (their
helpers are reused)."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from switchboard.services.sync_scheduler import slot_job_id
from switchboard.webhooks import Signer
from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.platform import FakePlatform
from tests.fakes.syncro import FakeSyncro
from tests.integration.test_sync_e2e import DAY_MS, E2E, by_email, graph_contacts, mail, ops, when
from tests.integration.test_sync_e2e_triggers import PUBLIC, local
from tests.integration.test_sync_runs import wait_job


@pytest.fixture
async def e2e(broker: Any) -> AsyncIterator[E2E]:
    platform = await FakePlatform(page_size=3).start()
    graph = FakeGraph(page_size=3)
    await graph.start()
    syncro = FakeSyncro(per_page=3)  # unused here; E2E carries one
    settings = make_settings(broker, graph_api_url=graph.url, provider_timeout_s=5.0,
                             public_url=PUBLIC, sync_schedule_minute_s=1.0)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        hub_id, auth = await hub.create_hub("e2e-graph-schedule")
        yield E2E(hub, platform, graph, syncro, hub_id, auth)
    finally:
        await hub.stop()
        await graph.stop()
        await platform.stop()


async def status_when(e2e: E2E, url: str, check: Callable[[dict[str, Any]], bool],
                      what: str, timeout: float = 20.0) -> dict[str, Any]:
    """The profile's status once `check` holds for it (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await e2e.client.get(url, headers=e2e.auth)
        assert r.status_code == 200, r.text
        status: dict[str, Any] = r.json()["status"]
        if check(status):
            return status
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {status}"
        await asyncio.sleep(0.1)


def titles(records: list[dict[str, Any]]) -> set[str]:
    return {r["title"] for r in records}


async def test_graph_and_the_platform_by_schedule_then_by_a_platform_notification(
        e2e: E2E) -> None:
    p, g, c, auth = e2e.platform, e2e.graph, e2e.client, e2e.auth
    p.add_user("ptok", user_id="u1", email="pat@platform.test")
    me = g.me["mail"]
    now = int(time.time() * 1000)
    p.add("contact", firstName="Ada", lastName="Lovelace", email="ada@example.test")
    p.add("task", title="Call Ada")
    p.add("event", subject="Kickoff", startAt=now + DAY_MS, endAt=now + DAY_MS + 3_600_000)
    g.add("contacts", {"givenName": "Mia", "surname": "Wong", "displayName": "Mia Wong",
                       "emailAddresses": [{"address": "mia@example.test"}]})
    g.add("tasks", {"title": "Buy milk"})
    g.add("events", {"subject": "Lunch", "start": when(now + 2 * DAY_MS),
                     "end": when(now + 2 * DAY_MS + 3_600_000)})
    mail(g, 1, "ada@example.test", [me], now - 60_000)

    r = await c.post(f"/api/v1/hubs/{e2e.hub_id}/syncProfiles", headers=auth, json={
        "name": "Outlook ⇄ CRM, scheduled",
        "portal": e2e.portal("ptok"),
        "mailbox": {"kind": "graph", "configuration": {},
                    "credentials": {"accessToken": g.token}},
        "modules": {"contacts": {"options": {"direction": "BOTH"}},
                    "calendar": {"options": {"direction": "BOTH"}},
                    "tasks": {"options": {"direction": "BOTH"}},
                    "email": {"options": {"direction": "TO_PORTAL"}}}})
    assert r.status_code == 201, r.text
    pid = r.json()["profileId"]
    url = f"/api/v1/hubs/{e2e.hub_id}/syncProfiles/{pid}"
    secret, hook = r.json()["webhookSecret"], local(e2e.hub, r.json()["webhookUrl"])

    # Review: reported, nothing written; allowSync; the run converges both sides.
    before = (copy.deepcopy(p.records), copy.deepcopy(g.items))
    status = await e2e.run(url, initial=True)
    assert all(m["reviewed"] for m in status["modules"].values()), status
    assert (p.records, g.items) == before
    r = await c.get(url + "/report", headers=auth)
    assert r.status_code == 200, r.text
    reports = r.json()["reports"]
    for module in ("contacts", "calendar", "tasks"):
        assert reports[module]["wouldCreate"] == {"portal": 1, "mailbox": 1}, reports
    assert reports["email"]["wouldCreate"] == {"portal": 1, "mailbox": 0}, reports
    r = await c.put(url + "/allowSync", json={}, headers=auth)
    assert r.status_code == 200 and r.json()["needReview"] == [], r.text
    status = await e2e.run(url)
    assert {k: m["created"] for k, m in status["modules"].items()} == {
        "contacts": 2, "calendar": 2, "tasks": 2, "email": 1}, status
    assert set(by_email(p.live("contact"))) == set(graph_contacts(g)) == {
        "ada@example.test", "mia@example.test"}
    assert titles(p.live("task")) == titles(g.live("tasks")) == {"Call Ada", "Buy milk"}
    assert {e["subject"] for e in p.live("event")} == {e["subject"] for e in g.live(
        "events")} == {"Kickoff", "Lunch"}
    assert [e["subject"] for e in p.live("email")] == ["mail 1"]
    converged = status["lastJobId"]
    assert status.get("lastSlotDone") is None, status

    # Made in Outlook, then a schedule every 2 "minutes": its first slot runs the sync,
    # no run asked for by the test.
    g.add("contacts", {"givenName": "Zed", "surname": "Ray", "displayName": "Zed Ray",
                       "emailAddresses": [{"address": "zed@example.test"}]})
    g.add("tasks", {"title": "Water plants"})
    r = await c.patch(url, json={"schedule": {"intervalType": 0, "interval": 2}},
                      headers=auth)
    assert r.status_code == 200, r.text
    schedule = r.json()["schedule"]
    assert schedule["interval"] == 2 and schedule.get("enabled", True), r.text
    fired = await status_when(e2e, url, lambda s: s.get("jobId") != converged,
                              "the schedule to fire")
    # Disabled as soon as its first slot has fired (the next is 2 s later): that slot's
    # run still goes on, and no other one follows it.
    r = await c.patch(url, json={"schedule": {"intervalType": 0, "interval": 2,
                                              "enabled": False}}, headers=auth)
    assert r.status_code == 200 and r.json()["schedule"]["enabled"] is False, r.text
    done = await wait_job(c, url, auth, fired["jobId"], timeout=30)
    status = done["status"]
    assert status.get("errMessage") is None, status
    slot = status.get("lastSlotDone")
    assert slot and status["lastJobId"] == slot_job_id(pid, slot), status
    assert status["lastJobId"] != converged
    assert status["modules"]["contacts"]["created"] == 1, status
    assert status["modules"]["tasks"]["created"] == 1, status
    assert ops(status) == 2, status
    assert set(by_email(p.live("contact"))) == {
        "ada@example.test", "mia@example.test", "zed@example.test"}
    assert titles(p.live("task")) == {"Call Ada", "Buy milk", "Water plants"}
    scheduled = status["lastJobId"]

    # Made on the platform, then the platform's notification (signed with the profile's
    # secret): the run it triggers brings it to the mailbox.
    p.add("contact", firstName="Bob", lastName="Byte", email="bob@example.test",
          title="CTO")
    p.add("task", title="Send invoice")
    payload = b'{"changed": ["contacts", "tasks"]}'
    headers = {"content-type": "application/json",
               **Signer(hmac=[secret]).headers(f"msg_{uuid.uuid4().hex}", int(time.time()),
                                               payload)}
    async with httpx.AsyncClient(timeout=30) as raw:
        r = await raw.post(hook, content=payload, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["jobId"] and r.json()["coalesced"] is False, r.text
    done = await wait_job(c, url, auth, r.json()["jobId"], timeout=30)
    status = done["status"]
    assert status.get("errMessage") is None, status
    assert status["lastJobId"] not in (converged, scheduled), status
    assert status.get("lastSlotDone") == slot, status  # the schedule ran no more
    assert status["modules"]["contacts"]["created"] == 1, status
    assert status["modules"]["tasks"]["created"] == 1, status
    assert ops(status) == 2, status
    people = graph_contacts(g)
    assert set(people) == set(by_email(p.live("contact"))) == {
        "ada@example.test", "mia@example.test", "zed@example.test", "bob@example.test"}
    assert people["bob@example.test"]["jobTitle"] == "CTO"
    assert titles(g.live("tasks")) == titles(p.live("task")) == {
        "Call Ada", "Buy milk", "Water plants", "Send invoice"}
    assert [e["subject"] for e in p.live("email")] == ["mail 1"]
