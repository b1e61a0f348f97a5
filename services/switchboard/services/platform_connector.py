"""The platform connector: the seed-001 contract over HTTP (`switchboard.sync.
platform_wire`), against any platform that serves it, on the process's aiohttp client.

The platform's base URL is tenant input (a sync profile's ``instanceUrl``), so it is
treated like a webhook destination: checked as one, and requested through a client whose
SSRF policy is the deliverer's (`platform_http`: private addresses only with
``SWITCHBOARD_ALLOW_PRIVATE_DESTINATIONS``). A 429 (or a 503 with ``Retry-After``) is
waited out inline up to `MAX_RATE_LIMITED` times when the wait is short, then surfaces
as `RateLimited` for the run to reschedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import msgspec
from multidict import MultiDict

from switchboard.destinations import validate_webhook_url
from switchboard.retry import parse_retry_after
from switchboard.services.http_client import HttpAnswer, HttpClient, HttpError
from switchboard.settings import Settings
from switchboard.sync import platform_wire as wire
from switchboard.sync.connector import Capability, Page, User, require
from switchboard.sync.errors import ConnectorError, RecordNotFound
from switchboard.sync.records import (
    Account,
    CalendarEvent,
    Contact,
    EmailLog,
    Kind,
    OpportunityRef,
    Record,
    Task,
    Value,
)
from switchboard.sync.status import error_for

log = logging.getLogger(__name__)

__all__ = ["PlatformConnector", "platform_http"]

MAX_RATE_LIMITED = 3
# A longer Retry-After is not waited for inline: the run gets RateLimited.
MAX_INLINE_WAIT_S = 60.0
# A lookup (by name, e-mail, …) reads at most this many pages: a lookup that matches
# more is not a lookup any more.
MAX_LOOKUP_PAGES = 20
EMAILS_PER_LOOKUP = 50
DEFAULT_PAGE_SIZE = 200
R = TypeVar("R", bound=Record)
T = TypeVar("T")


def platform_http(settings: Settings) -> HttpClient:
    """The client for platform APIs: tenant-given URLs, so the deliverer's SSRF policy."""
    return HttpClient(timeout_s=settings.provider_timeout_s,
                      allow_private=settings.allow_private_destinations)


def _as(cls: type[R], record: Record) -> R:
    if not isinstance(record, cls):  # decode_record decodes by kind; this cannot happen
        raise ConnectorError("connector_bad_answer", f"not a {cls.__name__}")
    return record


