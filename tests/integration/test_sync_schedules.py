"""Schedules on a real broker: two `switchboard serve sync` processes share the `sync`
group, a profile fires every 2 "minutes" (a test's minute is a second:
SWITCHBOARD_SYNC_SCHEDULE_MINUTE_S=1), and the worker that fires it is SIGKILLed half-way.
Counted from the `sync:finished` events on the activities topic: every slot from the
first to the last ran exactly once — none skipped by the failover, none doubled."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import msgspec

from switchboard.kafka import ACTIVITIES
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.integration.test_resilience import Service, _stop_all
from tests.integration.test_sync_runs import body, emails, sides
from tests.topics import read_topics

PERIOD_MS = 2000


async def slots_done(c: Any, url: str, auth: dict[str, str]) -> int:
    r = await c.get(url, headers=auth)
    assert r.status_code == 200, r.text
    return int(r.json()["status"].get("lastSlotDone") or 0)


async def wait_slot(c: Any, url: str, auth: dict[str, str], at_least: int,
                    workers: list[Service], timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while (done := await slots_done(c, url, auth)) < at_least:
        assert time.monotonic() < deadline, "\n".join(w.log_tail() for w in workers)
        await asyncio.sleep(0.2)
    return done


async def test_each_slot_runs_once_across_two_workers_and_a_killed_one(
        broker: Any, tmp_path: Path) -> None:
    settings: Settings = make_settings(broker, sync_test_connectors=True,
                                       sync_schedule_minute_s=1.0)
    api = await RunningHub(settings, ["api"]).start()
    workers: list[Service] = []
    try:
        c = api.client
        hub_id, auth = await api.create_hub("sched")
        workers += [Service("sync", settings, tmp_path), Service("sync", settings, tmp_path)]
        await asyncio.gather(*(w.wait_ready() for w in workers))
        portal, mailbox = sides(tmp_path)
        portal.create("contact", first_name="Ada", email="ada@example.test")
        spec = body(portal, mailbox, review=False, modules=("contacts",))
        spec["schedule"] = {"intervalType": 0, "interval": 2}
        r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", json=spec, headers=auth)
        assert r.status_code == 201, r.text
        pid = r.json()["profileId"]
        url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"

        first = await wait_slot(c, url, auth, 1, workers)
        await wait_slot(c, url, auth, first + 3 * PERIOD_MS, workers)
        assert emails(mailbox) == ["ada@example.test"]
        # Kill the member that fires this profile (it logs each fire).
        [owner] = [w for w in workers if f"profile {pid} slot" in w.log_path.read_text()]
        owner.sigkill()
        killed_at = int(time.time() * 1000)
        portal.create("contact", first_name="Bob", email="bob@example.test")
        # The survivor takes the partition over (a session timeout later) and catches up.
        last = await wait_slot(c, url, auth, killed_at + 5 * PERIOD_MS, workers)
        assert "bob@example.test" in emails(mailbox)
        # Its fires are in its own log now.
        [survivor] = [w for w in workers if w is not owner]
        assert f"profile {pid} slot" in survivor.log_path.read_text()

        finished: collections.Counter[int] = collections.Counter()
        for _topic, _key, value in await read_topics(settings, [ACTIVITIES]):
            activity = msgspec.json.decode(value or b"{}")
            data = (activity.get("event") or {}).get("data") or {}
            if activity.get("type") == "sync:finished" and data.get("profileId") == pid:
                finished[data["slot"]] += 1
        slots = sorted(s for s in finished if s <= last)
        assert slots[0] <= first
        assert slots == list(range(slots[0], last + 1, PERIOD_MS)), slots  # none skipped
        assert all(finished[s] == 1 for s in slots), finished  # none doubled
        assert len(slots) >= 9
    finally:
        await _stop_all(workers)
        for w in workers:
            w.close_log()
        await api.stop()
