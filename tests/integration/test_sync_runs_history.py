"""A hub's sync run history survives a restart (`sync.runs`): several runs of one profile,
then a brand-new API process over the topics *as compaction leaves them* (each key's
newest record only, so `sync.status` holds the profile's last run alone) lists every run
with its final state; another hub still gets 404; deleting the profile tombstones its
runs there, and a later fresh process lists none.

Compaction cannot be forced on a broker (Tansu never compacts; Kafka compacts closed
segments when it likes), so the "restarted deployment" is a copy: each table's newest
record per key, headers (the record MAC) included, written to a fresh topic prefix that
the new process uses with the same secret key. The MAC covers the topic's name without
its prefix, so the copies verify as the originals do.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from switchboard.kafka import REGISTRY, SYNC_PROFILES, SYNC_RUNS, SYNC_STATUS
from switchboard.kafka_topics import ensure_topics
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.integration.test_sync_runs import body, run_and_wait, sides

TABLES = (REGISTRY, SYNC_PROFILES, SYNC_STATUS, SYNC_RUNS)
Kept = dict[bytes, tuple[bytes | None, list[tuple[str, bytes]]]]


async def compacted(settings: Settings, table: str) -> Kept:
    """Each key's newest record on `table` (value and headers): what compaction keeps."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(table), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: Kept = {}
        async with asyncio.timeout(60):
            while await consumer.position(tp) < end:
                for rs in (await consumer.getmany(timeout_ms=500)).values():
                    for r in rs:
                        assert r.key is not None
                        out[r.key] = (r.value, list(r.headers))
        return out
    finally:
        await consumer.stop()


async def restarted(settings: Settings) -> Settings:
    """A fresh prefix holding what compaction would leave of the hub's tables."""
    fresh = msgspec.structs.replace(settings, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    await ensure_topics(fresh)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for table in TABLES:
            for key, (value, headers) in (await compacted(settings, table)).items():
                await producer.send_and_wait(fresh.topic(table), value, key=key,
                                             headers=headers)
    finally:
        await producer.stop()
    return fresh


async def listing(hub: RunningHub, hub_id: str, auth: dict[str, str]) -> Any:
    r = await hub.client.get(f"/api/v1/hubs/{hub_id}/syncJobs", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_the_run_history_survives_a_restart_after_compaction(
        broker: Any, tmp_path: Path) -> None:
    settings = make_settings(broker, sync_test_connectors=True)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        c = hub.client
        hub_id, auth = await hub.create_hub("history")
        _other_id, other_auth = await hub.create_hub("others")
        portal, mailbox = sides(tmp_path)
        portal.create("contact", first_name="Ada", email="ada@example.test")
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles",
                         json=body(portal, mailbox, review=False, modules=("contacts",)),
                         headers=auth)
        assert r.status_code == 201, r.text
        pid = r.json()["profileId"]
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
        ids = [(await run_and_wait(c, url, auth, initial=True))["status"]["lastJobId"]]
        portal.create("contact", first_name="Bob", email="bob@example.test")
        ids.append((await run_and_wait(c, url, auth))["status"]["lastJobId"])
        portal.set_meta("token", "changed behind the profile's back")
        ids.append((await run_and_wait(c, url, auth))["status"]["lastJobId"])
        before = await listing(hub, hub_id, auth)
        assert [(i["jobId"], i["state"]) for i in before] == [
            (ids[2], "failed"), (ids[1], "finished"), (ids[0], "finished")], before
    finally:
        await hub.stop()

    # What compaction leaves: the profile's last status (its last run) and every run.
    fresh = await restarted(settings)
    kept = await compacted(fresh, SYNC_STATUS)
    assert [k for k in kept if k.startswith(b"status:")] == [f"status:{pid}".encode()]
    second = await RunningHub(fresh, ["api"]).start()
    try:
        after = await listing(second, hub_id, auth)
        assert after == before, after  # the older runs too, with their final states
        assert after[2]["modules"]["contacts"]["created"] == 1, after
        assert after[1]["modules"]["contacts"]["created"] == 1, after
        assert after[2]["type"] == "initial" and after[2]["trigger"] == "manual", after
        jobs = f"/api/v1/hubs/{hub_id}/syncJobs"
        r = await second.client.get(f"{jobs}/{ids[0]}", headers=auth)
        assert r.status_code == 200 and r.json() == before[2], r.text
        # Another hub's token: 404 for the listing and for one of its runs.
        assert (await second.client.get(jobs, headers=other_auth)).status_code == 404
        assert (await second.client.get(f"{jobs}/{ids[0]}",
                                         headers=other_auth)).status_code == 404
        # A delete tombstones the runs on `sync.runs`.
        assert (await second.client.delete(url, headers=auth)).status_code == 204
        assert await listing(second, hub_id, auth) == []
        runs = await compacted(fresh, SYNC_RUNS)
        assert {k.decode(): v for k, (v, _h) in runs.items()} == dict.fromkeys(ids), runs
    finally:
        await second.stop()

    # And a process started after the delete lists none of them.
    third_settings = await restarted(fresh)
    gone = await compacted(third_settings, SYNC_RUNS)  # tombstones outlive their records
    assert {k.decode() for k in gone} == set(ids) and all(
        v is None for v, _h in gone.values()), gone
    third = await RunningHub(third_settings, ["api"]).start()
    try:
        r = await third.client.get(f"/api/v1/hubs/{hub_id}/syncJobs/{ids[0]}", headers=auth)
        assert r.status_code == 404, r.text
        assert await listing(third, hub_id, auth) == []
    finally:
        await third.stop()
