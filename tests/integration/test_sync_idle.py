"""An idle sync worker follows only what it needs (`sync_store`): with no profiles, once
its scheduler owns its partitions, `sync.profiles` alone; `sync.pairs` from the first run
request. On a real broker, with `testfile` sides."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from switchboard.kafka import SYNC_PAIRS, SYNC_PROFILES, SYNC_STATUS
from tests.conftest import RunningHub, make_settings
from tests.integration.test_sync_prune import worker_of
from tests.integration.test_sync_runs import body, run_and_wait, sides


async def test_an_idle_worker_follows_sync_profiles_alone_until_a_run(
        broker: Any, tmp_path: Path) -> None:
    settings = make_settings(broker, sync_test_connectors=True)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        worker = worker_of(hub)
        store = worker.store
        deadline = time.monotonic() + 60
        while not worker.scheduler.owned:  # set once its profiles have been read
            assert time.monotonic() < deadline, "the scheduler owns no partition"
            await asyncio.sleep(0.05)
        assert store.following(SYNC_PROFILES)
        assert not store.following(SYNC_STATUS) and not store.following(SYNC_PAIRS)

        c = hub.client
        hub_id, auth = await hub.create_hub("a")
        portal, mailbox = sides(tmp_path)
        portal.create("contact", first_name="ada", email="ada@example.test")
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth,
                         json=body(portal, mailbox, review=False, modules=("contacts",)))
        assert r.status_code == 201, r.text
        assert not store.following(SYNC_PAIRS)  # the API reads profiles and status only
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"
        await run_and_wait(c, url, auth, initial=True)
        assert store.following(SYNC_PAIRS) and store.pairs.count(r.json()["profileId"]) == 1
    finally:
        await hub.stop()
