"""The hub's run listing folded from status writes (`switchboard.sync.runs`)."""

from __future__ import annotations

import msgspec
import pytest

from switchboard.sync import runs as runs_mod
from switchboard.sync.profiles import ModuleCounts, StatusRecord
from switchboard.sync.runs import CursorError, RunsView, trigger_of
from switchboard.sync.tables import status_key

_enc = msgspec.json.Encoder()


def write(view: RunsView, s: StatusRecord) -> StatusRecord:
    view.apply(status_key(s.profile_id), _enc.encode(s))
    return s


def lifecycle(view: RunsView, s: StatusRecord, job: str, at: int, *, origin: str = "api",
              initial: bool = False, error: str | None = None) -> StatusRecord:
    """The writes of one run, as request_run and the worker make them."""
    r = msgspec.structs.replace
    s = write(view, r(s, sync_state="REQUESTED", job_id=job, job_origin=origin,
                      job_initial=initial, last_request=at, updated_at=at))
    s = write(view, r(s, sync_state="QUEUED", running_job_id=job, updated_at=at + 1))
    s = write(view, r(s, sync_state="EXECUTING", started_at=at + 2, done=0, total=0,
                      updated_at=at + 2))
    s = write(view, r(s, done=3, total=4, updated_at=at + 3))
    counts = {"contacts": ModuleCounts(created=3)}
    if error is None:
        return write(view, r(s, sync_state="IDLE", last_job_id=job, running_job_id=None,
                             modules=counts, done=4, total=4, last_successful_sync=at + 5,
                             err_message=None, err_svc_id=None, err_timestamp=None,
                             updated_at=at + 5))
    return write(view, r(s, sync_state="IDLE", last_job_id=job, running_job_id=None,
                         modules=counts, err_message=error, err_svc_id="portal",
                         err_timestamp=at + 5, updated_at=at + 5))


def test_a_run_is_folded_from_its_status_writes_and_a_replay_changes_nothing() -> None:
    view = RunsView()
    s = StatusRecord(profile_id="p1", hub_id="h1")
    s = lifecycle(view, s, "j1", 1000, origin="schedule", initial=True)
    s = lifecycle(view, s, "j2", 2000, origin="webhook", error="portal: 401")
    items, cursor = view.query("h1")
    assert [(r.job_id, r.state, r.origin, r.initial) for r in items] == [
        ("j2", "failed", "webhook", False), ("j1", "finished", "schedule", True)]
    assert cursor is None
    one = view.get("j1")
    assert one is not None
    assert (one.requested_at, one.started_at, one.finished_at) == (1000, 1002, 1005)
    assert (one.done, one.total, one.modules) == (4, 4, {"contacts": ModuleCounts(created=3)})
    failed = view.get("j2")
    assert failed is not None and failed.err_message == "portal: 401"
    assert failed.err_svc_id == "portal" and failed.finished_at == 2005
    # The newest record seen again (a reader starting over) moves nothing backwards.
    write(view, s)
    assert [r.state for r in view.query("h1")[0]] == ["failed", "finished"]
    assert view.query("other-hub") == ([], None)


def test_only_the_last_record_left_still_shows_that_run() -> None:
    # A compacted topic keeps the newest status of a profile: its last run is known.
    full = RunsView()
    last = lifecycle(full, StatusRecord(profile_id="p", hub_id="h"), "j", 500)
    view = RunsView()
    write(view, last)
    run = view.get("j")
    assert run is not None
    assert (run.state, run.origin, run.started_at, run.finished_at) == ("finished", "api",
                                                                          502, 505)


def test_a_run_in_progress_and_one_waiting_behind_it() -> None:
    view = RunsView()
    r = msgspec.structs.replace
    s = write(view, StatusRecord(profile_id="p", hub_id="h", sync_state="REQUESTED",
                                 job_id="a", job_origin="api", last_request=10))
    s = write(view, r(s, sync_state="QUEUED", running_job_id="a"))
    assert view.query("h", state="queued")[0][0].job_id == "a"
    s = write(view, r(s, sync_state="EXECUTING", started_at=12, done=1, total=9))
    s = write(view, r(s, sync_state="REQUESTED", job_id="b", job_origin="schedule",
                      last_request=20))
    states = {x.job_id: x.state for x in view.query("h")[0]}
    assert states == {"a": "running", "b": "requested"}
    running = view.get("a")
    assert running is not None and (running.started_at, running.done, running.total) == (
        12, 1, 9)
    # A schedule slot fired twice: the worker sets the status back to IDLE untaken.
    write(view, r(s, sync_state="IDLE", running_job_id=None, last_job_id="a",
                  last_successful_sync=30))
    assert {x.job_id: x.state for x in view.query("h")[0]} == {"a": "finished",
                                                                "b": "skipped"}


def test_filters_pages_and_cursors() -> None:
    view = RunsView()
    s1 = StatusRecord(profile_id="p1", hub_id="h")
    s2 = StatusRecord(profile_id="p2", hub_id="h")
    for i in range(5):
        s1 = lifecycle(view, s1, f"a{i}", 1000 + 10 * i)
        s2 = lifecycle(view, s2, f"b{i}", 1005 + 10 * i, error="x" if i % 2 else None)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = view.query("h", limit=3, cursor=cursor)
        seen += [r.job_id for r in page]
        if cursor is None:
            break
    assert seen == ["b4", "a4", "b3", "a3", "b2", "a2", "b1", "a1", "b0", "a0"]
    assert [r.job_id for r in view.query("h", profile_ids={"p2"}, state="failed")[0]] == [
        "b3", "b1"]
    assert view.query("h", profile_ids=set())[0] == []
    with pytest.raises(CursorError):
        view.query("h", cursor="not-a-cursor!")
    # A profile's delete (its status tombstone) forgets its runs.
    view.apply(status_key("p2"), None)
    assert {r.profile_id for r in view.query("h", limit=50)[0]} == {"p1"}
    assert view.get("b0") is None


def test_memory_is_bounded_oldest_first() -> None:
    view = RunsView()
    s = StatusRecord(profile_id="p", hub_id="h")
    for i in range(runs_mod.PER_PROFILE + 7):
        s = write(view, msgspec.structs.replace(s, sync_state="REQUESTED", job_id=f"j{i}",
                                                last_request=i, updated_at=i))
    assert len(view) == runs_mod.PER_PROFILE
    assert view.get("j0") is None and view.get(f"j{runs_mod.PER_PROFILE + 6}") is not None


def test_triggers() -> None:
    assert [trigger_of(o) for o in ("api", "schedule", "webhook", "syncro", None)] == [
        "manual", "schedule", "webhook", "webhook", None]
