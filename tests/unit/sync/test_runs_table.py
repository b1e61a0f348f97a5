"""The run records on `sync.runs` (`switchboard.sync.runs`): what a status write makes the
writer send, and a view folded from those records after compaction."""

from __future__ import annotations

import msgspec

from switchboard.sync import runs as runs_mod
from switchboard.sync.profiles import ModuleCounts, StatusRecord
from switchboard.sync.runs import PROGRESS_EVERY_MS, Run, RunsView, run_decoder, run_encoder
from switchboard.sync.tables import status_key

_enc = msgspec.json.Encoder()
Log = list[tuple[bytes, bytes | None]]
r = msgspec.structs.replace


class Writer:
    """A process writing status as `SyncStore.write` does: the status, then its runs."""

    def __init__(self) -> None:
        self.view = RunsView()
        self.status: list[StatusRecord] = []
        self.runs: Log = []

    def write(self, s: StatusRecord) -> StatusRecord:
        self.status.append(s)
        self.view.apply(status_key(s.profile_id), _enc.encode(s))
        for run in self.view.unsaved(s):
            self.runs.append((run.job_id.encode(), run_encoder.encode(run)))
            self.view.mark_saved(run)
        return s


def lifecycle(w: Writer, s: StatusRecord, job: str, at: int, *, progress: int = 1,
              error: str | None = None) -> StatusRecord:
    s = w.write(r(s, sync_state="REQUESTED", job_id=job, job_origin="schedule",
                  job_initial=False, last_request=at, updated_at=at))
    s = w.write(r(s, sync_state="QUEUED", running_job_id=job, updated_at=at + 1))
    s = w.write(r(s, sync_state="EXECUTING", started_at=at + 2, done=0, total=0,
                  updated_at=at + 2))
    for i in range(progress):  # a status write every 100 ms
        s = w.write(r(s, done=i + 1, total=progress, updated_at=at + 3 + 100 * i))
    end = at + 10 + 100 * progress
    counts = {"contacts": ModuleCounts(created=progress)}
    if error is None:
        return w.write(r(s, sync_state="IDLE", last_job_id=job, running_job_id=None,
                         modules=counts, last_successful_sync=end, err_message=None,
                         err_svc_id=None, err_timestamp=None, updated_at=end))
    return w.write(r(s, sync_state="IDLE", last_job_id=job, running_job_id=None,
                     modules=counts, err_message=error, err_svc_id="portal",
                     err_timestamp=end, updated_at=end))


def compact(log: Log) -> Log:
    """What compaction leaves: each key's newest record, in the order of those records."""
    last = {k: i for i, (k, _v) in enumerate(log)}
    return [rec for i, rec in enumerate(log) if last[rec[0]] == i]


def states(view: RunsView, hub: str = "h1") -> list[tuple[str, str, int, int]]:
    return [(x.job_id, x.state, x.done, x.total) for x in view.query(hub, limit=500)[0]]


def test_a_fresh_view_of_the_compacted_tables_lists_every_run_as_it_ended() -> None:
    w = Writer()
    s = StatusRecord(profile_id="p1", hub_id="h1")
    for n in range(5):
        s = lifecycle(w, s, f"j{n}", 100_000 * (n + 1), progress=3,
                      error="portal: 401" if n == 3 else None)
    # Requested, queued, running (its progress within 5 s: not again), the end.
    assert len(w.runs) == 5 * 4
    fresh = RunsView()
    for key, value in compact(w.runs):
        fresh.apply_run(key, value)
    fresh.apply(status_key("p1"), _enc.encode(w.status[-1]))  # the profile's last status
    assert states(fresh) == states(w.view)
    assert [x.state for x in fresh.query("h1")[0]] == [
        "finished", "failed", "finished", "finished", "finished"]
    old = fresh.get("j0")
    assert old is not None and old.origin == "schedule" and old.initial is False
    assert old.modules == {"contacts": ModuleCounts(created=3)} and old.finished_at
    assert old.started_at == 100_002 and old.requested_at == 100_000
    failed = fresh.get("j3")
    assert failed is not None and failed.err_message == "portal: 401"
    assert failed.err_svc_id == "portal"
    # Only the last status left: the fold of `sync.status` alone knows one run.
    alone = RunsView()
    alone.apply(status_key("p1"), _enc.encode(w.status[-1]))
    assert [x.job_id for x in alone.query("h1")[0]] == ["j4"]


def test_progress_reaches_the_table_at_a_bounded_cadence_not_per_write() -> None:
    w = Writer()
    s = StatusRecord(profile_id="p1", hub_id="h1")
    lifecycle(w, s, "j1", 1000, progress=200)  # 200 progress writes over 20 s
    kinds = [run_decoder.decode(v).state for _k, v in w.runs if v is not None]
    assert kinds[:3] == ["requested", "queued", "running"] and kinds[-1] == "finished"
    # 20 s of progress: one record every PROGRESS_EVERY_MS at most.
    assert len(kinds) - 4 <= 20_000 // PROGRESS_EVERY_MS + 1, kinds
    # A status write that changes none of its runs writes nothing.
    before = len(w.runs)
    w.write(r(w.status[-1], updated_at=99_999))
    assert len(w.runs) == before


def test_the_furthest_state_wins_whichever_source_comes_first() -> None:
    view = RunsView()
    done = Run(job_id="j1", profile_id="p1", hub_id="h1", requested_at=5, state="finished",
               done=4, total=4)
    view.apply_run(b"j1", run_encoder.encode(done))
    queued = r(done, state="queued", done=0, total=0)
    view.apply_run(b"j1", run_encoder.encode(queued))  # older, read later: ignored
    assert states(view) == [("j1", "finished", 4, 4)]
    # A status saying the run is queued (read from the other topic later) neither.
    view.apply(status_key("p1"), _enc.encode(StatusRecord(
        profile_id="p1", hub_id="h1", sync_state="QUEUED", running_job_id="j1",
        updated_at=9)))
    assert states(view) == [("j1", "finished", 4, 4)]
    # A record under another key than its job id is not that run.
    view.apply_run(b"j2", run_encoder.encode(r(done, job_id="j3")))
    assert view.get("j2") is None and view.get("j3") is None
    # A tombstone forgets it.
    view.apply_run(b"j1", None)
    assert view.get("j1") is None and states(view) == []
    view.apply_run(None, None)  # no key: ignored


def test_a_deleted_profile_forgets_its_runs_and_names_them_to_tombstone() -> None:
    view = RunsView()
    for n in range(3):
        view.apply_run(f"a{n}".encode(), run_encoder.encode(Run(
            job_id=f"a{n}", profile_id="p1", hub_id="h1", requested_at=n)))
    view.apply_run(b"b0", run_encoder.encode(Run(job_id="b0", profile_id="p2", hub_id="h1",
                                                  requested_at=9)))
    assert view.profile_ids() == {"p1", "p2"}
    assert view.job_ids_of("p1") == ["a0", "a1", "a2"]
    view.apply(status_key("p1"), None)  # the profile's status tombstone
    assert view.job_ids_of("p1") == [] and view.profile_ids() == {"p2"}
    assert [x.job_id for x in view.query("h1")[0]] == ["b0"]


def test_the_table_fold_is_bounded_oldest_first() -> None:
    view = RunsView()
    per = runs_mod.PER_PROFILE
    for n in range(per + 3):
        view.apply_run(f"j{n:04}".encode(), run_encoder.encode(Run(
            job_id=f"j{n:04}", profile_id="p1", hub_id="h1", requested_at=n)))
    assert len(view) == per
    assert view.get("j0000") is None and view.get("j0003") is not None
