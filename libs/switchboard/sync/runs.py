"""A hub's sync runs, folded from `sync.runs` (a record per run) and from the profiles'
status records (`sync.status`); pure.

Every transition of a run is a write of its profile's status (`StatusRecord`): the
request (`jobId`, with `jobOrigin` / `jobInitial`), the worker taking it and executing it
(`runningJobId`, `startedAt`), its end (`lastJobId`, the modules' counts and either
`lastSuccessfulSync` or `errTimestamp` / `errMessage`). Folding those writes in order
gives each run's history without a store of its own; a run's state only moves forward,
so a record seen again (a topic read from the beginning) changes nothing.

That is not a history: `sync.status` is compacted to each profile's newest status, so a
process started later would see only every profile's last run. So each write of a status
also writes the runs it changed to `sync.runs` (`unsaved`: key the job id, value the
`Run`; a running run's progress at most every `PROGRESS_EVERY_MS`), a compacted table that
every API process folds as well (`apply_run`). Both sources meet in one view: a run's
state only moves forward, so whichever arrives first, the furthest state wins.

Bounded: at most `PER_PROFILE` runs per profile and `KEPT` in all, the oldest forgotten
first; a profile's delete (its status tombstone) forgets its runs.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from collections.abc import Collection
from typing import Literal

import msgspec
from msgspec import Struct

from switchboard.names import Vocabulary
from switchboard.sync.profiles import ModuleCounts, RunOrigin, StatusRecord, status_decoder

__all__ = ["KEPT", "PER_PROFILE", "PROGRESS_EVERY_MS", "RUN_STATES", "CursorError", "Run",
           "RunState", "RunsView", "run_decoder", "run_encoder", "trigger_of"]

RunState = Literal["requested", "queued", "running", "finished", "failed", "skipped"]
RUN_STATES = Vocabulary(("requested", "queued", "running", "finished", "failed", "skipped"))
_RANK: dict[str, int] = {"requested": 0, "queued": 1, "running": 2, "finished": 3,
                         "failed": 3, "skipped": 3}
PER_PROFILE = 500  # a schedule every 15 minutes: five days of runs
KEPT = 50_000
# A running run's progress reaches `sync.runs` at most this often (its status more often).
PROGRESS_EVERY_MS = 5_000
# What a user calls who asked: the API is a manual run, a source's notification a webhook.
_TRIGGERS: dict[str, str] = {"api": "manual", "schedule": "schedule", "webhook": "webhook",
                             "syncro": "webhook"}


class CursorError(ValueError):
    """A cursor this listing did not make."""


class Run(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A run as it stands; on `sync.runs` (key: its job id) the latest record is the truth."""

    job_id: str
    profile_id: str
    hub_id: str
    requested_at: int
    state: RunState = "requested"
    origin: RunOrigin | None = None  # None: its request record was compacted away
    initial: bool | None = None
    started_at: int | None = None
    finished_at: int | None = None
    done: int = 0
    total: int = 0
    modules: dict[str, ModuleCounts] | None = None
    err_message: str | None = None
    err_svc_id: str | None = None
    updated_at: int = 0  # when this state was written to `sync.runs` (its status's time)


run_encoder = msgspec.json.Encoder()
run_decoder = msgspec.json.Decoder(Run)


def trigger_of(origin: str | None) -> str | None:
    """manual | schedule | webhook (a Syncro webhook is a webhook too)."""
    return None if origin is None else _TRIGGERS.get(origin)


