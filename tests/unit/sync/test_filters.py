"""Module filters (seed 000's SyncAll / SyncTags, calSyncPrivate, meetings only, the
calendar window): what is kept, and that a record left out is never written across."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.sync.filters import WEEK_MS, filter_changes, keep
from switchboard.sync.ops import Create, Delete, Plan, Update
from switchboard.sync.options import ModuleOptions, SideFilter
from switchboard.sync.plan import plan
from switchboard.sync.records import Account, CalendarEvent, Contact, Task
from tests.unit.sync.memory import Sync, apply, read

TAGGED = ModuleOptions(mailbox_filter=SideFilter(sync_all=False, sync_tags=("Sync",)))
NOW = 100 * WEEK_MS


def run(s: Sync) -> Plan:
    changes = read(s.kind, s.portal, s.mailbox, s.index, s.watermark)
    result = plan(s.kind, filter_changes(changes, s.options, NOW), s.index, s.options,
                  s.watermark)
    s.index, done = apply(result, s.portal, s.mailbox, s.index)
    assert done
    s.watermark = result.watermark
    return result


def names(s: Sync) -> list[str | None]:
    return [c.first_name for c in s.portal.live() if isinstance(c, Contact)]


def test_tags_case_insensitive_and_kinds_without_tags_pass() -> None:
    assert keep(Contact(id="a", modified_at=1, tags=["SYNC"]), TAGGED, "mailbox", NOW)
    assert not keep(Contact(id="a", modified_at=1, tags=["other"]), TAGGED, "mailbox", NOW)
    assert not keep(Task(id="a", modified_at=1), TAGGED, "mailbox", NOW)
    # The filter is the mailbox's: the portal's records all pass.
    assert keep(Contact(id="a", modified_at=1), TAGGED, "portal", NOW)
    assert keep(Account(id="a", modified_at=1), TAGGED, "mailbox", NOW)
    # A delete has no tags to judge: it follows the delete options.
    assert keep(Contact(id="a", modified_at=1, deleted=True), TAGGED, "mailbox", NOW)
    # Not syncing all with no tags named: nothing from that side.
    none = ModuleOptions(portal_filter=SideFilter(sync_all=False))
    assert not keep(Contact(id="a", modified_at=1, tags=["x"]), none, "portal", NOW)


def test_calendar_private_meetings_only_and_window() -> None:
    ev = CalendarEvent(id="e", modified_at=1, start_at=NOW, end_at=NOW + 1)
    private = ModuleOptions(sync_private=False)
    assert keep(ev, private, "portal", NOW)
    assert not keep(CalendarEvent(id="e", modified_at=1, private=True), private, "mailbox",
                    NOW)
    meetings = ModuleOptions(meetings_only=True)
    assert not keep(ev, meetings, "mailbox", NOW)
    assert keep(ev, meetings, "portal", NOW)  # calMailboxSyncMeetingsOnly: mailbox only
    assert keep(CalendarEvent(id="e", modified_at=1, attendees=["a@x.io"]), meetings,
                "mailbox", NOW)
    window = ModuleOptions(past_weeks=2, future_weeks=4)
    old = CalendarEvent(id="e", modified_at=1, start_at=NOW - 3 * WEEK_MS,
                        end_at=NOW - 3 * WEEK_MS + 1)
    far = CalendarEvent(id="e", modified_at=1, start_at=NOW + 5 * WEEK_MS)
    edge = CalendarEvent(id="e", modified_at=1, start_at=NOW - 3 * WEEK_MS,
                         end_at=NOW - 2 * WEEK_MS)  # ends on the window's first instant
    assert not keep(old, window, "portal", NOW)
    assert not keep(far, window, "mailbox", NOW)
    assert keep(edge, window, "portal", NOW)
    assert keep(CalendarEvent(id="e", modified_at=1), window, "portal", NOW)


def test_a_record_that_stops_matching_leaves_the_sync_and_nothing_is_deleted() -> None:
    s = Sync(options=TAGGED)
    m = s.mailbox.create("contact", first_name="Ada", email="ada@x.io", tags=["sync"])
    s.mailbox.create("contact", first_name="Bob", email="bob@x.io", tags=["other"])
    run(s)
    assert [msgspec.structs.asdict(c)["email"] for c in s.portal.live()] == ["ada@x.io"]
    s.mailbox.update(m.id, tags=["other"], first_name="Ada L")
    assert run(s).ops == []
    assert names(s) == ["Ada"]
    # Tagged again: its next change is synced.
    s.mailbox.update(m.id, tags=["sync"], first_name="Ada K")
    run(s)
    assert names(s) == ["Ada K"]


TAGS = st.lists(st.sampled_from(["sync", "Sync", "other", "x"]), max_size=2)


@settings(max_examples=60, deadline=None)
@given(st.lists(TAGS, min_size=1, max_size=5),
       st.lists(st.tuples(st.integers(0, 4), TAGS, st.booleans()), max_size=8))
def test_a_filtered_out_record_never_produces_a_write_on_the_other_side(
        first: list[list[str]], edits: list[tuple[int, list[str], bool]]) -> None:
    s = Sync(options=ModuleOptions(
        mailbox_filter=SideFilter(sync_all=False, sync_tags=("sync",)), mailbox_deletes=True))
    ids = [s.mailbox.create("contact", first_name=f"n{i}", email=f"c{i}@x.io", tags=tags).id
           for i, tags in enumerate(first)]
    rounds = [edits[i:i + 3] for i in range(0, len(edits), 3)] or [[]]
    for batch in [[], *rounds]:
        for n, tags, delete in batch:
            rid = ids[n % len(ids)]
            if rid not in {r.id for r in s.mailbox.live()}:
                continue
            if delete:
                s.mailbox.delete(rid)
            else:
                s.mailbox.update(rid, tags=tags, first_name=f"e{s.clock.now}")
        changes = read(s.kind, s.portal, s.mailbox, s.index, s.watermark)
        filtered = filter_changes(changes, s.options, NOW).mailbox
        assert filtered == [r for r in changes.mailbox if r.deleted or (
            isinstance(r, Contact) and any(t.casefold() == "sync" for t in r.tags))]
        kept = {r.id for r in filtered}
        index = s.index
        result = run(s)
        for op in result.ops:
            assert op.side == "portal"  # the portal changed nothing
            if isinstance(op, Create):
                assert op.source_id in kept
            elif isinstance(op, Update | Delete):
                pair = index.find("contact", "portal", op.id)
                assert pair is not None and pair.mailbox.id in kept
