"""A deleted sync profile leaves nothing live on `sync.pairs` or `sync.status`: the sync
worker tombstones its pairs, watermarks, status and report (switchboard.sync.prune), and
a worker started later finishes a prune that was left half-done. On a real broker, with
`testfile` sides."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from switchboard.kafka import (
    SYNC_PAIRS,
    SYNC_PROFILES,
    SYNC_STATUS,
    make_producer,
)
from switchboard.kafka_topics import ensure_topics
from switchboard.services.sync_worker import SyncWorker
from switchboard.settings import Settings
from switchboard.sync.ops import Watermark
from switchboard.sync.pairs import Pair, PairSide
from switchboard.sync.profiles import ConnectorSpec, ProfileRecord
from switchboard.sync.tables import pair_key, status_key, watermark_key
from tests.conftest import RunningHub, make_settings
from tests.integration.test_sync_runs import body, run_and_wait, sides
from tests.topics import read_topics


def worker_of(hub: RunningHub) -> SyncWorker:
    [worker] = [w for w in hub.app.state.workers if isinstance(w, SyncWorker)]
    return worker


async def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        await asyncio.sleep(0.05)


async def latest(settings: Settings, table: str) -> dict[bytes, bytes | None]:
    """Each key's last record on `table`, read from offset 0 by a fresh consumer."""
    out: dict[bytes, bytes | None] = {}
    for _topic, key, value in await read_topics(settings, [table]):
        if key is not None:
            out[key] = value
    return out


def of_profile(keys: dict[bytes, bytes | None], pid: str) -> dict[bytes, bytes | None]:
    return {k: v for k, v in keys.items()
            if k.split(b":")[1:2] == [pid.encode()]}


async def test_deleting_a_profile_tombstones_its_pairs_watermarks_and_status(
        broker: Any, tmp_path: Path) -> None:
    settings = make_settings(broker, sync_test_connectors=True)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        c = hub.client
        hub_id, auth = await hub.create_hub("a")
        portal, mailbox = sides(tmp_path)
        for name in ("ada", "bob", "cy"):
            portal.create("contact", first_name=name, email=f"{name}@example.test")
        base = f"/api/v1/hubs/{hub_id}/syncProfiles"
        urls = []
        for review in (False, True):  # the second stays in review: it keeps a report
            r = await c.post(base, json=body(portal, mailbox, review=review,
                                             modules=("contacts",)), headers=auth)
            assert r.status_code == 201, r.text
            urls.append(f"{base}/{r.json()['profileId']}")
        doomed, kept = urls[0].rsplit("/", 1)[1], urls[1].rsplit("/", 1)[1]
        await run_and_wait(c, urls[0], auth, initial=True)
        await run_and_wait(c, urls[1], auth, initial=True)
        r = await c.put(urls[1] + "/allowSync", headers=auth)
        assert r.status_code == 200, r.text
        done = await run_and_wait(c, urls[1], auth)
        assert done["status"]["modules"]["contacts"]["matched"] == 3
        store = worker_of(hub).store
        assert store.pairs.count(doomed) == 3 and store.pairs.count(kept) == 3
        assert store.pairs.watermark(doomed, "contacts") != Watermark()
        before = of_profile(await latest(settings, SYNC_PAIRS), doomed)
        assert len(before) == 4  # three pairs and the watermark

        # A report too, so that the delete has one of each to remove.
        r = await c.put(urls[0], json={"modules": {"contacts": {"needReview": True}}},
                        headers=auth)
        assert r.status_code == 200, r.text
        await run_and_wait(c, urls[0], auth)
        assert (await c.get(urls[0] + "/report", headers=auth)).status_code == 200

        assert (await c.delete(urls[0], headers=auth)).status_code == 204
        await eventually(lambda: store.pairs.count(doomed) == 0
                         and doomed not in store.pairs.profile_ids()
                         and doomed not in store.status.status
                         and doomed not in store.status.reports, "pruned in memory")
        # The other profile keeps everything, and still syncs.
        assert store.pairs.count(kept) == 3
        mailbox.create("contact", first_name="dee", email="dee@example.test")
        done = await run_and_wait(c, urls[1], auth)
        assert done["status"]["modules"]["contacts"]["created"] == 1
        assert store.pairs.count(kept) == 4
    finally:
        await hub.stop()

    # A fresh reader of the topics finds a tombstone as the last word of every key the
    # deleted profile had (compaction, which removes them, runs on the broker's clock).
    pairs = await latest(settings, SYNC_PAIRS)
    assert of_profile(pairs, doomed) == dict.fromkeys(before, None)
    assert len([v for v in of_profile(pairs, kept).values() if v is not None]) == 5
    status = await latest(settings, SYNC_STATUS)
    assert status[status_key(doomed)] is None and status[b"report:" + doomed.encode()] is None
    assert status[status_key(kept)] is not None


async def test_a_worker_started_later_finishes_a_half_done_prune(
        broker: Any, tmp_path: Path) -> None:
    settings = make_settings(broker, sync_test_connectors=True)
    # What a worker stopped half-way through a prune leaves: a deleted profile (its record
    # and delete marker) with some of its pairs, a watermark and its status still live.
    ghost = "ghost" + str(time.time_ns())
    pairs = [Pair(kind="contact", portal=PairSide(id=f"P{i}"), mailbox=PairSide(id=f"M{i}"))
             for i in range(50)]
    await ensure_topics(settings)  # as the hub makes them (one partition, compacted)
    producer = make_producer(settings)
    await producer.start()
    try:
        profile = ProfileRecord(profile_id=ghost, hub_id="h", name="g", modules={},
                                portal=ConnectorSpec(kind="testfile"),
                                mailbox=ConnectorSpec(kind="testfile"),
                                created_at=1, updated_at=1)
        await producer.send_and_wait(settings.topic(SYNC_PROFILES),
                                     msgspec.json.encode(profile), key=ghost.encode())
        for pair in pairs:
            await producer.send_and_wait(settings.topic(SYNC_PAIRS), msgspec.json.encode(pair),
                                key=pair_key(ghost, "contacts", pair))
        await producer.send_and_wait(settings.topic(SYNC_PAIRS), msgspec.json.encode(Watermark()),
                            key=watermark_key(ghost, "contacts"))
        await producer.send_and_wait(settings.topic(SYNC_STATUS), msgspec.json.encode(
            {"profileId": ghost, "hubId": "h"}), key=status_key(ghost))
        await producer.send_and_wait(settings.topic(SYNC_PROFILES), None, key=ghost.encode())
    finally:
        await producer.stop()

    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        c = hub.client
        hub_id, auth = await hub.create_hub("a")
        portal, mailbox = sides(tmp_path)
        portal.create("contact", first_name="ada", email="ada@example.test")
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth,
                         json=body(portal, mailbox, review=False, modules=("contacts",)))
        assert r.status_code == 201, r.text
        # The worker reads its tables with its first run, and prunes what it finds.
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"
        await run_and_wait(c, url, auth, initial=True)
        store = worker_of(hub).store
        await eventually(lambda: ghost not in store.pairs.profile_ids()
                         and ghost not in store.status.status, "pruned")
        assert store.pairs.count(r.json()["profileId"]) == 1
    finally:
        await hub.stop()
    left = of_profile(await latest(settings, SYNC_PAIRS), ghost)
    assert len(left) == 51 and set(left.values()) == {None}
    assert (await latest(settings, SYNC_STATUS))[status_key(ghost)] is None
