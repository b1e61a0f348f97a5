"""The CRM connector contract (seed 001) as a Protocol: what a side must offer the sync.

Methods are async and speak canonical records (`switchboard.sync.records`); a connector
maps them to its platform's API. Names are the seed's in snake_case (``getMe`` is
`get_me`, ``getMyContacts`` is `my_contacts`, …).

**Listings page.** A listing returns a `Page`: some records and an opaque `cursor` for
the next page (None after the last). `all_records` walks the pages. "Updated since"
(`since`, epoch ms) is inclusive and includes deleted records, as the seed asks: the
planner tolerates records read twice, never one missed.

**Optional capabilities.** What the seed marks optional (users by e-mail, accounts by
domain, opportunities) and what only some sides have (tasks, calendar events, account
writes) is declared, not probed: `capabilities` names what the connector implements.
The methods are in the Protocol either way; an undeclared one raises `Unsupported`,
and a caller checks `supports` first (e.g. without `ACCOUNTS_BY_DOMAIN` the sync derives
accounts from the contacts of the domain, as the seed says).

**Errors.** A connector raises only the `switchboard.sync.errors` types: not found,
rate limited (with retry-after), authentication failed, conflict, unsupported.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from msgspec import Struct

from switchboard.sync.errors import Unsupported
from switchboard.sync.records import (
    Account,
    CalendarEvent,
    Contact,
    EmailLog,
    OpportunityRef,
    Task,
    Value,
)

__all__ = [
    "MAX_PAGES",
    "Capability",
    "Connector",
    "Page",
    "User",
    "all_records",
    "require",
    "supports",
]

T = TypeVar("T")
# A listing that never ends (a cursor that loops) stops here rather than run forever.
MAX_PAGES = 10_000


class Capability(enum.Enum):
    USERS_BY_EMAIL = "users_by_email"  # getUsersByEmail: "good to have"
    ACCOUNTS_BY_DOMAIN = "accounts_by_domain"  # optional in the seed
    ACCOUNT_WRITES = "account_writes"  # update / delete an account (not in the seed)
    OPPORTUNITIES = "opportunities"  # getOpportunitiesForContacts
    EMAIL = "email"  # createEmail / updateEmail
    TASKS = "tasks"
    EVENTS = "events"


class User(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A user of the side (seed 001's OrgId, UserId, Name, Email, Timezone)."""

    org_id: str
    user_id: str
    name: str = ""
    email: str = ""
    timezone: str = "UTC"


class Page(Struct, Generic[T], kw_only=True):
    """One page of a listing; `cursor` fetches the next one, None after the last."""

    records: list[T]
    cursor: str | None = None


class Connector(Protocol):
    """One side of a sync: a CRM (the "portal") or a mailbox, one user's view of it."""

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    # Users
    async def get_me(self) -> User: ...
    async def users_by_email(self, emails: Sequence[str]) -> list[User]: ...

    # Accounts
    async def create_account(self, account: Account) -> Account: ...
    async def get_account(self, account_id: str) -> Account: ...
    async def update_account(self, account_id: str,
                             values: Mapping[str, Value]) -> Account: ...
    async def delete_account(self, account_id: str) -> None: ...
    async def my_accounts(self, since: int | None = None,
                          cursor: str | None = None) -> Page[Account]: ...
    async def accounts_by_name(self, name: str) -> list[Account]: ...
    async def accounts_by_domain(self, domain: str) -> list[Account]: ...

    # Contacts
    async def create_contact(self, contact: Contact) -> Contact: ...
    async def get_contact(self, contact_id: str) -> Contact: ...
    async def update_contact(self, contact_id: str,
                             values: Mapping[str, Value]) -> Contact: ...
    async def delete_contact(self, contact_id: str) -> None: ...
    async def my_contacts(self, since: int | None = None,
                          cursor: str | None = None) -> Page[Contact]: ...
    async def contacts_by_name(self, name: str) -> list[Contact]: ...
    async def contacts_by_email(self, emails: Sequence[str]) -> list[Contact]: ...
    async def contacts_by_email_domain(self, domain: str) -> list[Contact]: ...

    # E-mail logging
    async def create_email(self, email: EmailLog) -> EmailLog: ...
    async def update_email(self, email_id: str, values: Mapping[str, Value]) -> EmailLog: ...

    # Opportunities
    async def opportunities_for_contacts(self, contact_ids: Sequence[str]
                                         ) -> list[OpportunityRef]: ...

    # Tasks (Capability.TASKS)
    async def create_task(self, task: Task) -> Task: ...
    async def get_task(self, task_id: str) -> Task: ...
    async def update_task(self, task_id: str, values: Mapping[str, Value]) -> Task: ...
    async def delete_task(self, task_id: str) -> None: ...
    async def my_tasks(self, since: int | None = None,
                       cursor: str | None = None) -> Page[Task]: ...

    # Calendar events (Capability.EVENTS)
    async def create_event(self, event: CalendarEvent) -> CalendarEvent: ...
    async def get_event(self, event_id: str) -> CalendarEvent: ...
    async def update_event(self, event_id: str,
                           values: Mapping[str, Value]) -> CalendarEvent: ...
    async def delete_event(self, event_id: str) -> None: ...
    async def my_events(self, since: int | None = None,
                        cursor: str | None = None) -> Page[CalendarEvent]: ...


def supports(connector: Connector, capability: Capability) -> bool:
    """Whether `connector` declares `capability`."""
    return capability in connector.capabilities


def require(connector: Connector, capability: Capability) -> None:
    """Raise `Unsupported` unless `connector` declares `capability` (connectors call this
    at the top of an optional method)."""
    if capability not in connector.capabilities:
        raise Unsupported(f"the connector does not support {capability.value}")


async def all_records(listing: Callable[[str | None], Awaitable[Page[T]]],
                      max_pages: int = MAX_PAGES) -> AsyncIterator[T]:
    """Every record of a paged listing, page after page: ``all_records(lambda c:
    conn.my_contacts(since, c))``. Stops after the last page or `max_pages`, or when a
    cursor repeats (a side that would page forever)."""
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(max_pages):
        page = await listing(cursor)
        for record in page.records:
            yield record
        cursor = page.cursor
        if cursor is None or cursor in seen:
            return
        seen.add(cursor)
