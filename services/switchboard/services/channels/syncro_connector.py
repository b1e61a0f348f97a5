"""Syncro as a sync connector: customers as accounts, contacts as contacts, through the
existing `SyncroClient` (so every request waits for the account's shared 180/min budget
and a 429 blocks every process until its ``Retry-After``). Mappings are pure, in
`switchboard.sync.syncro_map`.

- "Mine" is the whole account: Syncro customers and contacts have no owner.
- "Updated since": Syncro's listings filter by no time, so they are read newest first
  (``sort=updated_at DESC``) and paging stops at the first record older than `since`.
  Disabled customers are read too and come back deleted; a customer or contact deleted
  for good leaves nothing to read (Syncro keeps no tombstones): the runner checks the
  paired ids for those.
- Creates are plain POSTs, not `create_idempotent` (its marker would land in the user's
  notes): a create lost to a timeout is found by the next run's match before create.
- A contact is created under its `account_id` (a Syncro customer id) or, without one,
  under `default_customer_id` (Syncro files every contact under a customer).
- Lookups read at most `MAX_LOOKUP_PAGES` pages of Syncro's substring ``query`` and keep
  exact matches.
- Deletes for good are found by checking the paired ids (`id_page`, `probe`; when and
  how in `switchboard.services.sync_vanished` and `switchboard.sync.vanished`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import Struct

from switchboard.errors import BadRequest, Unavailable
from switchboard.providers import syncro
from switchboard.retry import parse_retry_after
from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.http_client import HttpError
from switchboard.sync import syncro_map as m
from switchboard.sync.connector import Capability, Page, User, require
from switchboard.sync.errors import ConnectorError, RateLimited, RecordNotFound
from switchboard.sync.records import (
    Account,
    CalendarEvent,
    Contact,
    EmailLog,
    Kind,
    OpportunityRef,
    Task,
    Value,
)
from switchboard.sync.status import error_for
from switchboard.sync.vanished import Answer

log = logging.getLogger(__name__)

__all__ = ["IdPage", "SyncroConnector"]

MAX_LOOKUP_PAGES = 5
CAPABILITIES = frozenset({Capability.ACCOUNTS_BY_DOMAIN, Capability.ACCOUNT_WRITES})
# Per kind the check of paired ids reads: the listing (disabled customers included:
# they are live records, read as deleted through the listings) and a record's path.
_SWEEP: dict[Kind, tuple[str, str, dict[str, str]]] = {
    "account": ("/customers", "customers", {"include_disabled": "true"}),
    "contact": ("/contacts", "contacts", {}),
}


class IdPage(Struct, frozen=True, kw_only=True):
    """One page of a sweep: the ids it listed, the next page (None after the last or
    `max_pages`) and how many pages are left after it."""

    ids: list[str]
    next: int | None
    pages_left: int


def _fold(value: str | None) -> str:
    return " ".join((value or "").split()).casefold()


class SyncroConnector:
    """One Syncro account (subdomain and API token) as a side of a sync."""

    def __init__(self, client: SyncroClient, subdomain: str, token: str, *,
                 default_customer_id: int | None = None,
                 max_pages: int = syncro.MAX_PAGES) -> None:
        self._client = client
        self._subdomain = subdomain
        self._token = token
        self._default_customer = default_customer_id
        self._max_pages = max_pages
        # Syncro has no change cursors; the side's state kept with the watermark (the
        # runner restores and stores it as it does Graph's delta links) holds when its
        # paired ids were last checked (`switchboard.sync.vanished.CHECKED_AT`).
        self.delta_links: dict[str, str] = {}

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    def stored_fields(self, kind: Kind) -> tuple[str, ...]:
        """The canonical fields a sync may map for `kind` (what Syncro stores)."""
        return m.STORED_FIELDS.get(kind, ())

    # ---- transport ----------------------------------------------------------------

    async def _send(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                    json: Any = None, record_id: str | None = None) -> bytes:
        """One request within the budget; the body, or the error its status means."""
        try:
            resp = await self._client.request(self._subdomain, self._token, method, path,
                                              params=params, json=json)
        except HttpError as exc:
            log.warning("syncro connector: %s %s: %s", method, path.split("?")[0],
                        exc.reason)
            raise ConnectorError("connector_unavailable",
                                 f"Syncro could not be reached ({exc.reason})") from None
        except Unavailable as exc:  # the shared budget could not be reached
            raise ConnectorError("connector_unavailable", exc.description) from None
        if resp.is_success:
            return resp.content
        wait = parse_retry_after(resp.headers.get("retry-after"), time.time())
        raise error_for(resp.status_code,
                        syncro.parse_error(resp.status_code, resp.content).describe(),
                        retry_after_s=wait, record_id=record_id)

    async def _one(self, path: str, key: str, record_id: str | None = None, *,
                   method: str = "GET", json: Any = None) -> dict[str, Any]:
        body = await self._send(method, path, json=json, record_id=record_id)
        try:
            return syncro.unwrap_one(body, key)
        except BadRequest as exc:
            raise ConnectorError("connector_bad_answer", exc.description) from None

    async def _page(self, path: str, key: str, params: Mapping[str, str], number: int
                    ) -> tuple[list[dict[str, Any]], int | None]:
        body = await self._send("GET", path, params=syncro.page_params(params, number))
        try:
            page = syncro.unwrap_page(body, key, number)
        except BadRequest as exc:
            raise ConnectorError("connector_bad_answer", exc.description) from None
        return page.records, syncro.next_page(page, number, self._max_pages)

    async def _changed(self, path: str, key: str, since: int | None, cursor: str | None,
                       params: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a listing; with `since`, newest first, stopping at older ones."""
        number = int(cursor) if cursor and cursor.isdigit() else 1
        query = dict(params)
        if since is not None:
            query["sort"] = "updated_at DESC"
        records, following = await self._page(path, key, query, number)
        if since is not None:
            fresh = [r for r in records if m.parse_time(r.get("updated_at")) >= since]
            if len(fresh) < len(records):
                following = None  # the rest is older still
            records = fresh
        return records, (str(following) if following is not None else None)

    async def _lookup(self, path: str, key: str, params: Mapping[str, str]
                      ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        number: int | None = 1
        read = 0
        while number is not None and read < MAX_LOOKUP_PAGES:
            records, number = await self._page(path, key, params, number)
            read += 1
            out += records
        return out

    # ---- users -----------------------------------------------------------------------

    async def get_me(self) -> User:
        body = await self._send("GET", "/me")
        try:
            data = syncro.decode_object(body)
        except BadRequest as exc:
            raise ConnectorError("connector_bad_answer", exc.description) from None
        return User(org_id=self._subdomain, user_id=str(data.get("user_id", "")),
                    name=str(data.get("user_name") or ""),
                    email=str(data.get("email") or ""))

    async def users_by_email(self, emails: Sequence[str]) -> list[User]:
        require(self, Capability.USERS_BY_EMAIL)
        return []

    # ---- accounts (customers) ---------------------------------------------------------

    async def create_account(self, account: Account) -> Account:
        c = await self._one("/customers", "customer", method="POST",
                            json=m.customer_body(account))
        return m.account_from_customer(c)

    async def get_account(self, account_id: str) -> Account:
        c = await self._one(f"/customers/{m.syncro_id(account_id)}", "customer", account_id)
        account = m.account_from_customer(c)
        if account.deleted:
            raise RecordNotFound(f"customer {account_id} is disabled", account_id)
        return account

    async def update_account(self, account_id: str, values: Mapping[str, Value]) -> Account:
        c = await self._one(f"/customers/{m.syncro_id(account_id)}", "customer", account_id,
                            method="PUT", json=m.customer_values(values))
        return m.account_from_customer(c)

    async def delete_account(self, account_id: str) -> None:
        await self._send("DELETE", f"/customers/{m.syncro_id(account_id)}",
                         record_id=account_id)

    async def my_accounts(self, since: int | None = None, cursor: str | None = None
                          ) -> Page[Account]:
        params = {"include_disabled": "true"} if since is not None else {}
        records, nxt = await self._changed("/customers", "customers", since, cursor, params)
        return Page(records=[m.account_from_customer(c) for c in records], cursor=nxt)

    async def accounts_by_name(self, name: str) -> list[Account]:
        found = await self._lookup("/customers", "customers", {"query": " ".join(name.split())})
        accounts = [m.account_from_customer(c) for c in found]
        return [a for a in accounts if _fold(a.name) == _fold(name)]

    async def accounts_by_domain(self, domain: str) -> list[Account]:
        found = await self._lookup("/customers", "customers", {"query": "@" + domain})
        accounts = [m.account_from_customer(c) for c in found]
        return [a for a in accounts if a.domain == _fold(domain)]

    # ---- contacts --------------------------------------------------------------------

    async def create_contact(self, contact: Contact) -> Contact:
        customer = (m.syncro_id(contact.account_id) if contact.account_id
                    else self._default_customer)
        if customer is None:
            raise ConnectorError("connector_refused", "a Syncro contact needs a customer: "
                                 "give the contact's account or a default customer")
        c = await self._one("/contacts", "contact", method="POST",
                            json=m.syncro_contact_body(contact, customer))
        return m.contact_from_syncro(c)

    async def get_contact(self, contact_id: str) -> Contact:
        c = await self._one(f"/contacts/{m.syncro_id(contact_id)}", "contact", contact_id)
        return m.contact_from_syncro(c)

    async def update_contact(self, contact_id: str, values: Mapping[str, Value]) -> Contact:
        # One `name` holds both halves: changing one needs the other as it stands.
        halves = {"first_name", "last_name"} & set(values)
        current = await self.get_contact(contact_id) if len(halves) == 1 else None
        c = await self._one(f"/contacts/{m.syncro_id(contact_id)}", "contact", contact_id,
                            method="PUT", json=m.syncro_contact_values(values, current))
        return m.contact_from_syncro(c)

    async def delete_contact(self, contact_id: str) -> None:
        await self._send("DELETE", f"/contacts/{m.syncro_id(contact_id)}",
                         record_id=contact_id)

    async def my_contacts(self, since: int | None = None, cursor: str | None = None
                          ) -> Page[Contact]:
        records, nxt = await self._changed("/contacts", "contacts", since, cursor, {})
        return Page(records=[m.contact_from_syncro(c) for c in records], cursor=nxt)

    async def contacts_by_name(self, name: str) -> list[Contact]:
        # Syncro searches one field at a time: the first name finds the contact.
        found = await self._lookup("/contacts", "contacts",
                                   {"query": (name.split() or [""])[0]})
        contacts = [m.contact_from_syncro(c) for c in found]
        return [c for c in contacts
                if _fold(m.join_name(c.first_name, c.last_name)) == _fold(name)]

    async def contacts_by_email(self, emails: Sequence[str]) -> list[Contact]:
        out: dict[str, Contact] = {}
        for email in dict.fromkeys(_fold(e) for e in emails if e.strip()):
            for c in await self._lookup("/contacts", "contacts", {"query": email}):
                contact = m.contact_from_syncro(c)
                if _fold(contact.email) == email:
                    out[contact.id] = contact
        return list(out.values())

    async def contacts_by_email_domain(self, domain: str) -> list[Contact]:
        wanted = "@" + _fold(domain)
        found = await self._lookup("/contacts", "contacts", {"query": wanted})
        contacts = [m.contact_from_syncro(c) for c in found]
        return [c for c in contacts if _fold(c.email).endswith(wanted)]

    # ---- deletes for good: the check of paired ids -------------------------------------

    @staticmethod
    def _no_answer(exc: ConnectorError) -> bool:
        # A 5xx or no answer at all: nothing was said about the record.
        return not isinstance(exc, RateLimited) and exc.code == "connector_unavailable"

    async def id_page(self, kind: Kind, number: int) -> IdPage | None:
        """Page `number` of every id of `kind` (customers, contacts), lowest first (a
        record made meanwhile lands at the end, shifting nothing); None when Syncro did
        not answer (5xx). A 429 raises `RateLimited`, for the caller to wait out."""
        path, key, params = _SWEEP[kind]
        query = syncro.page_params({**params, "sort": "id ASC"}, number)
        try:
            body = await self._send("GET", path, params=query)
        except ConnectorError as exc:
            if self._no_answer(exc):
                return None
            raise
        try:
            page = syncro.unwrap_page(body, key, number)
        except BadRequest as exc:
            raise ConnectorError("connector_bad_answer", exc.description) from None
        ids = [str(r["id"]) for r in page.records if isinstance(r.get("id"), int)]
        return IdPage(ids=ids, next=syncro.next_page(page, number, self._max_pages),
                      pages_left=max(0, min(page.total_pages, self._max_pages) - number))

    async def probe(self, kind: Kind, record_id: str) -> Answer:
        """Whether Syncro still has `kind`'s record `record_id`: GONE only for its 404
        (a disabled customer is LIVE), UNKNOWN for a 5xx; a 429 raises `RateLimited`."""
        path = _SWEEP[kind][0]
        try:
            await self._send("GET", f"{path}/{m.syncro_id(record_id)}", record_id=record_id)
        except RecordNotFound:
            return Answer.GONE
        except ConnectorError as exc:
            if self._no_answer(exc):
                return Answer.UNKNOWN
            raise
        return Answer.LIVE

    # ---- what Syncro does not have (declared absent) ----------------------------------

    async def create_email(self, email: EmailLog) -> EmailLog:
        require(self, Capability.EMAIL)
        raise AssertionError("unreachable")

    async def update_email(self, email_id: str, values: Mapping[str, Value]) -> EmailLog:
        require(self, Capability.EMAIL)
        raise AssertionError("unreachable")

    async def opportunities_for_contacts(self, contact_ids: Sequence[str]
                                         ) -> list[OpportunityRef]:
        require(self, Capability.OPPORTUNITIES)
        raise AssertionError("unreachable")

    async def create_task(self, task: Task) -> Task:
        require(self, Capability.TASKS)
        raise AssertionError("unreachable")

    async def get_task(self, task_id: str) -> Task:
        require(self, Capability.TASKS)
        raise AssertionError("unreachable")

    async def update_task(self, task_id: str, values: Mapping[str, Value]) -> Task:
        require(self, Capability.TASKS)
        raise AssertionError("unreachable")

    async def delete_task(self, task_id: str) -> None:
        require(self, Capability.TASKS)

    async def my_tasks(self, since: int | None = None, cursor: str | None = None
                       ) -> Page[Task]:
        require(self, Capability.TASKS)
        raise AssertionError("unreachable")

    async def create_event(self, event: CalendarEvent) -> CalendarEvent:
        require(self, Capability.EVENTS)
        raise AssertionError("unreachable")

    async def get_event(self, event_id: str) -> CalendarEvent:
        require(self, Capability.EVENTS)
        raise AssertionError("unreachable")

    async def update_event(self, event_id: str, values: Mapping[str, Value]
                           ) -> CalendarEvent:
        require(self, Capability.EVENTS)
        raise AssertionError("unreachable")

    async def delete_event(self, event_id: str) -> None:
        require(self, Capability.EVENTS)

    async def my_events(self, since: int | None = None, cursor: str | None = None
                        ) -> Page[CalendarEvent]:
        require(self, Capability.EVENTS)
        raise AssertionError("unreachable")
