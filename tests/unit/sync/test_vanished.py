"""The check of paired ids on a side that keeps no tombstone (`switchboard.sync.vanished`):
when it is due, what counts as deleted, what it costs, and the planner taking its
deletions as any other delete (only where the direction allows)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.sync.ops import Delete, Watermark
from switchboard.sync.options import Direction, ModuleOptions
from switchboard.sync.pairs import Pair, PairIndex, PairSide
from switchboard.sync.plan import Changes, plan
from switchboard.sync.records import Contact
from switchboard.sync.vanished import (
    CHECKED_AT,
    Answer,
    due,
    keep_sweeping,
    paired_ids,
    vanished,
)

DAY_S = 86_400.0
NOW = 1_700_000_000_000


def pair(portal: str, mailbox: str, *, kind: str = "contact", seen: int = 5,
         portal_deleted: bool = False, mailbox_deleted: bool = False) -> Pair:
    return Pair(kind=kind,  # type: ignore[arg-type]
                portal=PairSide(id=portal, seen_at=seen, deleted=portal_deleted),
                mailbox=PairSide(id=mailbox, seen_at=seen + 1, deleted=mailbox_deleted))


# When ------------------------------------------------------------------------------------

def test_an_initial_run_always_checks_another_once_the_interval_passed() -> None:
    recent = {CHECKED_AT: str(NOW - 1000)}
    assert due(recent, NOW, DAY_S, initial=True)
    assert not due(recent, NOW, DAY_S, initial=False)
    assert due({CHECKED_AT: str(NOW - int(DAY_S * 1000))}, NOW, DAY_S, initial=False)
    assert due({}, NOW, DAY_S, initial=False)  # never checked (or not completely)
    assert due(recent, NOW, 0, initial=False)  # 0: every run
    assert due({CHECKED_AT: "junk"}, NOW, DAY_S, initial=False)
    # A mark from the future (the clock went back) does not stop checks for good.
    assert due({CHECKED_AT: str(NOW + 60_000)}, NOW, DAY_S, initial=False)


# What is checked, what counts as deleted ---------------------------------------------------

def test_paired_ids_are_the_sides_ids_of_the_kind_without_tombstones() -> None:
    pairs = [pair("p1", "11"), pair("p2", "12", mailbox_deleted=True),
             pair("p3", "13", portal_deleted=True), pair("a1", "14", kind="account")]
    assert paired_ids(pairs, "contact", "mailbox") == ["11", "13"]
    assert paired_ids(pairs, "contact", "portal") == ["p1", "p2"]
    assert paired_ids(pairs, "account", "mailbox") == ["14"]


def test_only_an_unlisted_id_answering_404_is_deleted() -> None:
    pairs = [pair("p1", "11", seen=70), pair("p2", "12"), pair("p3", "13"),
             pair("p4", "14"), pair("p5", "15")]
    answers = {"11": Answer.GONE, "12": Answer.LIVE, "13": Answer.UNKNOWN,
               "14": Answer.GONE}
    verdict = vanished(pairs, "contact", "mailbox", listed={"14", "15"}, answers=answers)
    # 14 was listed: a 404 for a record the listing has is no proof; 13 has no answer.
    assert verdict.deleted == [Contact(id="11", modified_at=71, deleted=True)]
    assert not verdict.complete
    done = vanished(pairs, "contact", "mailbox", {"13", "14", "15"}, answers)
    assert [r.id for r in done.deleted] == ["11"] and done.complete


def test_a_transient_error_is_never_a_delete() -> None:
    pairs = [pair("p1", "11"), pair("p2", "12")]
    verdict = vanished(pairs, "contact", "mailbox", set(),
                       {"11": Answer.UNKNOWN})  # 12: never asked (the check stopped)
    assert verdict.deleted == [] and not verdict.complete


_answers = st.sampled_from(list(Answer))


@given(st.dictionaries(st.integers(1, 40).map(str),
                       st.tuples(st.booleans(), st.booleans(), _answers), max_size=25))
def test_deletions_are_exactly_the_live_paired_ids_unlisted_and_gone(
        state: dict[str, tuple[bool, bool, Answer]]) -> None:
    pairs = [pair(f"p{i}", i, mailbox_deleted=tomb) for i, (tomb, _, _) in state.items()]
    listed = {i for i, (_, shown, _) in state.items() if shown}
    answers = {i: a for i, (_, _, a) in state.items()}
    verdict = vanished(pairs, "contact", "mailbox", listed, answers)
    expected = {i for i, (tomb, shown, a) in state.items()
                if not tomb and not shown and a is Answer.GONE}
    assert {r.id for r in verdict.deleted} == expected
    assert all(r.deleted and isinstance(r, Contact) for r in verdict.deleted)
    assert verdict.complete == all(tomb or shown or a is not Answer.UNKNOWN
                                   for tomb, shown, a in state.values())


# What it costs ----------------------------------------------------------------------------

@given(st.integers(1, 400), st.sampled_from([1, 3, 25]), st.data())
def test_the_check_costs_at_most_the_cheaper_of_a_sweep_and_a_get_each(
        records: int, per_page: int, data: st.DataObject) -> None:
    """A simulated account: `records` ids, some paired, some of those gone."""
    ids = [str(1000 + n) for n in range(records)]
    paired = set(data.draw(st.lists(st.sampled_from(ids), max_size=records)))
    gone = set(data.draw(st.lists(st.sampled_from(sorted(paired)), max_size=len(paired)))
               ) if paired else set()
    live = [i for i in ids if i not in gone]
    pages = max(1, math.ceil(len(live) / per_page))
    listed: set[str] = set()
    requests = 0
    number: int | None = 1 if paired else None
    while number is not None:
        requests += 1
        listed.update(live[(number - 1) * per_page:number * per_page])
        more = number < pages and keep_sweeping(len(paired - listed), pages - number)
        number = number + 1 if more else None
    unlisted = paired - listed
    requests += len(unlisted)  # one GET each
    assert gone <= unlisted  # every deleted one is asked about
    if paired:
        assert requests <= min(pages, len(paired) + 1) + len(gone)
    else:
        assert requests == 0


# The planner takes the deletions as any other delete ----------------------------------------

@pytest.mark.parametrize(("direction", "propagates"), [
    (Direction.BOTH, True), (Direction.FROM_PORTAL, True), (Direction.TO_PORTAL, False)])
def test_a_vanished_portal_record_is_deleted_only_where_the_direction_allows(
        direction: Direction, propagates: bool) -> None:
    # Syncro as the portal: FROM_PORTAL carries its changes (and deletes) to the mailbox.
    index = PairIndex([pair("11", "m1", seen=50)])
    gone = vanished(index, "contact", "portal", set(), {"11": Answer.GONE}).deleted
    options = ModuleOptions(direction=direction)
    result = plan("contact", Changes(portal=gone), index, options,
                  Watermark(portal=60, mailbox=60))
    if propagates:
        assert result.ops == [Delete(kind="contact", side="mailbox", id="m1")]
        assert [p.key for p in result.unpaired] == ["contact:11:m1"]
    else:
        assert result.ops == [] and not result.unpaired
        # A tombstone: the survivor is not created again in Syncro, nor checked again.
        assert [p.portal.deleted for p in result.pairs] == [True]
        again = PairIndex(result.pairs)
        assert paired_ids(again, "contact", "portal") == []
    # The deletion, stamped with the last version seen, moves no watermark.
    assert result.watermark == Watermark(portal=60, mailbox=60)


def test_a_vanished_mailbox_record_reaches_the_portal_only_with_mailbox_deletes() -> None:
    index = PairIndex([pair("p1", "11")])
    gone = vanished(index, "contact", "mailbox", set(), {"11": Answer.GONE}).deleted
    kept = plan("contact", Changes(mailbox=gone), index, ModuleOptions(), Watermark())
    assert kept.ops == [] and kept.pairs[0].mailbox.deleted
    asked = plan("contact", Changes(mailbox=gone), index,
                 ModuleOptions(mailbox_deletes=True), Watermark())
    assert asked.ops == [Delete(kind="contact", side="portal", id="p1")]
