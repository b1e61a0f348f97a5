"""`sync:*` events: a profile's run status transitions as activities for the hub's System
integrations (filters ``sync:*`` or one type); pure.

- ``sync:requested`` — a run was asked for (API, schedule slot or change notification);
- ``sync:queued`` — a worker took it;
- ``sync:started`` — it is executing;
- ``sync:finished`` / ``sync:failed`` — it ended (IDLE), with the modules' counts, and
  `lastSuccessfulSync` or `errMessage` / `errSvcId`.

One conversation per profile (events of a profile are routed in order) and an id per run
and transition: an event published again (a worker killed after publishing) is the same
activity, which the router and receivers recognise.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from switchboard.ids import stable_id
from switchboard.model import Activity, Event, Sender
from switchboard.sync.profiles import RunJob, StatusRecord

__all__ = ["SYNC_EVENTS", "SYNC_EVENT_FILTERS", "Transition", "conversation_of", "sync_event"]

Transition = Literal["requested", "queued", "started", "finished", "failed"]
SYNC_EVENTS = tuple(f"sync:{t}" for t in ("requested", "queued", "started", "finished",
                                          "failed"))
SYNC_EVENT_FILTERS = frozenset({*SYNC_EVENTS, "sync:*"})
CHANNEL = "Sync"


def conversation_of(profile_id: str) -> str:
    return stable_id("sync-profile", profile_id)


def sync_event(transition: Transition, job: RunJob, status: StatusRecord, *,
               profile_name: str, now_ms: int) -> Activity:
    """The event of one transition of `job`'s run; `status` as it stands after it."""
    data: dict[str, Any] = {
        "profileId": job.profile_id, "jobId": job.job_id, "origin": job.origin,
        "syncState": status.sync_state, "requestedAt": job.requested_at,
    }
    if job.slot is not None:
        data["slot"] = job.slot
    if transition in ("finished", "failed"):
        data["modules"] = msgspec.to_builtins(status.modules)
        data["progress"] = {"done": status.done, "total": status.total}
        data["lastSuccessfulSync"] = status.last_successful_sync
        if transition == "failed":
            data["errMessage"] = status.err_message
            data["errSvcId"] = status.err_svc_id
    return Activity(
        activity_id=stable_id("sync-event", job.job_id, transition),
        hub_id=job.hub_id,
        integration_id=job.profile_id,
        channel_id=CHANNEL,
        type=f"sync:{transition}",
        conversation_id=conversation_of(job.profile_id),
        sender=Sender(id=f"sync-profile:{job.profile_id}", name=profile_name[:200]),
        timestamp=now_ms,
        event=Event(name=transition, data=data),
    )
