"""The delivery log view: status folding, ordering, paging, eviction and speed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from switchboard.delivery_log import HISTORY, CursorError, DeliveryLog
from switchboard.jobs import ABANDONED_AFTER_MS, JobRecord, JobView, job_encoder
from switchboard.model import AttemptRecord, DeliveryRef


def rec(delivery: str, status: str, attempt: int, at: int, integration: str = "i1",
        **extra: Any) -> AttemptRecord:
    return AttemptRecord(delivery_id=delivery, activity_id=f"a-{delivery}", hub_id="h1",
                         destination_id=integration, conversation_id="c1",
                         status=status, attempt=attempt, at=at, **extra)  # type: ignore[arg-type]


def ids(log: DeliveryLog, integration: str = "i1", **query: Any) -> list[str]:
    items, _ = log.query(integration, **query)
    return [s.delivery_id for s in items]


def test_status_follows_attempts_and_keeps_details() -> None:
    log = DeliveryLog()
    log.apply(rec("d1", "pending", 1, 1000, code=500, error="http_500", latency_ms=12,
                  response="oops", next_at=6000, source=DeliveryRef(2, 7)))
    s = log.get("d1")
    assert s is not None
    assert (s.status, s.attempts, s.last_status, s.last_error, s.next_attempt_at) == \
        ("pending", 1, 500, "http_500", 6000)
    assert s.source == DeliveryRef(2, 7) and s.created_at == 1000
    log.apply(rec("d1", "pending", 0, 1500, error="circuit_open", next_at=9000))
    s = log.get("d1")
    assert s is not None
    # A record without a request keeps the last HTTP status.
    assert (s.status, s.attempts, s.last_status, s.last_error) == \
        ("pending", 1, 500, "circuit_open")
    log.apply(rec("d1", "delivered", 2, 6100, code=204, latency_ms=3))
    s = log.get("d1")
    assert s is not None
    assert (s.status, s.attempts, s.last_status, s.last_error, s.next_attempt_at) == \
        ("delivered", 2, 204, None, None)
    assert (s.created_at, s.updated_at) == (1000, 6100)
    assert [(e.attempt, e.status, e.error) for e in s.history] == \
        [(1, 500, "http_500"), (0, None, "circuit_open"), (2, 204, None)]
    assert s.history[0].latency_ms == 12 and s.history[0].response == "oops"

    log.apply(rec("d2", "failed", 4, 2000, code=410, error="gone"))
    s2 = log.get("d2")
    assert s2 is not None and (s2.status, s2.attempts, s2.last_error) == ("failed", 4, "gone")


def test_out_of_order_records_never_move_status_back() -> None:
    log = DeliveryLog()
    log.apply(rec("d1", "delivered", 2, 5000, code=200))
    log.apply(rec("d1", "pending", 1, 1000, code=503, error="http_503", next_at=4000,
                  source=DeliveryRef(0, 3)))
    s = log.get("d1")
    assert s is not None
    assert (s.status, s.last_status, s.last_error, s.updated_at) == ("delivered", 200, None, 5000)
    assert (s.attempts, s.created_at) == (2, 1000)
    assert s.source == DeliveryRef(0, 3)  # learnt from the late record all the same
    assert [e.attempt for e in s.history] == [1, 2]  # history is in time order
    assert ids(log, status="pending") == [] and ids(log, status="delivered") == ["d1"]
    # Same instant, same attempt: the final outcome wins over "will retry".
    log.apply(rec("d3", "delivered", 1, 7000, code=200))
    log.apply(rec("d3", "pending", 1, 7000, code=200))
    assert log.get("d3").status == "delivered"  # type: ignore[union-attr]
    # A genuinely newer record (a redelivery) does move it.
    log.apply(rec("d1", "pending", 1, 9000, code=500, error="http_500", next_at=9500))
    assert log.get("d1").status == "pending"  # type: ignore[union-attr]
    assert ids(log, status="delivered") == ["d3"]


def test_history_is_bounded_and_deduplicated() -> None:
    log = DeliveryLog()
    for n in range(1, 30):
        log.apply(rec("d1", "pending", n, n * 10, code=500, response="x" * 5000))
    log.apply(rec("d1", "pending", 29, 290, code=500, response="x" * 5000))  # a duplicate
    s = log.get("d1")
    assert s is not None and len(s.history) == HISTORY
    assert [e.attempt for e in s.history] == list(range(10, 30))
    assert all(len(e.response or "") == 1024 for e in s.history)
    assert s.attempts == 29


def test_newest_first_with_filters() -> None:
    log = DeliveryLog()
    log.apply(rec("a", "delivered", 1, 100))
    log.apply(rec("b", "failed", 3, 300))
    log.apply(rec("c", "pending", 1, 200))
    log.apply(rec("x", "failed", 1, 250, integration="i2"))
    assert ids(log) == ["b", "c", "a"]
    assert ids(log, status="failed") == ["b"]
    assert ids(log, since=200) == ["b", "c"]
    assert ids(log, "i2") == ["x"] and ids(log, "nope") == []
    log.apply(rec("a", "failed", 2, 400))  # an update moves it to the top
    assert ids(log) == ["a", "b", "c"]
    assert ids(log, status="failed") == ["a", "b"] and ids(log, status="delivered") == []
    assert [s.delivery_id for s in log.newest("i1", "failed", since=350)] == ["a"]


def test_cursor_pages_without_gaps_or_repeats() -> None:
    log = DeliveryLog()
    for n in range(1000):
        # Many share an updatedAt: the delivery id breaks the tie.
        log.apply(rec(f"d{n:04}", "failed" if n % 3 == 0 else "delivered", 1, 1000 + n // 7))
    for status in (None, "failed"):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            items, cursor = log.query("i1", status=status, limit=37,  # type: ignore[arg-type]
                                      cursor=cursor)
            pages += 1
            seen += [s.delivery_id for s in items]
            if cursor is None:
                break
        expected = [f"d{n:04}" for n in range(1000) if status is None or n % 3 == 0]
        assert sorted(seen) == expected and len(seen) == len(set(seen))
        keys = [(log.get(d).updated_at, d) for d in seen]  # type: ignore[union-attr]
        assert keys == sorted(keys, reverse=True)
        assert pages == -(-len(expected) // 37)
    # An item that changes between pages does not disturb the rest.
    first, cursor = log.query("i1", limit=10)
    log.apply(rec(first[0].delivery_id, "failed", 2, 5000))
    rest, cursor = log.query("i1", limit=500, cursor=cursor)
    rest += log.query("i1", limit=500, cursor=cursor)[0]
    assert not {s.delivery_id for s in first} & {s.delivery_id for s in rest}
    assert len({s.delivery_id for s in rest}) == len(rest) == 990
    assert log.query("i1", limit=10_000)[0].__len__() == 500  # capped
    with pytest.raises(CursorError):
        log.query("i1", cursor="not-a-cursor!")


def test_memory_is_bounded_oldest_updated_forgotten_first() -> None:
    log = DeliveryLog(max_entries=3)
    log.apply(rec("a", "pending", 1, 100))
    log.apply(rec("b", "pending", 1, 200))
    log.apply(rec("c", "pending", 1, 300))
    log.apply(rec("a", "delivered", 2, 400))  # a is now the newest
    log.apply(rec("d", "pending", 1, 500, integration="i2"))
    assert len(log) == 3 and log.get("b") is None
    assert ids(log) == ["a", "c"] and ids(log, status="pending") == ["c"]
    for n in range(10):
        log.apply(rec(f"e{n}", "pending", 1, 600 + n, integration="i3"))
    assert len(log) == 3 and ids(log) == [] and ids(log, "i2") == []
    assert ids(log, "i3") == ["e9", "e8", "e7"]


def test_a_page_of_100k_deliveries_answers_fast() -> None:
    log = DeliveryLog()
    for n in range(100_000):
        status = "failed" if n % 10 == 0 else "delivered"
        log.apply(rec(f"msg_{n:06}", status, 1, 1_700_000_000_000 + n * 3))
    for n in range(0, 100_000, 97):  # updates out of the append order
        log.apply(rec(f"msg_{n:06}", "pending", 2, 1_700_000_000_000 + n * 3 + 1))
    _, cursor = log.query("i1", limit=50)
    mid = log.query("i1", limit=500, cursor=cursor)[1]
    queries: list[dict[str, Any]] = [
        {}, {"cursor": cursor}, {"cursor": mid, "limit": 500}, {"status": "failed"},
        {"status": "pending", "limit": 500}, {"since": 1_700_000_150_000},
        {"status": "failed", "since": 1_700_000_100_000, "cursor": mid},
    ]
    worst = 0.0
    for q in queries:
        for _ in range(5):
            t0 = time.perf_counter()
            items, _ = log.query("i1", **q)
            worst = max(worst, time.perf_counter() - t0)
            assert items
    assert worst < 0.05, f"slowest page took {worst * 1000:.1f} ms"


def test_job_view_last_write_wins_and_abandoned_jobs() -> None:
    view = JobView()
    job = JobRecord(job_id="j1", hub_id="h1", integration_id="i1", kind="replay",
                    state="running", done=0, total=10, created_at=1000, updated_at=1000)
    view.apply(b"j1", job_encoder.encode(job))
    assert view.get("j1", 2000).state == "running"  # type: ignore[union-attr]
    stale = view.get("j1", 1000 + ABANDONED_AFTER_MS + 1)
    assert stale is not None and (stale.state, stale.error) == ("failed", "abandoned")
    job.state, job.done, job.updated_at = "done", 10, 3000
    view.apply(b"j1", job_encoder.encode(job))
    assert view.get("j1", 10**12).state == "done"  # type: ignore[union-attr]
    view.apply(b"j1", None)
    assert view.get("j1", 0) is None


def test_a_redelivery_adds_to_the_attempt_count() -> None:
    log = DeliveryLog()
    for n, status in ((1, "pending"), (2, "failed")):
        log.apply(rec("d1", status, n, 1000 * n, code=503))
    # Redelivered: the deliverer numbers this delivery's attempts from 1 again.
    log.apply(rec("d1", "delivered", 1, 5000, code=200))
    s = log.get("d1")
    assert s is not None
    assert (s.status, s.attempts, s.last_status) == ("delivered", 3, 200)
