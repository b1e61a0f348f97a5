"""Schedules, fired once across any number of sync workers without a coordinator.

A profile's run requests go to one partition of `sync.jobs` (keyed by profile id), and
the consumer group gives each partition to one member: that member fires the profile's
schedule. A fire is an ordinary run request whose job id is derived from the profile and
the slot (`switchboard.sync.schedule`), so it is the same request whoever fires it.

Around a rebalance a slot may be fired twice — by the member that lost the partition
just before it did, and by the new owner, which only knows the slots whose runs have
finished (`lastSlotDone` on the profile's status) — but both requests sit in the same
partition, in order: the first runs, the second is recognised by its slot and skipped.
A member killed before its fire reached the broker leaves the slot unfired and its
successor fires it (slots are computed, never lost). Slots missed while no member was
alive fire one after another, at most `MAX_BEHIND` of them.

It reads only what it needs (`sync_store`): `sync.profiles` once it owns a partition,
`sync.status` (the slots done) from the first schedule that falls due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiokafka.partitioner import murmur2

from switchboard import clock
from switchboard.errors import SwitchboardError
from switchboard.ids import stable_id
from switchboard.kafka import SYNC_PROFILES, SYNC_STATUS
from switchboard.services.sync_requests import request_run
from switchboard.supervision import supervised
from switchboard.sync.schedule import next_fire

if TYPE_CHECKING:
    from switchboard.services.sync_worker import SyncWorker

log = logging.getLogger(__name__)
MAX_BEHIND = 10


def slot_job_id(profile_id: str, slot: int) -> str:
    return stable_id("sync-slot", profile_id, str(slot))


def partition_of(profile_id: str, partitions: int) -> int:
    """The `sync.jobs` partition of a profile's requests: Kafka's default partitioner."""
    return int((murmur2(profile_id.encode()) & 0x7FFFFFFF) % partitions)


class Scheduler:
    def __init__(self, worker: SyncWorker) -> None:
        self.worker = worker
        s = worker.runtime.settings
        self.minute_ms = max(1, int(s.sync_schedule_minute_s * 1000))
        # A tenth of a minute, at most a second: a slot fires within that of its time.
        self.tick_s = max(0.05, min(1.0, s.sync_schedule_minute_s / 10))
        self._fired: dict[str, int] = {}  # profile → last slot fired by this member
        self._owned: frozenset[int] = frozenset()
        self._task: asyncio.Task[None] | None = None

    @property
    def owned(self) -> frozenset[int]:
        """The `sync.jobs` partitions whose profiles this member schedules (read)."""
        return self._owned

    def start(self) -> None:
        self._task = supervised(self._loop(), name="sync-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick(clock.now_ms())
            except asyncio.CancelledError:
                raise
            except SwitchboardError as exc:
                log.warning("sync scheduler: %r; trying again", exc)
                await asyncio.sleep(1.0)

    async def tick(self, now: int) -> None:
        consumer = self.worker._consumer
        if consumer is None:
            return
        topic = self.worker.store.jobs_topic
        owned = frozenset(tp.partition for tp in consumer.assignment() if tp.topic == topic)
        store = self.worker.store
        if owned != self._owned:
            # New partitions: their profiles' schedules (the slots their last owner's runs
            # recorded are read before anything fires, below).
            await store.sync(SYNC_PROFILES)
            self._owned = owned
        if not owned:
            return
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return
        due = self._due(now, owned, len(partitions))
        if not due:
            return
        # The newest statuses (slots done elsewhere); the first due schedule starts the
        # status reader, so until then a hub without schedules does not follow it.
        await store.sync(SYNC_PROFILES, SYNC_STATUS)
        for pid, _ in due:
            rec = self.worker.store.profiles.profiles.get(pid)
            slot = self._next(pid, now)
            if rec is None or slot is None or slot > now:
                continue
            await request_run(self.worker.runtime, self.worker.store, rec, origin="schedule",
                              slot=slot, job_id=slot_job_id(pid, slot))
            self._fired[pid] = slot
            log.info("sync schedule: profile %s slot %d fired", pid, slot)

    def _next(self, pid: str, now: int) -> int | None:
        store = self.worker.store
        rec = store.profiles.profiles.get(pid)
        if rec is None or rec.schedule is None or not rec.connected:
            return None
        status = store.status.status.get(pid)
        done = status.last_slot_done if status is not None else None
        last = max(rec.schedule_set_at, done or 0, self._fired.get(pid, 0))
        return next_fire(rec.schedule, last, now, minute_ms=self.minute_ms,
                         max_behind=MAX_BEHIND)

    def _due(self, now: int, owned: frozenset[int], partitions: int) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        hubs = self.worker.runtime.registry.view.hubs
        for pid, rec in list(self.worker.store.profiles.profiles.items()):
            # A deleted hub's profiles stay on the topic; they fire no more.
            if rec.schedule is None or not rec.schedule.enabled or rec.hub_id not in hubs:
                continue
            if partition_of(pid, partitions) not in owned:
                continue
            slot = self._next(pid, now)
            if slot is not None and slot <= now:
                out.append((pid, slot))
        return out
