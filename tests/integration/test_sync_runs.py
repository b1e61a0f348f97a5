"""Two-way sync runs on a real broker: profiles over real HTTP, runs on the `sync` worker
group (in-process, and a `switchboard serve sync` subprocess killed half-way), both sides
`testfile` connectors (SQLite files the test edits and the worker syncs)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.structs import TopicPartition

from switchboard.kafka import SYNC_PAIRS, SYNC_PROFILES, make_consumer
from switchboard.services.sync_testfile import TestFileSide
from switchboard.settings import Settings
from switchboard.sync.records import Contact
from tests.conftest import RunningHub, make_settings
from tests.integration.test_resilience import Service, _stop_all


def sides(tmp: Path) -> tuple[TestFileSide, TestFileSide]:
    portal = TestFileSide(tmp / "portal.db", prefix="P")
    mailbox = TestFileSide(tmp / "mailbox.db", prefix="M")
    portal.set_meta("token", "portal-token-" + uuid.uuid4().hex)
    mailbox.set_meta("token", "mailbox-token-" + uuid.uuid4().hex)
    return portal, mailbox


def body(portal: TestFileSide, mailbox: TestFileSide, review: bool = True,
         modules: tuple[str, ...] = ("contacts", "tasks")) -> dict[str, Any]:
    return {
        "name": "crm ⇄ mailbox",
        "portal": {"kind": "testfile", "configuration": {"path": portal.path},
                   "credentials": {"token": portal.meta("token")}},
        "mailbox": {"kind": "testfile", "configuration": {"path": mailbox.path},
                    "credentials": {"token": mailbox.meta("token")}},
        "modules": {m: {"options": {"direction": "BOTH"}, "needReview": review}
                    for m in modules},
    }


def emails(side: TestFileSide) -> list[str]:
    return sorted(r.email or "" for r in side.live("contact") if isinstance(r, Contact))


def snapshot(side: TestFileSide) -> list[tuple[str, int]]:
    return sorted((f"{type(r).__name__}:{r.id}", r.modified_at)
                  for r in [*side.records("contact"), *side.records("task")])


async def run_and_wait(c: httpx.AsyncClient, url: str, auth: dict[str, str],
                       timeout: float = 90.0, **run: Any) -> dict[str, Any]:
    r = await c.post(url + "/run", json=run, headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()["jobId"]
    return await wait_job(c, url, auth, job, timeout)


async def wait_job(c: httpx.AsyncClient, url: str, auth: dict[str, str], job: str,
                   timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await c.get(url, headers=auth)
        assert r.status_code == 200, r.text
        status = r.json()["status"]
        if status.get("lastJobId") == job:
            return dict(r.json())
        assert time.monotonic() < deadline, f"run {job} did not finish: {status}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def sync_hub(broker: Any) -> AsyncIterator[RunningHub]:
    h = await RunningHub(make_settings(broker, sync_test_connectors=True),
                         ["api", "sync"]).start()
    try:
        yield h
    finally:
        await h.stop()


async def test_review_then_allow_sync_converges_and_a_second_run_changes_nothing(
        sync_hub: RunningHub, tmp_path: Path) -> None:
    c = sync_hub.client
    hub_id, auth = await sync_hub.create_hub("a")
    portal, mailbox = sides(tmp_path)
    portal.create("contact", first_name="Ada", email="ada@example.test")
    portal.create("contact", first_name="Bob", email="bob@example.test")
    portal.create("contact", first_name="Sam", email="sam@example.test", phone="1")
    mailbox.create("contact", first_name="Sam", email="SAM@example.test")
    mailbox.create("contact", first_name="Mia", email="mia@example.test")
    portal.create("task", title="call Ada")

    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", json=body(portal, mailbox),
                     headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{created['profileId']}"
    assert created["needReview"] == ["contacts", "tasks"]
    assert created["status"]["syncState"] == "IDLE"
    assert (await c.get(url + "/report", headers=auth)).status_code == 404

    # Review: the run plans, reports, and writes nothing on either side.
    before = (snapshot(portal), snapshot(mailbox))
    done = await run_and_wait(c, url, auth, initial="true")
    assert done["status"]["syncState"] == "IDLE", done["status"]
    assert done["status"]["modules"]["contacts"]["reviewed"] is True
    assert (snapshot(portal), snapshot(mailbox)) == before
    r = await c.get(url + "/report", headers=auth)
    assert r.status_code == 200, r.text
    contacts = r.json()["reports"]["contacts"]
    assert contacts["wouldCreate"] == {"portal": 1, "mailbox": 2}
    assert contacts["wouldMatch"] == 1
    assert {s["label"] for s in contacts["samples"] if s["action"] == "create"} >= {
        "ada@example.test", "bob@example.test", "mia@example.test"}
    assert r.json()["reports"]["tasks"]["wouldCreate"] == {"portal": 0, "mailbox": 1}

    r = await c.put(url + "/allowSync", json={"modules": ["contacts"]}, headers=auth)
    assert r.status_code == 200 and r.json()["needReview"] == ["tasks"], r.text
    r = await c.put(url + "/allowSync", headers=auth)
    assert r.status_code == 200 and r.json()["needReview"] == [], r.text

    # The portal refuses its first two calls for its rate limit: the run waits them out.
    portal.set_meta("throttle", "2")
    done = await run_and_wait(c, url, auth)
    status = done["status"]
    assert status.get("errMessage") is None, status
    assert status["lastSuccessfulSync"] > 0
    assert status["modules"]["contacts"]["created"] == 3
    ops = sum(m["created"] + m["updated"] + m["deleted"] for m in status["modules"].values())
    progress = status["progress"]
    assert (progress["done"], progress["total"], progress["etaMs"]) == (ops, ops, 0), status
    assert progress["recordsPerSecond"] > 0 and ops >= 5
    assert portal.meta("throttle") == "0"
    want = ["ada@example.test", "bob@example.test", "mia@example.test", "sam@example.test"]
    # Sam's e-mail as the mailbox wrote it last: the later change wins, on both sides.
    assert sorted(e.casefold() for e in emails(portal)) == want
    assert emails(mailbox) == emails(portal)
    assert [t.title for t in mailbox.live("task")] == ["call Ada"]  # type: ignore[attr-defined]

    # Nothing left to do: a second run writes nothing anywhere.
    before = (snapshot(portal), snapshot(mailbox))
    done = await run_and_wait(c, url, auth)
    assert all(m["created"] == m["updated"] == m["deleted"] == 0
               for m in done["status"]["modules"].values()), done["status"]
    assert (snapshot(portal), snapshot(mailbox)) == before

    # An edit on the mailbox reaches the portal, and only it.
    [mia] = [r for r in mailbox.live("contact") if getattr(r, "email", "") == "mia@example.test"]
    mailbox.update("contact", mia.id, phone="+44 1")
    done = await run_and_wait(c, url, auth)
    assert done["status"]["modules"]["contacts"]["updated"] == 1
    [p_mia] = [r for r in portal.live("contact") if getattr(r, "email", "") == "mia@example.test"]
    assert p_mia.phone == "+44 1"  # type: ignore[attr-defined]
    assert len(portal.live("contact")) == len(mailbox.live("contact")) == 4


async def test_worker_killed_mid_run_resumes_without_duplicates(
        broker: Any, tmp_path: Path) -> None:
    # One create at a time (the path of records no later run could match): killed
    # between any two.
    settings: Settings = make_settings(broker, sync_test_connectors=True,
                                       sync_create_concurrency=1)
    api = await RunningHub(settings, ["api"]).start()
    workers: list[Service] = []
    try:
        c = api.client
        hub_id, auth = await api.create_hub("a")
        portal, mailbox = sides(tmp_path)
        for i in range(30):
            portal.create("contact", first_name=f"N{i}", email=f"n{i}@example.test")
        mailbox.set_meta("delay_ms", "100")  # 30 creates: about 3 s of writes
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                         json=body(portal, mailbox, review=False, modules=("contacts",)),
                         headers=auth)
        assert r.status_code == 201, r.text
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"
        workers.append(Service("sync", settings, tmp_path))
        await workers[0].wait_ready()
        r = await c.post(url + "/run", json={}, headers=auth)
        assert r.status_code == 202, r.text
        job = r.json()["jobId"]

        deadline = time.monotonic() + 60
        while len(mailbox.records("contact")) < 8:
            assert time.monotonic() < deadline, workers[0].log_tail()
            await asyncio.sleep(0.02)
        workers[0].sigkill()
        killed_at = len(mailbox.records("contact"))
        assert killed_at < 30
        r = await c.get(url, headers=auth)
        assert r.json()["status"]["syncState"] == "EXECUTING"
        # Progress is visible (written at most once a second): total known, not done.
        progress = r.json()["status"]["progress"]
        assert progress["total"] == 30 and progress["done"] < 30, progress
        # The ETA is the rest at the rate so far: unknown until an operation is done.
        assert (progress["etaMs"] is None) == (progress["done"] == 0), progress

        mailbox.set_meta("delay_ms", "0")
        workers.append(Service("sync", settings, tmp_path))
        await workers[1].wait_ready()
        done = await wait_job(c, url, auth, job, timeout=120)
        assert done["status"].get("errMessage") is None, done["status"]
        # Every contact once: none created twice (live or deleted), none missing.
        assert len(mailbox.records("contact")) == 30
        assert emails(mailbox) == emails(portal)
        assert len(set(emails(mailbox))) == 30
        # And the resumed state is whole: another run has nothing to do.
        before = (snapshot(portal), snapshot(mailbox))
        done = await run_and_wait(c, url, auth)
        assert done["status"]["modules"]["contacts"] == {
            "created": 0, "updated": 0, "deleted": 0, "matched": 0, "conflicts": 0,
            "reviewed": False, "skipped": None}
        assert (snapshot(portal), snapshot(mailbox)) == before
        # The pair index is on its topic: one pair per contact (the sentinel above is
        # the run that found nothing to do).
        assert await _count_pairs(settings) >= 30
    finally:
        await _stop_all(workers)
        for w in workers:
            w.close_log()
        await api.stop()


async def test_worker_killed_in_a_window_of_concurrent_creates_leaves_no_duplicates(
        broker: Any, tmp_path: Path) -> None:
    settings: Settings = make_settings(broker, sync_test_connectors=True)
    assert settings.sync_create_concurrency > 1
    api = await RunningHub(settings, ["api"]).start()
    workers: list[Service] = []
    try:
        c = api.client
        hub_id, auth = await api.create_hub("a")
        portal, mailbox = sides(tmp_path)
        for i in range(200):
            portal.create("contact", first_name=f"P{i}", email=f"p{i}@example.test")
        for i in range(20):
            mailbox.create("contact", first_name=f"M{i}", email=f"m{i}@example.test")
        # Serial among the concurrent ones: no e-mail, or one e-mail twice.
        portal.create("contact", first_name="No mail")
        portal.create("contact", first_name="Twin A", email="twin@example.test")
        portal.create("contact", first_name="Twin B", email="twin@example.test")
        before = len(portal.records("contact")) + len(mailbox.records("contact"))
        for side in (portal, mailbox):
            # Creates land at once and answer 400 ms later: a worker frozen as soon as
            # records appear holds them without pairs, however loaded the machine is.
            side.set_meta("answer_delay_ms", "400")
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                         json=body(portal, mailbox, review=False, modules=("contacts",)),
                         headers=auth)
        assert r.status_code == 201, r.text
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"
        workers.append(Service("sync", settings, tmp_path))
        await workers[0].wait_ready()
        r = await c.post(url + "/run", json={}, headers=auth)
        assert r.status_code == 202, r.text
        job = r.json()["jobId"]

        def made() -> int:
            return len(portal.records("contact")) + len(mailbox.records("contact")) - before

        # Freeze the worker just after a window's creates landed; kill it once some of
        # them have no pair on the topic yet (else let it go on and try again).
        orphans = tries = 0
        deadline = time.monotonic() + 60
        while orphans == 0:
            assert time.monotonic() < deadline, workers[0].log_tail()
            seen = made()
            while made() == seen:
                assert made() < 223, f"the run finished before a window was caught ({tries})"
                await asyncio.sleep(0.002)
            workers[0].proc.send_signal(signal.SIGSTOP)
            tries += 1
            orphans = made() - await _count_pairs(settings)
            if orphans == 0:
                workers[0].proc.send_signal(signal.SIGCONT)
        workers[0].sigkill()
        assert 0 < made() < 223, made()

        for side in (portal, mailbox):
            side.set_meta("answer_delay_ms", "0")
        workers.append(Service("sync", settings, tmp_path))
        await workers[1].wait_ready()
        done = await wait_job(c, url, auth, job, timeout=120)
        assert done["status"].get("errMessage") is None, done["status"]
        assert done["status"]["modules"]["contacts"]["matched"] >= orphans
        # Every contact once on each side: none created twice (live or deleted).
        names = [sorted((r.first_name or "", r.email or "") for r in side.records("contact")
                        if isinstance(r, Contact)) for side in (portal, mailbox)]
        assert names[0] == names[1]
        assert len(names[0]) == len(set(names[0])) == 223
        assert await _count_pairs(settings) == 223
    finally:
        await _stop_all(workers)
        for w in workers:
            w.close_log()
        await api.stop()


async def _read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(topic), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[tuple[bytes | None, bytes | None]] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            out += [(r.key, r.value) for r in batch.get(tp, [])]
        return out
    finally:
        await consumer.stop()


async def _count_pairs(settings: Settings) -> int:
    latest: dict[bytes | None, bytes | None] = {}
    for key, value in await _read_topic(settings, SYNC_PAIRS):
        latest[key] = value
    return sum(1 for k, v in latest.items() if k and k.startswith(b"pair:") and v)


async def test_profiles_are_walled_per_hub_and_credentials_never_shown(
        sync_hub: RunningHub, tmp_path: Path) -> None:
    c = sync_hub.client
    hub_a, auth_a = await sync_hub.create_hub("a")
    hub_b, auth_b = await sync_hub.create_hub("b")
    portal, mailbox = sides(tmp_path)
    r = await c.post(f"/api/v1/hubs/{hub_a}/syncProfiles", json=body(portal, mailbox),
                     headers=auth_a)
    assert r.status_code == 201, r.text
    pid = r.json()["profileId"]
    assert r.json()["portal"]["credentials"] == {"token": "********"}
    tokens = [portal.meta("token").encode(), mailbox.meta("token").encode()]

    # Hub B reaches it neither under its own hub id nor under hub A's.
    for hub in (hub_a, hub_b):
        url = f"/api/v1/hubs/{hub}/syncProfiles/{pid}"
        for method, path, payload in (("GET", "", None), ("PATCH", "", {"name": "x"}),
                                      ("DELETE", "", None), ("POST", "/run", {}),
                                      ("GET", "/report", None), ("PUT", "/allowSync", {}),
                                      ("POST", "/disconnect", None)):
            r = await c.request(method, url + path, json=payload, headers=auth_b)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
    r = await c.get(f"/api/v1/hubs/{hub_b}/syncProfiles", headers=auth_b)
    assert r.status_code == 200 and r.json() == {"items": []}
    r = await c.get(f"/api/v1/hubs/{hub_a}/syncProfiles", headers=auth_a)
    assert [p["profileId"] for p in r.json()["items"]] == [pid]

    # An unknown connector kind and a field map naming no field are refused.
    bad = body(portal, mailbox)
    bad["portal"]["kind"] = "nosuch"
    r = await c.post(f"/api/v1/hubs/{hub_a}/syncProfiles", json=bad, headers=auth_a)
    assert r.status_code == 400 and "nosuch" in r.text
    bad = body(portal, mailbox)
    bad["modules"]["contacts"]["options"]["fields"] = [{"portal": "nope", "mailbox": "email"}]
    r = await c.post(f"/api/v1/hubs/{hub_a}/syncProfiles", json=bad, headers=auth_a)
    assert r.status_code == 400, r.text

    # An update that sends the mask back keeps the credential; the run proves it opens.
    url = f"/api/v1/hubs/{hub_a}/syncProfiles/{pid}"
    r = await c.patch(url, json={"portal": {"kind": "testfile",
                                            "configuration": {"path": portal.path},
                                            "credentials": {"token": "********"}}},
                      headers=auth_a)
    assert r.status_code == 200, r.text
    done = await run_and_wait(c, url, auth_a)
    assert done["status"].get("errMessage") is None, done["status"]

    # A wrong credential fails the run on its side, as the seeds show it.
    r = await c.patch(url, json={"mailbox": {"kind": "testfile",
                                             "configuration": {"path": mailbox.path},
                                             "credentials": {"token": "wrong"}}},
                      headers=auth_a)
    assert r.status_code == 200, r.text
    done = await run_and_wait(c, url, auth_a)
    assert done["status"]["errSvcId"] == "mailbox", done["status"]
    assert "refused" in done["status"]["errMessage"]

    # Disconnect drops the credentials; runs are refused until new ones come.
    r = await c.post(url + "/disconnect", headers=auth_a)
    assert r.status_code == 200 and r.json()["connected"] is False
    assert r.json()["portal"]["credentials"] == {}
    r = await c.post(url + "/run", json={}, headers=auth_a)
    assert r.status_code == 409, r.text

    # Nowhere on the topic in clear.
    raw = await _read_topic(sync_hub.settings, SYNC_PROFILES)
    assert raw
    for _, value in raw:
        for token in tokens:
            assert token not in (value or b"")

    r = await c.delete(url, headers=auth_a)
    assert r.status_code == 204
    assert (await c.get(url, headers=auth_a)).status_code == 404
