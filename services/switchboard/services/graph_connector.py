"""The mailbox side of a sync: one Microsoft 365 user through Microsoft Graph v1.0.

Implements the connector Protocol (`switchboard.sync.connector`) for what a mailbox has:
contacts (``/me/contacts``), calendar events (``/me/calendarView`` in a window around
now; recurring events left out, see `graph_map`) and to-do tasks (one list, by default
the user's "Tasks": ``/me/todo/lists/{id}/tasks``), read and written; and mail, only
read (`my_emails`, `email_attachments`: e-mail logging into the portal); an event's
attachments are read too (`event_attachments`). Capabilities: TASKS, EVENTS.
Accounts, opportunities, users by e-mail and e-mail writes do not exist in a mailbox:
those methods raise `Unsupported`.

Reads and writes go through `graph_records.GraphRecords`, its base class: changes
and deletes from Graph's delta queries (`delta_links`, kept by the runner beside its
watermark), conditional writes (If-Match; Graph's 412 is `RecordConflict`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from switchboard.clock import now_ms
from switchboard.services.graph_attachments import fetch_attachments
from switchboard.services.graph_records import GraphRecords, decode, quote
from switchboard.services.graph_token import GraphTokens
from switchboard.services.http_client import HttpClient
from switchboard.settings import Settings
from switchboard.sync.connector import Capability, Page, User, require
from switchboard.sync.errors import ConnectorError, Unsupported
from switchboard.sync.graph_map import (
    CONTACT_FIELDS,
    EVENT_FIELDS,
    EVENT_READ_ONLY,
    TASK_FIELDS,
    contact_from_graph,
    contact_to_graph,
    email_from_graph,
    event_from_graph,
    event_to_graph,
    record_values,
    task_from_graph,
    task_to_graph,
)
from switchboard.sync.graph_time import format_instant
from switchboard.sync.graph_wire import (
    GraphContact,
    GraphEvent,
    GraphMessage,
    GraphTodoTask,
    GraphTodoTaskList,
    GraphUser,
)
from switchboard.sync.records import (
    Account,
    Attachment,
    CalendarEvent,
    Contact,
    EmailLog,
    Kind,
    OpportunityRef,
    Task,
    Value,
)

__all__ = ["GraphConnector"]

DAY_MS = 86_400_000
_NO_ACCOUNTS = "a mailbox has no accounts"


class GraphConnector(GraphRecords):
    """One Microsoft 365 user's mailbox as a sync side (see the module docstring)."""

    def __init__(self, http: HttpClient, token: str | GraphTokens, *,
                 base_url: str = "https://graph.microsoft.com/v1.0",
                 timeout_s: float = 10.0, page_size: int = 100,
                 task_list_id: str | None = None,
                 past_days: int = 28, future_days: int = 180,
                 delta_links: Mapping[str, str] | None = None,
                 now: Callable[[], int] = now_ms) -> None:
        super().__init__(http, token, base_url=base_url, timeout_s=timeout_s,
                         page_size=page_size, delta_links=delta_links, now=now)
        self.task_list_id = task_list_id
        self.past_days = past_days
        self.future_days = future_days
        self._me: User | None = None

    @classmethod
    def from_settings(cls, settings: Settings, http: HttpClient, token: str | GraphTokens,
                      **options: Any) -> GraphConnector:
        """A connector on ``SWITCHBOARD_GRAPH_API_URL`` with the provider timeout."""
        return cls(http, token, base_url=settings.graph_api_url,
                   timeout_s=settings.provider_timeout_s, **options)

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.TASKS, Capability.EVENTS})

    def stored_fields(self, kind: Kind) -> tuple[str, ...]:
        """The canonical fields a sync may map for `kind` (what the mailbox holds; an
        event's organizer and iCalendar UID are read, never written)."""
        return {"contact": CONTACT_FIELDS, "event": EVENT_FIELDS + EVENT_READ_ONLY,
                "task": TASK_FIELDS}.get(kind, ())

    # Users ------------------------------------------------------------------------------

    async def get_me(self) -> User:
        """The token's user (``GET /me``); the org is the sign-in name's domain."""
        resp = await self.graph.call("GET", "/me")
        me = decode(resp.content, GraphUser)
        upn = me.user_principal_name or ""
        self._me = User(org_id=upn.rpartition("@")[2] or me.id, user_id=me.id,
                        name=me.display_name or "", email=me.mail or upn)
        return self._me

    async def users_by_email(self, emails: Sequence[str]) -> list[User]:
        require(self, Capability.USERS_BY_EMAIL)
        return []

    # Accounts: none in a mailbox ----------------------------------------------------------

    async def create_account(self, account: Account) -> Account:
        raise Unsupported(_NO_ACCOUNTS)

    async def get_account(self, account_id: str) -> Account:
        raise Unsupported(_NO_ACCOUNTS)

    async def update_account(self, account_id: str, values: Mapping[str, Value]) -> Account:
        raise Unsupported(_NO_ACCOUNTS)

    async def delete_account(self, account_id: str) -> None:
        raise Unsupported(_NO_ACCOUNTS)

    async def my_accounts(self, since: int | None = None,
                          cursor: str | None = None) -> Page[Account]:
        raise Unsupported(_NO_ACCOUNTS)

    async def accounts_by_name(self, name: str) -> list[Account]:
        raise Unsupported(_NO_ACCOUNTS)

    async def accounts_by_domain(self, domain: str) -> list[Account]:
        require(self, Capability.ACCOUNTS_BY_DOMAIN)
        return []

    # Contacts ---------------------------------------------------------------------------

    def _contact(self, item: GraphContact) -> Contact:
        return contact_from_graph(item, self._now())

    async def create_contact(self, contact: Contact) -> Contact:
        body = contact_to_graph(record_values(contact, CONTACT_FIELDS), create=True)
        return self._contact(await self._write("POST", "/me/contacts", body, GraphContact))

    async def get_contact(self, contact_id: str) -> Contact:
        return self._contact(await self._one(f"/me/contacts/{contact_id}", GraphContact,
                                             contact_id))

    async def update_contact(self, contact_id: str, values: Mapping[str, Value]) -> Contact:
        return self._contact(await self._write(
            "PATCH", f"/me/contacts/{contact_id}", contact_to_graph(values), GraphContact,
            contact_id))

    async def delete_contact(self, contact_id: str) -> None:
        await self._delete(f"/me/contacts/{contact_id}", contact_id)

    async def my_contacts(self, since: int | None = None,
                          cursor: str | None = None) -> Page[Contact]:
        return await self._delta("contacts", "/me/contacts/delta", None, GraphContact,
                                 self._contact, since, cursor)

    async def contacts_by_name(self, name: str) -> list[Contact]:
        found = await self._all("/me/contacts",
                                {"$filter": f"displayName eq {quote(name)}"}, GraphContact)
        return [self._contact(x) for x in found]

    async def contacts_by_email(self, emails: Sequence[str]) -> list[Contact]:
        out: dict[str, Contact] = {}
        for email in emails:
            query = f"emailAddresses/any(a:a/address eq {quote(email)})"
            for x in await self._all("/me/contacts", {"$filter": query}, GraphContact):
                out[x.id] = self._contact(x)
        return list(out.values())

    async def contacts_by_email_domain(self, domain: str) -> list[Contact]:
        # Graph cannot filter contacts by the end of an address: read them all.
        suffix = "@" + domain.strip().casefold().lstrip("@")
        everyone = await self._all("/me/contacts", None, GraphContact)
        return [c for c in map(self._contact, everyone)
                if c.email and c.email.casefold().endswith(suffix)]

    # E-mail: read only --------------------------------------------------------------------

    async def create_email(self, email: EmailLog) -> EmailLog:
        require(self, Capability.EMAIL)
        raise AssertionError("unreachable")

    async def update_email(self, email_id: str, values: Mapping[str, Value]) -> EmailLog:
        require(self, Capability.EMAIL)
        raise AssertionError("unreachable")

    async def my_emails(self, since: int | None = None,
                        cursor: str | None = None) -> Page[EmailLog]:
        """Messages received (or sent) since `since`, oldest first, drafts left out: what
        e-mail logging writes into the portal. Not in the Protocol (a portal's e-mail is
        written, a mailbox's is read)."""
        if self._me is None:
            await self.get_me()
        assert self._me is not None
        if cursor is not None:
            page = await self._page(cursor, None, GraphMessage)
        else:
            params = {"$orderby": "receivedDateTime"}
            if since is not None:
                params["$filter"] = f"receivedDateTime ge {format_instant(since)}"
            page = await self._page("/me/messages", params, GraphMessage)
        now = self._now()
        records = [email_from_graph(m, self._me.email, now) for m in page.value
                   if not m.is_draft]
        return Page(records=records, cursor=page.next_link)

    async def email_attachments(self, email_id: str, max_bytes: int
                                ) -> tuple[list[Attachment], int]:
        """A message's file attachments within `max_bytes`, and how many were skipped
        (`graph_attachments`; beside `my_emails`, not in the Protocol)."""
        return await fetch_attachments(self.graph, email_id, max_bytes)

    async def event_attachments(self, event_id: str, max_bytes: int
                                ) -> tuple[list[Attachment], int]:
        """An event's file attachments within `max_bytes`, and how many were skipped."""
        return await fetch_attachments(self.graph, event_id, max_bytes, "events")

    # Opportunities: none ------------------------------------------------------------------

    async def opportunities_for_contacts(self, contact_ids: Sequence[str]
                                         ) -> list[OpportunityRef]:
        require(self, Capability.OPPORTUNITIES)
        return []

    # Tasks --------------------------------------------------------------------------------

    async def tasks_path(self) -> str:
        """The to-do list's path: the configured list, else the user's default one."""
        return await self._tasks()

    async def _tasks(self) -> str:
        if self.task_list_id is None:
            lists = await self._all("/me/todo/lists", None, GraphTodoTaskList)
            default = [x for x in lists if x.wellknown_list_name == "defaultList"]
            if not default:
                raise ConnectorError("graph_no_task_list", "the mailbox has no default "
                                     "to-do list")
            self.task_list_id = default[0].id
        return f"/me/todo/lists/{self.task_list_id}/tasks"

    def _task(self, item: GraphTodoTask) -> Task:
        return task_from_graph(item, self._now())

    async def create_task(self, task: Task) -> Task:
        body = task_to_graph(record_values(task, TASK_FIELDS))
        return self._task(await self._write("POST", await self._tasks(), body,
                                            GraphTodoTask))

    async def get_task(self, task_id: str) -> Task:
        return self._task(await self._one(f"{await self._tasks()}/{task_id}",
                                          GraphTodoTask, task_id))

    async def update_task(self, task_id: str, values: Mapping[str, Value]) -> Task:
        return self._task(await self._write("PATCH", f"{await self._tasks()}/{task_id}",
                                            task_to_graph(values), GraphTodoTask, task_id))

    async def delete_task(self, task_id: str) -> None:
        await self._delete(f"{await self._tasks()}/{task_id}", task_id)

    async def my_tasks(self, since: int | None = None,
                       cursor: str | None = None) -> Page[Task]:
        path = await self._tasks()
        return await self._delta(f"tasks:{self.task_list_id}", f"{path}/delta", None,
                                 GraphTodoTask, self._task, since, cursor)

    # Calendar events ----------------------------------------------------------------------

    def _event(self, item: GraphEvent) -> CalendarEvent | None:
        return event_from_graph(item, self._now())

    def _existing_event(self, item: GraphEvent) -> CalendarEvent:
        event = self._event(item)
        if event is None:
            raise Unsupported(f"event {item.id} is recurring; recurring events are not "
                              "synced")
        return event

    async def create_event(self, event: CalendarEvent) -> CalendarEvent:
        body = event_to_graph(record_values(event, EVENT_FIELDS))
        return self._existing_event(await self._write("POST", "/me/events", body,
                                                      GraphEvent))

    async def get_event(self, event_id: str) -> CalendarEvent:
        return self._existing_event(await self._one(f"/me/events/{event_id}", GraphEvent,
                                                    event_id))

    async def update_event(self, event_id: str,
                           values: Mapping[str, Value]) -> CalendarEvent:
        return self._existing_event(await self._write(
            "PATCH", f"/me/events/{event_id}", event_to_graph(values), GraphEvent, event_id))

    async def delete_event(self, event_id: str) -> None:
        await self._delete(f"/me/events/{event_id}", event_id)

    async def my_events(self, since: int | None = None,
                        cursor: str | None = None) -> Page[CalendarEvent]:
        """Events in the window (`past_days` before now to `future_days` after): a
        calendarView delta, so deletes are reported; the window is fixed per round."""
        now = self._now()
        window = {"startDateTime": format_instant(now - self.past_days * DAY_MS),
                  "endDateTime": format_instant(now + self.future_days * DAY_MS)}
        return await self._delta("events", "/me/calendarView/delta", window, GraphEvent,
                                 self._event, since, cursor)
