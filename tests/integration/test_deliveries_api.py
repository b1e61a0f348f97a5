"""The delivery log, redelivery, replay and jobs through real HTTP on a real broker.

Only the API runs: the tests write `Delivery` and `AttemptRecord` records to the real
topics themselves (as the router and deliverer do) and read `deliveries` back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from switchboard.jobs import MAX_JOBS_PER_HUB
from switchboard.kafka import ATTEMPTS, DELIVERIES, make_consumer, make_producer
from switchboard.model import Activity, AttemptRecord, Delivery, DeliveryRef, Sender
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings

_enc = msgspec.json.Encoder()
DAY_MS = 24 * 3600 * 1000


class World:
    """A hub with two integrations (x, y) in hub A and one (z) in hub B, plus a producer."""

    def __init__(self, hub: RunningHub, producer: AIOKafkaProducer) -> None:
        self.hub = hub
        self.settings: Settings = hub.settings
        self.producer = producer
        self.c = hub.client

    async def setup(self) -> World:
        self.hub_a, self.auth_a = await self.hub.create_hub("a")
        self.hub_b, self.auth_b = await self.hub.create_hub("b")
        cfg = {"integrationType": "Agent", "webhookUrl": "http://127.0.0.1:9/hook"}
        self.x = (await self.hub.create_integration(self.hub_a, self.auth_a, channelId="Direct",
                                                    name="x", configuration=cfg))["integrationId"]
        self.y = (await self.hub.create_integration(self.hub_a, self.auth_a, channelId="Direct",
                                                    name="y", configuration=cfg))["integrationId"]
        self.z = (await self.hub.create_integration(self.hub_b, self.auth_b, channelId="Direct",
                                                    name="z", configuration=cfg))["integrationId"]
        return self

    def hub_of(self, integration: str) -> str:
        return self.hub_b if integration == self.z else self.hub_a

    async def delivery(self, integration: str, name: str, timestamp_ms: int | None = None
                       ) -> tuple[Delivery, DeliveryRef]:
        """Write a delivery as the router does (key: destination); return where it sits."""
        return (await self.batch(integration, [name], timestamp_ms))[0]

    async def batch(self, integration: str, names: list[str], timestamp_ms: int | None = None
                    ) -> list[tuple[Delivery, DeliveryRef]]:
        """Several deliveries in one produce batch, as the router writes them."""
        now = int(time.time() * 1000)
        made = []
        for n, name in enumerate(names):
            activity = Activity(activity_id=f"act-{name}", hub_id=self.hub_of(integration),
                                integration_id="src", channel_id="Direct",
                                type="message:customer", conversation_id="conv-1",
                                sender=Sender(id="u1"), timestamp=now)
            d = Delivery(delivery_id=f"msg_{name}", hub_id=self.hub_of(integration),
                         destination_id=integration, conversation_id="conv-1",
                         activity=activity, created_at=now)
            ts = None if timestamp_ms is None else timestamp_ms + n
            made.append((d, await self.producer.send(
                self.settings.topic(DELIVERIES), _enc.encode(d), key=integration.encode(),
                timestamp_ms=ts)))
        return [(d, DeliveryRef((md := await fut).partition, md.offset)) for d, fut in made]

    async def attempt(self, d: Delivery, status: str, attempt: int, at: int,
                      ref: DeliveryRef | None = None, **extra: Any) -> None:
        rec = AttemptRecord(delivery_id=d.delivery_id, activity_id=d.activity.activity_id,
                            hub_id=d.hub_id, destination_id=d.destination_id,
                            conversation_id=d.conversation_id, status=status,  # type: ignore[arg-type]
                            attempt=attempt, at=at, source=ref, **extra)
        await self.producer.send_and_wait(self.settings.topic(ATTEMPTS), _enc.encode(rec),
                                          key=d.destination_id.encode())

    async def mark(self) -> dict[int, int]:
        """A marker record on every partition of `deliveries`: where "after" begins."""
        topic = self.settings.topic(DELIVERIES)
        marks = {}
        for p in range(self.settings.partitions):
            md = await self.producer.send_and_wait(topic, b"mark", key=b"s", partition=p)
            marks[p] = md.offset + 1
        return marks

    async def produced_since(self, before: dict[int, int]) -> list[bytes]:
        """Everything written to `deliveries` between the marks and now: a sentinel goes to
        every partition, and each is read up to its sentinel (no sleeping)."""
        topic = self.settings.topic(DELIVERIES)
        for p in before:
            await self.producer.send_and_wait(topic, b"sentinel", key=b"s", partition=p)
        consumer = make_consumer(self.settings, group_id=None)
        await consumer.start()
        got: list[bytes] = []
        try:
            for p, start in sorted(before.items()):
                tp = TopicPartition(topic, p)
                consumer.assign([tp])
                consumer.seek(tp, start)
                done = False
                async with asyncio.timeout(20):
                    while not done:
                        for rec in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                            if rec.value == b"sentinel":
                                done = True
                                break
                            got.append(rec.value or b"")
        finally:
            await consumer.stop()
        return got

    async def job(self, job_id: str, auth: dict[str, str]) -> dict[str, Any]:
        """Poll the job until it is no longer running."""
        async with asyncio.timeout(30):
            while True:
                r = await self.c.get(f"/api/v1/jobs/{job_id}", headers=auth)
                assert r.status_code == 200, r.text
                job: dict[str, Any] = r.json()
                if job["state"] != "running":
                    return job
                await asyncio.sleep(0.05)


@pytest.fixture
async def world(broker: Any) -> AsyncIterator[World]:
    hub = await RunningHub(make_settings(broker), ["api"]).start()
    producer = make_producer(hub.settings)
    await producer.start()
    try:
        yield await World(hub, producer).setup()
    finally:
        await producer.stop()
        await hub.stop()


def ids_of(values: list[bytes]) -> list[str]:
    return [msgspec.json.decode(v)["deliveryId"] for v in values]


async def test_list_detail_paging_filters_and_walls(world: World) -> None:
    c, auth = world.c, world.auth_a
    base = int(time.time() * 1000) - 60_000
    made: list[Delivery] = []
    for n in range(120):
        d, ref = await world.delivery(world.x, f"x{n:03}")
        made.append(d)
        status = "failed" if n % 10 == 0 else "delivered"
        await world.attempt(d, status, 1, base + n * 10, ref, code=500 if status == "failed"
                            else 200, error="http_500" if status == "failed" else None)
    # One with a history: two failures, then delivered; one record arrives late.
    d, ref = await world.delivery(world.x, "hist")
    await world.attempt(d, "pending", 1, base + 5000, ref, code=503, error="http_503",
                        latency_ms=40, response="busy", next_at=base + 5500)
    await world.attempt(d, "delivered", 3, base + 7000, ref, code=204, latency_ms=8)
    await world.attempt(d, "pending", 2, base + 6000, ref, code=500, error="timeout")
    other, oref = await world.delivery(world.z, "z1")
    await world.attempt(other, "failed", 1, base, oref, code=410, error="gone")

    url = f"/api/v1/integrations/{world.x}/deliveries"
    r = await c.get(url, headers=auth)  # read-your-writes: no wait before this
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 50 and page["nextCursor"]
    first = page["items"][0]
    assert first["deliveryId"] == "msg_hist"
    assert (first["status"], first["attempts"], first["lastStatus"], first["updatedAt"]) == \
        ("delivered", 3, 204, base + 7000)
    assert first["activityId"] == "act-hist" and first["integrationId"] == world.x

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 17}
        if cursor:
            params["cursor"] = cursor
        body = (await c.get(url, params=params, headers=auth)).json()
        seen += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert [i["deliveryId"] for i in seen] == \
        ["msg_hist"] + [f"msg_x{n:03}" for n in range(119, -1, -1)]

    failed = (await c.get(url, params={"status": "failed", "limit": 500}, headers=auth)).json()
    assert [i["deliveryId"] for i in failed["items"]] == \
        [f"msg_x{n:03}" for n in range(110, -1, -10)]
    assert failed["nextCursor"] is None
    assert {i["lastStatus"] for i in failed["items"]} == {500}
    recent = (await c.get(url, params={"since": base + 1150}, headers=auth)).json()
    assert [i["deliveryId"] for i in recent["items"]] == \
        ["msg_hist", "msg_x119", "msg_x118", "msg_x117", "msg_x116", "msg_x115"]

    for params, field in [({"status": "lost"}, "status"), ({"limit": "0"}, "limit"),
                          ({"limit": "501"}, "limit"), ({"since": "yesterday"}, "since"),
                          ({"cursor": "%%%"}, "cursor")]:
        r = await c.get(url, params=params, headers=auth)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["errors"][0]["field"] == field

    detail = (await c.get("/api/v1/deliveries/msg_hist", headers=auth)).json()
    assert (detail["status"], detail["attemptCount"], detail["lastStatus"]) == \
        ("delivered", 3, 204)
    assert [(a["attempt"], a["status"], a["error"]) for a in detail["attempts"]] == \
        [(3, 204, None), (2, 500, "timeout"), (1, 503, "http_503")]
    assert detail["attempts"][2]["latencyMs"] == 40
    assert detail["attempts"][2]["response"] == "busy"

    # Walls: hub B sees nothing of hub A, and the other way round; admin sees both.
    for path in (url, "/api/v1/deliveries/msg_hist"):
        r = await c.get(path, headers=world.auth_b)
        assert r.status_code == 404
        assert r.json()["status"] == 404 and r.json()["errors"][0]["code"].endswith("not_found")
    assert (await c.get("/api/v1/deliveries/msg_z1", headers=auth)).status_code == 404
    assert (await c.get("/api/v1/deliveries/msg_z1", headers=world.hub.admin)).json()[
        "lastError"] == "gone"
    assert (await c.get(url, headers=world.hub.admin)).status_code == 200
    assert (await c.get("/api/v1/deliveries/nope", headers=auth)).status_code == 404
    assert (await c.get(url)).status_code == 401
    spec = (await c.get("/openapi.json")).json()
    assert "/api/v1/integrations/{integrationId}/deliveries" in spec["paths"]
    assert "/api/v1/jobs/{jobId}" in spec["paths"]


async def test_redeliver_by_id_and_by_status_reproduces_exactly_those(world: World) -> None:
    c, auth = world.c, world.auth_a
    now = int(time.time() * 1000)
    recs: dict[str, tuple[Delivery, DeliveryRef]] = {}
    for name, integration in [("d0", world.x), ("e0", world.y), ("d1", world.x),
                              ("d2", world.x), ("e1", world.y), ("d3", world.x),
                              ("d4", world.x), ("d5", world.x)]:
        recs[name] = await world.delivery(integration, name)
    plan = {"d0": ("delivered", now - 5000), "d1": ("failed", now - 3 * DAY_MS),
            "d2": ("failed", now - 4000), "d3": ("failed", now - 3000),
            "d4": ("pending", now - 2000), "e0": ("failed", now - 1000),
            "e1": ("failed", now - 1000)}
    for name, (status, at) in plan.items():
        d, ref = recs[name]
        await world.attempt(d, status, 1, at, ref)
    d5, _ = recs["d5"]
    await world.attempt(d5, "failed", 1, now - 2500)  # its source is unknown
    # Written in one batch, as the router does (the last of a batch included).
    for d, ref in await world.batch(world.x, ["b0", "b1", "b2"]):
        await world.attempt(d, "failed", 4, now - 2400, ref)

    before = await world.mark()
    r = await c.post(f"/api/v1/integrations/{world.x}/redeliver",
                     json={"deliveryId": "msg_d0"}, headers=auth)
    assert r.status_code == 202, r.text
    job = await world.job(r.json()["jobId"], auth)
    assert (job["state"], job["done"], job["total"], job["kind"]) == \
        ("done", 1, 1, "redeliver")
    got = await world.produced_since(before)
    d0, _ = recs["d0"]
    assert got == [_enc.encode(d0)]  # the very same delivery, nothing else

    before = await world.mark()
    r = await c.post(f"/api/v1/integrations/{world.x}/redeliver",
                     json={"status": "failed", "since": now - DAY_MS}, headers=auth)
    assert r.status_code == 202, r.text
    job = await world.job(r.json()["jobId"], auth)
    # d2 and d3 (d1 failed before `since`); d5 cannot be found, so it is skipped.
    assert (job["state"], job["done"], job["total"], job["skipped"]) == ("done", 5, 6, 1)
    assert ids_of(await world.produced_since(before)) == \
        ["msg_d2", "msg_d3", "msg_b0", "msg_b1", "msg_b2"]
    # The status in any case (switchboard.names): the very same choice.
    before = await world.mark()
    r = await c.post(f"/api/v1/integrations/{world.x}/redeliver",
                     json={"status": "FAILED", "since": now - DAY_MS}, headers=auth)
    assert r.status_code == 202, r.text
    job = await world.job(r.json()["jobId"], auth)
    assert (job["state"], job["done"], job["total"], job["skipped"]) == ("done", 5, 6, 1)
    assert ids_of(await world.produced_since(before)) == \
        ["msg_d2", "msg_d3", "msg_b0", "msg_b1", "msg_b2"]

    # Errors and walls.
    url = f"/api/v1/integrations/{world.x}/redeliver"
    for body in ({}, {"deliveryId": "msg_d0", "status": "failed"}, {"status": "lost"},
                 {"deliveryId": "msg_d0", "extra": 1}):
        assert (await c.post(url, json=body, headers=auth)).status_code == 400, body
    r = await c.post(url, json={"deliveryId": "msg_e0"}, headers=auth)  # y's, not x's
    assert r.status_code == 404
    r = await c.post(url, json={"deliveryId": "msg_d5"}, headers=auth)
    assert r.status_code == 409
    r = await c.post(url, json={"deliveryId": "msg_d0"}, headers=world.auth_b)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "integration_not_found"
    job_id = job["jobId"]
    r = await c.get(f"/api/v1/jobs/{job_id}", headers=world.auth_b)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "job_not_found"
    assert (await c.get(f"/api/v1/jobs/{job_id}", headers=world.hub.admin)).status_code == 200


async def test_replay_reproduces_exactly_the_window(world: World) -> None:
    c, auth = world.c, world.auth_a
    t0 = int(time.time() * 1000) - 3600_000
    await world.delivery(world.x, "early", timestamp_ms=t0 - 10_000)
    inside = []
    for n in range(5):
        await world.delivery(world.y, f"y-in{n}", timestamp_ms=t0 + n * 100)
        inside.append((await world.delivery(world.x, f"in{n}", timestamp_ms=t0 + n * 100))[0])
    # One batch, as the router writes them; its last record is the window's last.
    inside += [d for d, _ in await world.batch(world.x, ["in5", "in6", "in7"], t0 + 398)]
    await world.delivery(world.x, "late", timestamp_ms=t0 + 60_000)
    await world.delivery(world.z, "z-in", timestamp_ms=t0 + 50)

    url = f"/api/v1/integrations/{world.x}/replay"
    before = await world.mark()
    r = await c.post(url, json={"since": t0, "until": t0 + 400}, headers=auth)
    assert r.status_code == 202, r.text
    job = await world.job(r.json()["jobId"], auth)
    assert (job["state"], job["done"], job["total"], job["kind"]) == ("done", 8, 8, "replay")
    got = await world.produced_since(before)
    assert got == [_enc.encode(d) for d in inside]  # in their original order

    # An empty window is a job with nothing to do.
    r = await c.post(url, json={"since": t0 + 1000, "until": t0 + 2000}, headers=auth)
    job = await world.job(r.json()["jobId"], auth)
    assert (job["state"], job["done"], job["total"]) == ("done", 0, 0)

    for body in ({"since": t0, "until": t0 - 1}, {"since": t0, "until": t0 + 31 * DAY_MS},
                 {"since": -5}):
        r = await c.post(url, json=body, headers=auth)
        assert r.status_code == 400, body
        assert r.json()["errors"][0]["field"] in ("since", "until")
    assert (await c.post(url, json={"until": t0}, headers=auth)).status_code == 400
    r = await c.post(url, json={"since": t0}, headers=world.auth_b)
    assert r.status_code == 404


async def test_cli_lists_shows_and_redelivers(world: World) -> None:
    now = int(time.time() * 1000)
    for n, status in enumerate(["delivered", "failed", "pending"]):
        d, ref = await world.delivery(world.x, f"cli{n}")
        await world.attempt(d, status, n + 1, now - 1000 + n, ref,
                            code={"delivered": 200, "failed": 410, "pending": 503}[status])
    exe = str(Path(sys.executable).parent / "switchboard")
    common = ["--url", world.hub.base_url, "--token", world.auth_a["Authorization"][7:]]

    async def run(*args: str) -> tuple[int, str]:
        # The hub runs on this event loop: the CLI must not block it.
        proc = await asyncio.create_subprocess_exec(
            exe, "deliveries", *args, *common, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode()

    code, out = await run("list", world.x)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["DELIVERY", "ID", "STATUS", "ATTEMPTS"]
    rows = [line.split() for line in lines[1:]]
    assert [r[:4] for r in rows] == [["msg_cli2", "pending", "3", "503"],
                                     ["msg_cli1", "failed", "2", "410"],
                                     ["msg_cli0", "delivered", "1", "200"]]
    code, out = await run("list", world.x, "--status", "failed")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["msg_cli1"]

    code, out = await run("show", "msg_cli1")
    assert code == 0 and "failed" in out and "410" in out

    before = await world.mark()
    code, out = await run("redeliver", world.x, "--delivery", "msg_cli1")
    assert code == 0, out
    assert "redeliver: deliveries 1/1 (100 %) done" in out
    assert ids_of(await world.produced_since(before)) == ["msg_cli1"]

    code, out = await run("show", "msg_nope")
    assert code == 1 and "404" in out


async def test_running_jobs_per_hub_are_bounded(world: World) -> None:
    c = world.c
    api = next(w for w in world.hub.app.state.workers if hasattr(w, "deliveries"))
    jobs = api.deliveries.jobs
    gate = asyncio.Event()

    async def held(p: Any) -> list[Any]:
        await gate.wait()  # a job still choosing what to send
        return []

    held_ids = [await jobs.submit(world.hub_a, world.x, "replay", held)
                for _ in range(MAX_JOBS_PER_HUB)]
    r = await c.get(f"/api/v1/jobs/{held_ids[0]}", headers=world.auth_a)
    assert r.json()["state"] == "running"
    body = {"since": int(time.time() * 1000) - 1000}
    r = await c.post(f"/api/v1/integrations/{world.y}/replay", json=body, headers=world.auth_a)
    assert r.status_code == 429 and r.headers["retry-after"]
    assert r.json()["errors"][0]["code"] == "too_many_jobs"
    # Another hub is not held up by this one.
    r = await c.post(f"/api/v1/integrations/{world.z}/replay", json=body, headers=world.auth_b)
    assert r.status_code == 202
    assert (await world.job(r.json()["jobId"], world.auth_b))["state"] == "done"

    gate.set()
    for job_id in held_ids:
        assert (await world.job(job_id, world.auth_a))["state"] == "done"
    r = await c.post(f"/api/v1/integrations/{world.y}/replay", json=body, headers=world.auth_a)
    assert r.status_code == 202