class RunsView:
    def __init__(self) -> None:
        self._runs: OrderedDict[str, Run] = OrderedDict()  # by job id, oldest seen first
        self._by_profile: dict[str, OrderedDict[str, Run]] = {}
        self._hub_profiles: dict[str, set[str]] = {}
        # What `sync.runs` last said of each run this view holds (the job id's record).
        self._saved: dict[str, Run] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One `sync.status` record (reports and other keys are ignored)."""
        if key is None or not key.startswith(b"status:"):
            return
        if value is None:
            self._forget_profile(key[len(b"status:"):].decode())
            return
        self.observe(status_decoder.decode(value))

    def apply_run(self, key: bytes | None, value: bytes | None) -> None:
        """One `sync.runs` record: a run as it stood (a tombstone forgets it)."""
        if key is None:
            return
        job_id = key.decode()
        if value is None:
            run = self._runs.get(job_id)
            if run is not None:
                self._drop(run)
            return
        new = run_decoder.decode(value)
        if new.job_id != job_id:
            return
        old = self._runs.get(job_id)
        if old is None:
            self._add(new)
        elif (_RANK[new.state], new.done) >= (_RANK[old.state], old.done):
            for field in new.__struct_fields__:  # the same object in every index
                setattr(old, field, getattr(new, field))
        self._saved[job_id] = msgspec.structs.replace(new)

    def unsaved(self, s: StatusRecord) -> list[Run]:
        """The runs status `s` (already observed) names whose state `sync.runs` does not
        hold yet: to write there. Progress alone counts every `PROGRESS_EVERY_MS`."""
        out: list[Run] = []
        for job_id in dict.fromkeys((s.job_id, s.running_job_id, s.last_job_id)):
            run = self._runs.get(job_id) if job_id is not None else None
            if run is None:
                continue
            saved = self._saved.get(run.job_id)
            if saved is not None and saved.state == run.state == "running" \
                    and s.updated_at - saved.updated_at < PROGRESS_EVERY_MS:
                continue
            if saved is None or msgspec.structs.replace(saved, updated_at=0) \
                    != msgspec.structs.replace(run, updated_at=0):
                out.append(msgspec.structs.replace(run, updated_at=s.updated_at))
        return out

    def mark_saved(self, run: Run) -> None:
        """`run` (from `unsaved`) is written to `sync.runs`."""
        if run.job_id in self._runs:
            self._saved[run.job_id] = run

    def job_ids_of(self, profile_id: str) -> list[str]:
        """The runs of `profile_id` this view holds (a deleted profile's, to tombstone)."""
        return list(self._by_profile.get(profile_id, ()))

    def profile_ids(self) -> set[str]:
        return set(self._by_profile)

    def observe(self, s: StatusRecord) -> None:
        """What one status write says about the runs it names."""
        if s.job_id is not None:
            run = self._run(s.job_id, s, s.last_request or s.updated_at)
            if run.origin is None and s.job_origin is not None:
                run.origin, run.initial = s.job_origin, s.job_initial
            # Set back to IDLE without being taken: a schedule slot fired twice, skipped.
            if s.sync_state == "IDLE" and s.job_id not in (s.running_job_id, s.last_job_id):
                self._advance(run, "skipped")
        if s.running_job_id is not None:
            run = self._run(s.running_job_id, s, s.updated_at)
            if s.sync_state == "EXECUTING":
                self._advance(run, "running")
                if run.state == "running":
                    run.started_at = s.started_at
                    run.done, run.total = s.done, s.total
            else:
                self._advance(run, "queued")
        if s.last_job_id is not None:
            run = self._run(s.last_job_id, s, s.started_at or s.updated_at)
            if _RANK[run.state] < 3:
                failed = s.err_timestamp is not None
                # While a newer run executes, `startedAt` is that run's.
                if run.started_at is None and not (s.running_job_id is not None
                                                   and s.sync_state == "EXECUTING"):
                    run.started_at = s.started_at
                run.state = "failed" if failed else "finished"
                run.finished_at = s.err_timestamp if failed else s.last_successful_sync
                run.done, run.total, run.modules = s.done, s.total, dict(s.modules)
                if failed:
                    run.err_message, run.err_svc_id = s.err_message, s.err_svc_id

    def get(self, job_id: str) -> Run | None:
        return self._runs.get(job_id)

    def query(self, hub_id: str, *, profile_ids: Collection[str] | None = None,
              state: str | None = None, limit: int = 50, cursor: str | None = None
              ) -> tuple[list[Run], str | None]:
        """One page of a hub's runs (of `profile_ids` only, if given), newest requested
        first, and the next page's cursor (None on the last)."""
        pids = self._hub_profiles.get(hub_id, set())
        if profile_ids is not None:
            pids = pids & set(profile_ids)
        after = _decode_cursor(cursor) if cursor is not None else None
        picked = [r for pid in pids for r in self._by_profile[pid].values()
                  if (state is None or r.state == state)
                  and (after is None or (r.requested_at, r.job_id) < after)]
        picked.sort(key=lambda r: (r.requested_at, r.job_id), reverse=True)
        page = picked[:limit]
        more = len(picked) > limit
        return page, (_encode_cursor(page[-1]) if more else None)

    def _run(self, job_id: str, s: StatusRecord, requested_at: int) -> Run:
        run = self._runs.get(job_id)
        if run is not None:
            return run
        return self._add(Run(job_id=job_id, profile_id=s.profile_id, hub_id=s.hub_id,
                             requested_at=requested_at))

    def _add(self, run: Run) -> Run:
        self._runs[run.job_id] = run
        runs = self._by_profile.setdefault(run.profile_id, OrderedDict())
        runs[run.job_id] = run
        self._hub_profiles.setdefault(run.hub_id, set()).add(run.profile_id)
        if len(runs) > PER_PROFILE:
            self._drop(next(iter(runs.values())))
        if len(self._runs) > KEPT:
            self._drop(next(iter(self._runs.values())))
        return run

    @staticmethod
    def _advance(run: Run, state: RunState) -> None:
        if _RANK[state] > _RANK[run.state]:
            run.state = state

    def _drop(self, run: Run) -> None:
        self._runs.pop(run.job_id, None)
        self._saved.pop(run.job_id, None)
        runs = self._by_profile.get(run.profile_id)
        if runs is not None:
            runs.pop(run.job_id, None)
            if not runs:
                self._by_profile.pop(run.profile_id, None)
                pids = self._hub_profiles.get(run.hub_id, set())
                pids.discard(run.profile_id)
                if not pids:
                    self._hub_profiles.pop(run.hub_id, None)

    def _forget_profile(self, profile_id: str) -> None:
        runs = self._by_profile.pop(profile_id, None)
        if not runs:
            return
        hub_id = next(iter(runs.values())).hub_id
        for job_id in runs:
            self._runs.pop(job_id, None)
            self._saved.pop(job_id, None)
        pids = self._hub_profiles.get(hub_id, set())
        pids.discard(profile_id)
        if not pids:
            self._hub_profiles.pop(hub_id, None)


def _encode_cursor(run: Run) -> str:
    raw = f"{run.requested_at}:{run.job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, job_id = raw.partition(":")
        if not sep or not job_id or not at.isdigit() or len(at) > 19:
            raise ValueError(cursor)
        return int(at), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CursorError("not a cursor of this listing") from None