class PlatformConnector:
    """One user's view of a platform (the `Connector` Protocol)."""

    def __init__(self, http: HttpClient, base_url: str, auth: wire.PlatformAuth,
                 capabilities: Iterable[Capability] = (), *, allow_private: bool,
                 timeout_s: float = 10.0, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self._http = http
        self._base = validate_webhook_url(base_url, allow_private=allow_private,
                                          field="instanceUrl").rstrip("/")
        self._headers = {**wire.auth_headers(auth), "accept": "application/json"}
        self._caps = frozenset(capabilities)
        self._timeout_s = timeout_s
        self._page_size = page_size

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._caps

    # ---- transport ----------------------------------------------------------------

    async def _send(self, method: str, path: str, *,
                    params: Mapping[str, str] | None = None, body: bytes | None = None,
                    record_id: str | None = None) -> bytes:
        """One call; the answer's body, or the error its status means."""
        headers = self._headers if body is None else {
            **self._headers, "content-type": "application/json"}
        for attempt in range(MAX_RATE_LIMITED + 1):
            try:
                resp = await self._http.request(method, self._base + path, content=body,
                                                headers=headers, params=params,
                                                timeout_s=self._timeout_s)
            except HttpError as exc:
                log.warning("platform: %s %s: %s", method, path, exc.reason)
                raise ConnectorError("connector_unavailable",
                                     f"the platform could not be reached ({exc.reason})"
                                     ) from None
            if resp.is_success:
                if resp.truncated:
                    raise ConnectorError("connector_bad_answer", "the answer is too large")
                return resp.content
            wait = self._retry_after(resp)
            if wait is None or wait > MAX_INLINE_WAIT_S or attempt == MAX_RATE_LIMITED:
                raise error_for(resp.status_code, wire.error_message(resp.content),
                                retry_after_s=wait, record_id=record_id)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    @staticmethod
    def _retry_after(resp: HttpAnswer) -> float | None:
        """Seconds to wait before trying again, for an answer that asks for it."""
        header = resp.headers.get("retry-after")
        if resp.status_code == 429:
            wait = parse_retry_after(header, time.time())
            return 1.0 if wait is None else wait
        if resp.status_code == 503 and header is not None:
            return parse_retry_after(header, time.time())
        return None

    @staticmethod
    def _decode(decode: Callable[[bytes], T], body: bytes) -> T:
        try:
            return decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConnectorError("connector_bad_answer",
                                 f"the platform's answer is not the contract's: {exc}"
                                 ) from None

    # ---- records, by kind ------------------------------------------------------------

    async def _get(self, kind: Kind, record_id: str) -> Record:
        body = await self._send("GET", wire.record_path(kind, record_id),
                                record_id=record_id)
        rec = self._decode(lambda b: wire.decode_record(kind, b), body)
        if rec.deleted:
            # A platform may answer a tombstone by id; to the contract it is gone.
            raise RecordNotFound(f"{kind} {record_id} was deleted", record_id)
        return rec

    async def _create(self, kind: Kind, record: Record) -> Record:
        body = await self._send("POST", wire.record_path(kind), body=wire.create_body(record))
        rec = self._decode(lambda b: wire.decode_record(kind, b), body)
        return rec

    async def _update(self, kind: Kind, record_id: str, values: Mapping[str, Value]
                      ) -> Record:
        try:
            patch = wire.update_body(kind, values)
        except ValueError as exc:
            raise ConnectorError("connector_refused", str(exc)) from None
        body = await self._send("PATCH", wire.record_path(kind, record_id), body=patch,
                                record_id=record_id)
        rec = self._decode(lambda b: wire.decode_record(kind, b), body)
        return rec

    async def _delete(self, kind: Kind, record_id: str) -> None:
        await self._send("DELETE", wire.record_path(kind, record_id), record_id=record_id)

    async def _page(self, kind: Kind, path: str, params: MultiDict[str],
                    cursor: str | None) -> Page[Record]:
        params = MultiDict(params)
        params[wire.LIMIT] = str(self._page_size)
        if cursor is not None:
            params[wire.CURSOR] = cursor
        body = await self._send("GET", path, params=params)
        return self._decode(lambda b: wire.decode_page(kind, b), body)

    async def _mine(self, kind: Kind, since: int | None, cursor: str | None
                    ) -> Page[Record]:
        params: MultiDict[str] = MultiDict()
        if since is not None:
            params[wire.UPDATED_SINCE] = str(since)
        return await self._page(kind, wire.mine_path(kind), params, cursor)

    async def _lookup(self, kind: Kind, params: Iterable[tuple[str, str]]) -> list[Record]:
        query: MultiDict[str] = MultiDict(params)
        out: list[Record] = []
        cursor: str | None = None
        for _ in range(MAX_LOOKUP_PAGES):
            page = await self._page(kind, wire.record_path(kind), query, cursor)
            out += [r for r in page.records if not r.deleted]
            if page.cursor is None or page.cursor == cursor:
                break
            cursor = page.cursor
        return out

    # ---- users -----------------------------------------------------------------------

    async def get_me(self) -> User:
        return self._decode(wire.decode_user, await self._send("GET", "/me"))

    async def users_by_email(self, emails: Sequence[str]) -> list[User]:
        require(self, Capability.USERS_BY_EMAIL)
        if not emails:
            return []
        params = MultiDict((wire.EMAIL, e) for e in emails)
        page = self._decode(wire.decode_users, await self._send("GET", "/users",
                                                                params=params))
        return list(page.records)

    # ---- accounts --------------------------------------------------------------------

    async def create_account(self, account: Account) -> Account:
        return _as(Account, await self._create("account", account))

    async def get_account(self, account_id: str) -> Account:
        return _as(Account, await self._get("account", account_id))

    async def update_account(self, account_id: str, values: Mapping[str, Value]) -> Account:
        require(self, Capability.ACCOUNT_WRITES)
        return _as(Account, await self._update("account", account_id, values))

    async def delete_account(self, account_id: str) -> None:
        require(self, Capability.ACCOUNT_WRITES)
        await self._delete("account", account_id)

    async def my_accounts(self, since: int | None = None, cursor: str | None = None
                          ) -> Page[Account]:
        page = await self._mine("account", since, cursor)
        return Page(records=[_as(Account, r) for r in page.records], cursor=page.cursor)

    async def accounts_by_name(self, name: str) -> list[Account]:
        return [_as(Account, r) for r in await self._lookup("account", [(wire.NAME, name)])]

    async def accounts_by_domain(self, domain: str) -> list[Account]:
        require(self, Capability.ACCOUNTS_BY_DOMAIN)
        return [_as(Account, r) for r in await self._lookup("account",
                                                             [(wire.DOMAIN, domain)])]

    # ---- contacts --------------------------------------------------------------------

    async def create_contact(self, contact: Contact) -> Contact:
        return _as(Contact, await self._create("contact", contact))

    async def get_contact(self, contact_id: str) -> Contact:
        return _as(Contact, await self._get("contact", contact_id))

    async def update_contact(self, contact_id: str, values: Mapping[str, Value]) -> Contact:
        return _as(Contact, await self._update("contact", contact_id, values))

    async def delete_contact(self, contact_id: str) -> None:
        await self._delete("contact", contact_id)

    async def my_contacts(self, since: int | None = None, cursor: str | None = None
                          ) -> Page[Contact]:
        page = await self._mine("contact", since, cursor)
        return Page(records=[_as(Contact, r) for r in page.records], cursor=page.cursor)

    async def contacts_by_name(self, name: str) -> list[Contact]:
        return [_as(Contact, r) for r in await self._lookup("contact", [(wire.NAME, name)])]

    async def contacts_by_email(self, emails: Sequence[str]) -> list[Contact]:
        out: list[Contact] = []
        # A few at a time: an initial sync asks about every unpaired record, and a query
        # string of thousands of addresses is beyond what HTTP servers take (~8 KiB).
        for i in range(0, len(emails), EMAILS_PER_LOOKUP):
            out += [_as(Contact, r) for r in await self._lookup(
                "contact", [(wire.EMAIL, e) for e in emails[i:i + EMAILS_PER_LOOKUP]])]
        return out

    async def contacts_by_email_domain(self, domain: str) -> list[Contact]:
        return [_as(Contact, r) for r in await self._lookup(
            "contact", [(wire.EMAIL_DOMAIN, domain)])]

    # ---- e-mail logging, opportunities -------------------------------------------------

    async def create_email(self, email: EmailLog) -> EmailLog:
        require(self, Capability.EMAIL)
        return _as(EmailLog, await self._create("email", email))

    async def update_email(self, email_id: str, values: Mapping[str, Value]) -> EmailLog:
        require(self, Capability.EMAIL)
        return _as(EmailLog, await self._update("email", email_id, values))

    async def opportunities_for_contacts(self, contact_ids: Sequence[str]
                                         ) -> list[OpportunityRef]:
        require(self, Capability.OPPORTUNITIES)
        if not contact_ids:
            return []
        return [_as(OpportunityRef, r) for r in await self._lookup(
            "opportunity", [(wire.CONTACT_ID, c) for c in contact_ids])]

    # ---- tasks, calendar events --------------------------------------------------------

    async def create_task(self, task: Task) -> Task:
        require(self, Capability.TASKS)
        return _as(Task, await self._create("task", task))

    async def get_task(self, task_id: str) -> Task:
        require(self, Capability.TASKS)
        return _as(Task, await self._get("task", task_id))

    async def update_task(self, task_id: str, values: Mapping[str, Value]) -> Task:
        require(self, Capability.TASKS)
        return _as(Task, await self._update("task", task_id, values))

    async def delete_task(self, task_id: str) -> None:
        require(self, Capability.TASKS)
        await self._delete("task", task_id)

    async def my_tasks(self, since: int | None = None, cursor: str | None = None
                       ) -> Page[Task]:
        require(self, Capability.TASKS)
        page = await self._mine("task", since, cursor)
        return Page(records=[_as(Task, r) for r in page.records], cursor=page.cursor)

    async def create_event(self, event: CalendarEvent) -> CalendarEvent:
        require(self, Capability.EVENTS)
        return _as(CalendarEvent, await self._create("event", event))

    async def get_event(self, event_id: str) -> CalendarEvent:
        require(self, Capability.EVENTS)
        return _as(CalendarEvent, await self._get("event", event_id))

    async def update_event(self, event_id: str, values: Mapping[str, Value]
                           ) -> CalendarEvent:
        require(self, Capability.EVENTS)
        return _as(CalendarEvent, await self._update("event", event_id, values))

    async def delete_event(self, event_id: str) -> None:
        require(self, Capability.EVENTS)
        await self._delete("event", event_id)

    async def my_events(self, since: int | None = None, cursor: str | None = None
                        ) -> Page[CalendarEvent]:
        require(self, Capability.EVENTS)
        page = await self._mine("event", since, cursor)
        return Page(records=[_as(CalendarEvent, r) for r in page.records],
                    cursor=page.cursor)
