"""Which records a module syncs (seed 000's ``…SyncAll``, ``…SyncTags``, ``calSyncPrivate``,
``calMailboxSyncMeetingsOnly``, ``calPastWeeks`` / ``calFutureWeeks``): pure decisions a
run applies to each side's changes before planning, so a record filtered out is neither
created, nor updated, nor deleted on the other side.

A record that stops matching (a tag removed, an event made private or gone past the
window) **leaves the sync**: its partner on the other side stays as it is, never deleted
because of a filter; it comes back in if it matches again (its next change is synced).
A delete is never filtered — a tombstone carries no tags to judge — so a paired record's
delete follows the module's delete options as before; an unpaired one is nothing to the
planner. The watermark does not pass a record left out until a later change on its side
does (it is read again, and left out again: reads, not writes). The portal's listings are
the user's own records by the connector contract (``my_contacts``, …): seed 000's
``contPortalSyncMine: true``.
"""

from __future__ import annotations

from switchboard.sync.options import ModuleOptions, Side, SideFilter
from switchboard.sync.plan import Changes
from switchboard.sync.records import CalendarEvent, Contact, Record, Task

__all__ = ["WEEK_MS", "filter_changes", "keep", "tagged"]

WEEK_MS = 7 * 24 * 3600 * 1000


def tagged(record: Record, side_filter: SideFilter) -> bool:
    """Whether the side's filter lets `record` through: all records, or one with a tag
    of `sync_tags` (case-insensitive). Kinds without tags are never held back."""
    if side_filter.sync_all or not isinstance(record, Contact | Task | CalendarEvent):
        return True
    wanted = {t.casefold() for t in side_filter.sync_tags}
    return any(t.casefold() in wanted for t in record.tags)


def _event(event: CalendarEvent, options: ModuleOptions, side: Side, now: int) -> bool:
    if event.private and not options.sync_private:
        return False
    if options.meetings_only and side == "mailbox" and not event.attendees:
        return False
    if options.past_weeks is not None:
        end = event.end_at if event.end_at is not None else event.start_at
        if end is not None and end < now - options.past_weeks * WEEK_MS:
            return False
    return not (options.future_weeks is not None and event.start_at is not None
                and event.start_at > now + options.future_weeks * WEEK_MS)


def keep(record: Record, options: ModuleOptions, side: Side, now: int) -> bool:
    """Whether `record`, read on `side`, takes part in the module's sync at `now` (ms)."""
    if record.deleted:
        return True
    side_filter = options.portal_filter if side == "portal" else options.mailbox_filter
    if not tagged(record, side_filter):
        return False
    return not isinstance(record, CalendarEvent) or _event(record, options, side, now)


def filter_changes(changes: Changes, options: ModuleOptions, now: int) -> Changes:
    """`changes` without the changes the module's filters leave out. Lookups' records
    stay: a record synced into a side is still matched there before anything is created
    (no duplicate of a record that side's filter leaves out)."""
    def only(records: list[Record], side: Side) -> list[Record]:
        return [r for r in records if keep(r, options, side, now)]

    return Changes(portal=only(changes.portal, "portal"),
                   mailbox=only(changes.mailbox, "mailbox"),
                   portal_known=changes.portal_known, mailbox_known=changes.mailbox_known)
