"""The conversations table: a bounded cache in front of a local index of the topic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchboard.conversations import (
    ConversationRecord,
    ConversationTable,
    conversation_encoder,
    touch_due,
)


def conv(cid: str, created_at: int = 1_000, **kw: object) -> ConversationRecord:
    return ConversationRecord(conversation_id=cid, hub_id="h", customer_integration_id="i",
                              customer_id="c", created_at=created_at, **kw)  # type: ignore[arg-type]


@pytest.fixture
def table(tmp_path: object) -> Iterator[ConversationTable]:
    t = ConversationTable(cache_size=3, directory=str(tmp_path))
    try:
        yield t
    finally:
        t.close()


def test_memory_holds_only_the_cache_and_misses_are_answered(table: ConversationTable
                                                             ) -> None:
    for i in range(50):
        table.apply(f"c{i}".encode(), conversation_encoder.encode(conv(f"c{i}")))
    assert len(table) == 50
    assert table.cached == 3
    # The oldest is long out of the cache and still found.
    got = table.get("c0")
    assert got is not None and got.conversation_id == "c0"
    assert table.cached == 3
    assert table.get("nope") is None


def test_threads_follow_the_latest_record_and_tombstones_delete(table: ConversationTable
                                                                ) -> None:
    table.put(conv("a", threads={"slack": "111.1"}))
    assert table.by_thread("slack", "111.1").conversation_id == "a"  # type: ignore[union-attr]
    table.put(conv("a", threads={"slack": "222.2"}))
    assert table.by_thread("slack", "111.1") is None
    assert table.by_thread("slack", "222.2").conversation_id == "a"  # type: ignore[union-attr]
    table.apply(b"a", None)
    assert table.get("a") is None and table.by_thread("slack", "222.2") is None
    assert len(table) == 0


def test_garbage_is_ignored_and_the_fold_goes_on(table: ConversationTable) -> None:
    table.apply(b"x", b"{not json")
    table.apply(None, b"{}")
    table.apply(b"b", conversation_encoder.encode(conv("b")))
    assert len(table) == 1


def test_inactive_is_oldest_activity_first(table: ConversationTable) -> None:
    table.put(conv("old", created_at=100))
    table.put(conv("touched", created_at=50, last_active_at=5_000))
    table.put(conv("older", created_at=60))
    assert [c.conversation_id for c in table.inactive(1_000)] == ["older", "old"]
    assert [c.conversation_id for c in table.inactive(10_000, limit=2)] == ["older", "old"]


def test_touch_is_due_once_per_interval() -> None:
    rec = conv("a", created_at=1_000)
    assert not touch_due(rec, 1_500, 1_000)
    assert touch_due(rec, 2_000, 1_000)
    fresh = conv("a", created_at=1_000, last_active_at=2_000)
    assert not touch_due(fresh, 2_999, 1_000)


def test_close_removes_the_local_file(tmp_path: object) -> None:
    import os
    t = ConversationTable(directory=str(tmp_path))
    t.put(conv("a"))
    t.close()
    assert os.listdir(str(tmp_path)) == []
