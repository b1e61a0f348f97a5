"""Redelivery and replay jobs: their progress records (the compacted `jobs` topic) and the
view every API process folds them into (pure: no I/O)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import msgspec
from msgspec import Struct

JobKind = Literal["redeliver", "replay"]
JobState = Literal["running", "done", "failed"]

MAX_JOB_RECORDS = 100_000  # deliveries one job may re-produce
MAX_REPLAY_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_JOBS_PER_HUB = 3  # running at once in one API process
# A running job writes progress at least this often; silent for longer means its process
# died, and the job is shown as failed instead of running forever.
HEARTBEAT_MS = 5_000
ABANDONED_AFTER_MS = 60_000
_KEPT = 100_000  # jobs a view remembers


class JobRecord(Struct, rename="camel", omit_defaults=True):
    """A job's state; the latest record per job id is the truth."""

    job_id: str
    hub_id: str
    integration_id: str
    kind: JobKind
    state: JobState
    done: int  # deliveries re-produced
    total: int  # deliveries chosen (a replay knows it once its window is scanned)
    created_at: int
    updated_at: int
    skipped: int = 0  # chosen, but their record is gone or is not this integration's
    error: str | None = None


job_encoder = msgspec.json.Encoder()
job_decoder = msgspec.json.Decoder(JobRecord)


class JobView:
    """Last write wins per job id; a tombstone forgets the job."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        job_id = key.decode()
        if value is None:
            self._jobs.pop(job_id, None)
            return
        self._jobs[job_id] = job_decoder.decode(value)
        self._jobs.move_to_end(job_id)
        if len(self._jobs) > _KEPT:
            self._jobs.popitem(last=False)

    def get(self, job_id: str, now_ms: int) -> JobRecord | None:
        """The job as it stands at `now_ms` (a silent running job reads as failed)."""
        job = self._jobs.get(job_id)
        if job is not None and job.state == "running" \
                and now_ms - job.updated_at > ABANDONED_AFTER_MS:
            return msgspec.structs.replace(job, state="failed", error="abandoned")
        return job
