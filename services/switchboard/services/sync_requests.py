"""Asking for a sync run, in one place for the API, schedules and change notifications:
the profile's status goes to REQUESTED, ``sync:requested`` is published, then the
request is put on `sync.jobs` (keyed by profile).

Triggers (webhooks, a Syncro customer created) coalesce: while a requested run has not
been taken by a worker, another trigger joins it instead of queueing a second one (the
run reads everything changed up to when it starts). Within a process the check and the
request are one step per profile; across processes two triggers at the same instant may
still both queue (a second run then finds little to do).
"""

from __future__ import annotations

import asyncio
import logging
from weakref import WeakValueDictionary

import msgspec

from switchboard import clock
from switchboard.errors import SwitchboardError
from switchboard.ids import new_id
from switchboard.kafka import SYNC_STATUS
from switchboard.model import Activity
from switchboard.services.runtime import Runtime
from switchboard.services.sync_store import SyncStore
from switchboard.sync.events import sync_event
from switchboard.sync.profiles import ProfileRecord, RunJob, RunOrigin, StatusRecord
from switchboard.sync.tables import status_key

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()
PENDING_STALE_MS = 600_000
_locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()


def _lock(profile_id: str) -> asyncio.Lock:
    lock = _locks.get(profile_id)
    if lock is None:
        lock = _locks[profile_id] = asyncio.Lock()
    return lock


async def publish_quietly(runtime: Runtime, activity: Activity) -> None:
    """Publish a `sync:*` event; a broker failure is logged, not the run's failure (the
    status on `sync.status` stays the truth)."""
    try:
        await runtime.publish(activity)
    except SwitchboardError as exc:
        log.warning("sync event %s not published: %r", activity.type, exc)


async def request_run(runtime: Runtime, store: SyncStore, rec: ProfileRecord, *,
                      origin: RunOrigin, initial: bool = False, since: int | None = None,
                      slot: int | None = None, job_id: str | None = None,
                      coalesce: bool = False) -> RunJob | None:
    """Request a run of `rec`; None when `coalesce` and a requested run is still waiting."""
    async with _lock(rec.profile_id):
        old = store.status.status.get(rec.profile_id) or StatusRecord(
            profile_id=rec.profile_id, hub_id=rec.hub_id)
        now = clock.now_ms()
        # A request that never reached a worker (its process died between the status and
        # the request) must not swallow triggers for ever.
        if coalesce and old.pending() and now - (old.last_request or 0) < PENDING_STALE_MS:
            return None
        job = RunJob(job_id=job_id or new_id(), profile_id=rec.profile_id, hub_id=rec.hub_id,
                     requested_at=now, initial=initial, since=since, origin=origin,
                     slot=slot)
        # Requested before the request exists: the worker's later states always win.
        status = msgspec.structs.replace(old, sync_state="REQUESTED", job_id=job.job_id,
                                         job_origin=origin, job_initial=initial,
                                         last_request=now, updated_at=now)
        await store.write(SYNC_STATUS, status_key(rec.profile_id), _enc.encode(status))
        await publish_quietly(runtime, sync_event("requested", job, status,
                                                  profile_name=rec.name, now_ms=now))
        await store.request(rec.profile_id.encode(), _enc.encode(job))
        return job
