"""The hub's sync runs (`GET /api/v1/hubs/{hubId}/syncJobs`) on a real broker: manual,
webhook-triggered and failed runs of `testfile` profiles listed newest first with their
counts, filtered, paged, one by id, walled per hub, and the same list from a second API
process that reads it from the topics (`sync.runs`; after compaction too:
test_sync_runs_history)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningHub, make_settings
from tests.integration.test_sync_runs import body, run_and_wait, sides, wait_job
from tests.integration.test_sync_triggers import signed


@pytest.fixture
async def sync_hub(broker: Any) -> AsyncIterator[RunningHub]:
    h = await RunningHub(make_settings(broker, sync_test_connectors=True),
                         ["api", "sync"]).start()
    try:
        yield h
    finally:
        await h.stop()


async def pages(c: httpx.AsyncClient, url: str, auth: dict[str, str],
                **params: Any) -> list[dict[str, Any]]:
    """Every item, one page of `limit` at a time."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        r = await c.get(url, params={**params, **({"cursor": cursor} if cursor else {})},
                        headers=auth)
        assert r.status_code == 200, r.text
        out += r.json()["items"]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return out
    raise AssertionError("the listing never ended")


async def test_a_hubs_runs_are_listed_newest_first_filtered_paged_and_walled(
        sync_hub: RunningHub, tmp_path: Path) -> None:
    c = sync_hub.client
    hub_id, auth = await sync_hub.create_hub("runs")
    other_id, other_auth = await sync_hub.create_hub("others")
    portal, mailbox = sides(tmp_path)
    portal.create("contact", first_name="Ada", email="ada@example.test")
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                     json=body(portal, mailbox, review=False, modules=("contacts",)),
                     headers=auth)
    assert r.status_code == 201, r.text
    pid, secret = r.json()["profileId"], r.json()["webhookSecret"]
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    jobs = f"/api/v1/hubs/{hub_id}/syncJobs"
    assert (await c.get(jobs, headers=auth)).json() == {"items": [], "nextCursor": None}

    # A manual initial run, a run a signed change notification asks for, a failed run.
    first = (await run_and_wait(c, url, auth, initial=True))["status"]["lastJobId"]
    portal.create("contact", first_name="Bob", email="bob@example.test")
    payload = b'{"changed": ["contacts"]}'
    r = await c.post(f"/api/v1/sync/webhooks/{pid}", content=payload,
                     headers=signed(secret, payload))
    assert r.status_code == 202 and r.json()["jobId"], r.text
    hooked = r.json()["jobId"]
    await wait_job(c, url, auth, hooked)
    portal.set_meta("token", "changed behind the profile's back")
    failed = (await run_and_wait(c, url, auth))["status"]["lastJobId"]

    r = await c.get(jobs, headers=auth)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["jobId"], i["state"], i["trigger"], i["type"]) for i in items] == [
        (failed, "failed", "manual", "incremental"),
        (hooked, "finished", "webhook", "incremental"),
        (first, "finished", "manual", "initial")], items
    assert all(i["profileId"] == pid for i in items)
    assert items[2]["modules"]["contacts"]["created"] == 1, items[2]
    assert items[1]["modules"]["contacts"]["created"] == 1, items[1]
    for i in items:
        assert i["requestedAt"] <= i["startedAt"] <= i["finishedAt"], i
    assert items[0]["errSvcId"] == "portal" and items[0]["errMessage"], items[0]
    assert items[1]["errMessage"] is None and items[1]["origin"] == "webhook"

    # Filters (state in any case), pages of one, one run by id.
    r = await c.get(jobs, params={"state": "FAILED"}, headers=auth)
    assert [i["jobId"] for i in r.json()["items"]] == [failed], r.text
    r = await c.get(jobs, params={"state": "Finished", "profileId": pid}, headers=auth)
    assert [i["jobId"] for i in r.json()["items"]] == [hooked, first], r.text
    r = await c.get(jobs, params={"profileId": "no-such-profile"}, headers=auth)
    assert r.json() == {"items": [], "nextCursor": None}, r.text
    assert await pages(c, jobs, auth, limit=1) == items
    r = await c.get(f"{jobs}/{hooked}", headers=auth)
    assert r.status_code == 200 and r.json() == items[1], r.text
    for params, field in (({"state": "done"}, "state"), ({"limit": "0"}, "limit"),
                          ({"limit": "501"}, "limit"), ({"cursor": "%%%"}, "cursor")):
        r = await c.get(jobs, params=params, headers=auth)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == field, r.text

    # Another hub sees none of it, and none of its own.
    r = await c.get(jobs, headers=other_auth)
    assert r.status_code == 404, r.text
    r = await c.get(f"{jobs}/{first}", headers=other_auth)
    assert r.status_code == 404, r.text
    theirs = f"/api/v1/hubs/{other_id}/syncJobs"
    r = await c.get(f"{theirs}/{first}", headers=other_auth)
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "sync_job_not_found", r.text
    r = await c.get(theirs, headers=other_auth)
    assert r.json() == {"items": [], "nextCursor": None}, r.text

    # Another API process knows the same runs, read from the topic.
    second = await RunningHub(sync_hub.settings, ["api"]).start()
    try:
        r = await second.client.get(jobs, headers=auth)
        assert r.status_code == 200 and r.json()["items"] == items, r.text
    finally:
        await second.stop()

    # The CLI: a table, the page as JSON, one run.
    exe = str(Path(sys.executable).parent / "switchboard")
    common = ["--url", sync_hub.base_url, "--token", auth["Authorization"][7:]]

    async def cli(*args: str) -> str:
        # The hub runs on this event loop: the CLI must not block it.
        proc = await asyncio.create_subprocess_exec(
            exe, "sync", *args, *common, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    lines = (await cli("runs", hub_id)).splitlines()
    assert lines[0].split()[:5] == ["JOB", "ID", "PROFILE", "TYPE", "TRIGGER"], lines
    assert [line.split()[:5] for line in lines[1:]] == [
        [failed, pid, "incremental", "manual", "failed"],
        [hooked, pid, "incremental", "webhook", "finished"],
        [first, pid, "initial", "manual", "finished"]], lines
    assert json.loads(await cli("runs", hub_id, "--json", "--state", "FAILED")) == {
        "items": [items[0]], "nextCursor": None}
    out = await cli("runs", hub_id, "--limit", "1")
    assert out.splitlines()[1].split()[0] == failed and "more: --cursor " in out, out
    out = await cli("run", hub_id, first)
    assert "state:       finished" in out and "contacts" in out, out

    # A deleted profile's runs go with it.
    assert (await c.delete(url, headers=auth)).status_code == 204
    r = await c.get(jobs, headers=auth)
    assert r.json() == {"items": [], "nextCursor": None}, r.text
    assert (await c.get(f"{jobs}/{first}", headers=auth)).status_code == 404
