"""What one sync module (contacts, accounts, tasks, calendar, e-mail logging) is told:
its direction, whether deletes propagate, and which fields map to which.

The two sides are BrightSync's: the **portal** (the business platform, the CRM) and the
**mailbox** (Microsoft 365, Google; or any second system: the planner does not care
what it is). ``TO_PORTAL`` flows mailbox → portal, ``FROM_PORTAL`` portal → mailbox.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from msgspec import Meta, Struct

from switchboard.sync.records import Kind

__all__ = [
    "DEFAULT_FIELDS",
    "SIDES",
    "Direction",
    "EmailLogOptions",
    "FieldMap",
    "ModuleOptions",
    "Side",
    "SideFilter",
    "flows",
    "other",
]

Side = Literal["portal", "mailbox"]
SIDES: tuple[Side, Side] = ("portal", "mailbox")


class Direction(enum.Enum):
    BOTH = "BOTH"
    TO_PORTAL = "TO_PORTAL"
    FROM_PORTAL = "FROM_PORTAL"


class FieldMap(Struct, frozen=True, rename="camel"):
    """The portal's field `portal` and the mailbox's field `mailbox` hold the same thing
    (canonical field names of the module's record)."""

    portal: str
    mailbox: str


# The fields a module syncs unless its options map others. References to other records
# are side-local ids: a run adds the ones it translates through the pairs
# (`switchboard.sync.references`) when both sides store them; owner ids stay out; tags
# filter what is synced, they are not copied.
DEFAULT_FIELDS: dict[Kind, tuple[str, ...]] = {
    "contact": ("first_name", "last_name", "email", "phone", "mobile_phone", "title",
                "company_name"),
    "account": ("name", "domain", "website", "phone", "industry", "address"),
    "task": ("title", "notes", "due_at", "status", "priority", "completed_at"),
    "event": ("subject", "body", "location", "start_at", "end_at", "all_day", "private",
              "organizer", "attendees", "ical_uid"),
    "email": ("message_id", "subject", "body", "from_address", "to", "cc", "sent_at",
              "direction"),
    "opportunity": (),
}


class EmailLogOptions(Struct, frozen=True, kw_only=True, rename="camel",
                      forbid_unknown_fields=True):
    """E-mail logging (seed 000's ``emailSkipDomains``, ``emailCreateContacts``,
    ``emailCreateLeads``, ``emailCreateCompany``, ``emailAutoDetectDeal``,
    ``emailFetchAttachments``): which messages are logged, what is made for addresses
    the portal does not know (see `switchboard.sync.email_log`) and whether their
    attachments go with them."""

    # Addresses at these domains (and their subdomains) are neither matched nor created.
    skip_domains: tuple[str, ...] = ()
    # An unknown address becomes a portal contact (a lead: a contact tagged "lead").
    create_contacts: bool = False
    create_leads: bool = False
    # ... filed under an account for its domain, made if none matches it.
    create_company: bool = False
    # Attach the e-mail to the open opportunities of the contacts it matched.
    auto_detect_deal: bool = True
    # Copy the message's file attachments into the logged e-mail, within
    # SWITCHBOARD_SYNC_ATTACHMENT_MAX_BYTES a message (`switchboard.sync.attachments`).
    fetch_attachments: bool = False


Tag = Annotated[str, Meta(min_length=1, max_length=256)]


class SideFilter(Struct, frozen=True, kw_only=True, rename="camel",
                 forbid_unknown_fields=True):
    """Which of one side's records a module syncs (seed 000's ``contPortalSyncAll`` /
    ``contPortalSyncTags``, ``calMailboxSyncAll`` / ``calMailboxSyncTags``, …): all of
    them, or only those carrying one of `sync_tags` (case-insensitive; Outlook's
    categories are a mailbox record's tags). See `switchboard.sync.filters`."""

    sync_all: bool = True
    sync_tags: tuple[Tag, ...] = ()


class ModuleOptions(Struct, frozen=True, kw_only=True, rename="camel"):
    """One module's settings (BrightSync's ``contSyncDirection``,
    ``contMailboxSyncDeleted``, …)."""

    direction: Direction = Direction.BOTH
    # A record deleted in the portal is deleted in the mailbox (when the direction
    # lets portal changes flow there).
    portal_deletes: bool = True
    # A record deleted in the mailbox is deleted in the portal: off unless asked for
    # (``contMailboxSyncDeleted``), so tidying a mailbox never empties the CRM.
    mailbox_deletes: bool = False
    # None: the module's DEFAULT_FIELDS, each mapped to itself.
    fields: tuple[FieldMap, ...] | None = None
    # The new watermark stays this far behind the newest change read, so a change
    # committed late with an earlier time is still read next run (reading twice is
    # harmless: the fingerprints recognise it).
    overlap_ms: int = 0
    # The `email` module's logging options (other modules ignore them).
    email: EmailLogOptions = EmailLogOptions()
    # Which records of each side the module syncs; a record that stops matching leaves
    # the sync (nothing is written or deleted for it), see `switchboard.sync.filters`.
    portal_filter: SideFilter = SideFilter()
    mailbox_filter: SideFilter = SideFilter()
    # Calendar only: private events are synced (``calSyncPrivate``); only the mailbox's
    # events with attendees are (``calMailboxSyncMeetingsOnly``); the window of events
    # synced, in weeks before and after now (``calPastWeeks`` / ``calFutureWeeks``;
    # None: the mailbox connector's own window, everything on the portal).
    sync_private: bool = True
    meetings_only: bool = False
    past_weeks: Annotated[int, Meta(ge=0, le=520)] | None = None
    future_weeks: Annotated[int, Meta(ge=0, le=520)] | None = None
    # Calendar only: an event written to the portal carries the mailbox event's file
    # attachments (``calFetchAttachments``; `switchboard.sync.attachments`).
    fetch_attachments: bool = False
    # Contacts only: a contact written to the portal is filed under its company's
    # account, found or made (``contCreateCompany``; `switchboard.sync.companies`).
    create_company: bool = False

    def field_maps(self, kind: Kind) -> tuple[FieldMap, ...]:
        """The module's field mappings for `kind`."""
        if self.fields is not None:
            return self.fields
        return tuple(FieldMap(name, name) for name in DEFAULT_FIELDS[kind])

    def deletes(self, source: Side) -> bool:
        """Whether a delete on `source` propagates to the other side."""
        allowed = self.portal_deletes if source == "portal" else self.mailbox_deletes
        return allowed and flows(self.direction, source)


def other(side: Side) -> Side:
    return "mailbox" if side == "portal" else "portal"


def flows(direction: Direction, source: Side) -> bool:
    """Whether changes made on `source` are written to the other side."""
    if direction is Direction.BOTH:
        return True
    return (direction is Direction.TO_PORTAL) == (source == "mailbox")
