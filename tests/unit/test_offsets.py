"""Commit tracking: the commit point never passes an unfinished record. Pure."""

from __future__ import annotations

import itertools
import random

import pytest

from switchboard.offsets import OffsetTracker, PartitionOffsets


def reference_position(added: list[int], done: set[int], start: int | None) -> int | None:
    """The commit point by definition: one past the last of the longest all-done prefix."""
    position = start
    for offset in added:
        if offset not in done:
            break
        position = offset + 1
    return position


def test_in_order() -> None:
    part = PartitionOffsets()
    assert part.committable() is None
    for offset in range(3):
        part.add(offset)
    assert part.pending == 3
    part.done(0)
    assert part.committable() == 1
    part.done(1)
    part.done(2)
    assert part.committable() == 3
    assert part.pending == 0


def test_out_of_order_waits_for_the_head() -> None:
    part = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        part.add(offset)
    part.done(12)
    part.done(11)
    assert part.committable() is None  # 10 is not final: nothing may be committed
    assert part.pending == 2
    assert part.span == 4
    part.done(10)
    assert part.committable() == 13
    part.done(13)
    assert part.committable() == 14


def test_committable_is_none_until_it_moves_and_repeats_until_confirmed() -> None:
    part = PartitionOffsets(committed=5)
    assert part.committable() is None
    part.add(5)
    part.add(6)
    part.done(5)
    assert part.committable() == 6
    assert part.committable() == 6  # a failed commit is retried with the same offset
    part.mark_committed(6)
    assert part.committable() is None
    part.mark_committed(3)  # a late, stale confirmation does not move it back
    assert part.committed == 6
    part.done(6)
    assert part.committable() == 7


def test_gaps_in_offsets() -> None:
    # Compaction and transaction markers leave holes; only taken records count.
    part = PartitionOffsets()
    for offset in (3, 7, 8, 20):
        part.add(offset)
    part.done(7)
    part.done(3)
    assert part.committable() == 8
    part.done(20)
    assert part.committable() == 8
    part.done(8)
    assert part.committable() == 21


def test_add_must_increase() -> None:
    part = PartitionOffsets()
    part.add(4)
    with pytest.raises(ValueError):
        part.add(4)
    with pytest.raises(ValueError):
        part.add(2)
    part.done(4)
    part.add(5)
    with pytest.raises(ValueError):
        PartitionOffsets(committed=10).add(9)
    PartitionOffsets(committed=10).add(10)


def test_done_is_idempotent_and_rejects_unknown() -> None:
    part = PartitionOffsets()
    for offset in range(4):
        part.add(offset)
    part.done(2)
    part.done(2)  # done but stuck behind 0
    part.done(0)
    part.done(0)  # passed by the commit point
    assert part.position == 1
    assert part.pending == 2
    with pytest.raises(KeyError):
        part.done(9)


def test_exhaustive_small_permutations() -> None:
    offsets = [0, 1, 2, 4, 5, 9]
    for order in itertools.permutations(offsets):
        part = PartitionOffsets()
        for offset in offsets:
            part.add(offset)
        done: set[int] = set()
        for offset in order:
            part.done(offset)
            done.add(offset)
            assert part.position == reference_position(offsets, done, None)
            assert part.pending == len(offsets) - len(done)
        assert part.committable() == 10


@pytest.mark.parametrize("seed", range(200))
def test_random_interleavings(seed: int) -> None:
    """Adds and dones interleaved at random; compared to the definition after every step."""
    rng = random.Random(seed)
    start = rng.choice([None, 0, 17])
    part = PartitionOffsets(committed=start)
    next_offset = start or 0
    added: list[int] = []
    open_: list[int] = []
    done: set[int] = set()
    committed = start
    for _ in range(rng.randint(1, 300)):
        action = rng.random()
        if action < 0.45 or not open_:
            next_offset += rng.choice([1, 1, 1, 2, 5])  # with occasional gaps
            part.add(next_offset)
            added.append(next_offset)
            open_.append(next_offset)
        elif action < 0.9:
            offset = open_.pop(rng.randrange(len(open_)))
            part.done(offset)
            done.add(offset)
        else:
            offset = part.committable()
            expected = reference_position(added, done, start)
            assert offset == (None if expected == committed else expected)
            if offset is not None and rng.random() < 0.7:  # some commits "fail"
                part.mark_committed(offset)
                committed = offset
        assert part.position == reference_position(added, done, start)
        assert part.pending == len(open_)
        # The commit point never passes an unfinished record.
        if part.position is not None:
            assert all(o >= part.position for o in open_)
    for offset in open_:
        part.done(offset)
    assert part.pending == 0
    assert part.span == 0
    assert part.position == (added[-1] + 1 if added else start)


def test_tracker_over_partitions() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    a, b = ("t", 0), ("t", 1)
    tracker.add(a, 0)
    tracker.add(a, 1)
    tracker.add(b, 5)
    tracker.done(a, 1)
    tracker.done(b, 5)
    assert tracker.committable() == {b: 6}
    assert tracker.pending(a) == 1
    tracker.mark_committed({b: 6})
    assert tracker.committable() == {}
    tracker.drop(a)
    assert a not in tracker
    tracker.done(a, 0)  # a late finish for a revoked partition is ignored
    assert tracker.pending(a) == 0
    assert list(tracker) == [b]
