"""A loopback Syncro: the REST API v1's wire format, and its Notification Center webhooks.

One server holds many accounts: ``/{subdomain}/api/v1/...`` (point
``SWITCHBOARD_SYNCRO_API_URL`` at ``{url}/{subdomain}/api/v1``). Speaks what Syncro's own
OpenAPI document ("Syncro v1") gives for the calls the hub makes:

- ``GET /me`` → ``{"user_id", "user_name", …}``;
- ``GET /customers`` / ``GET /tickets`` → ``{"customers": […], "meta": {"total_pages",
  "total_entries", "per_page", "page"}}`` (``?page=N``, `per_page` records a page;
  tickets filtered by ``customer_id``), ``GET /customers/{id}`` → ``{"customer": {…}}``;
- ``POST /tickets`` (``comments_attributes`` kept as its comments) → ``{"ticket": {…}}``;
  ``GET /tickets/{id}`` → ``{"ticket": {…, "comments": […]}}``;
- ``POST /tickets/{id}/comment`` (``subject``, ``body`` required, ``hidden``,
  ``do_not_email``) → ``{"comment": {…}}``.
- customers, contacts, tickets and leads CRUD with Syncro's search filters (``tests/fakes/
  syncro_records.py``); every request's method, path and query kept in ``calls``.

Bearer token auth (401 ``{"error": "Not authorized"}``); Syncro's error bodies. Knobs:
`limit` requests per `window` seconds per account (then 429 with ``Retry-After``),
`delay_s` (slow answers), `timeout_after_create` (a POST creates, then the answer is
held for `hold_s`: the client times out after the record exists), `fail_with` (answer
every request with that status), `fail_path` (answer the requests one route matches
with a status, e.g. a 503 to every ``GET /contacts/{id}``). Every request's time is
recorded per account. `hard_delete` deletes a customer or contact for good as Syncro's
web app does: no tombstone, a 404 on its GET, absent from every listing.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.brokers import free_port
from tests.fakes.syncro_records import (
    filter_customers,
    filter_tickets,
    records_routes,
    ticket_fields,
)
from tests.support import LoopbackServer

WEBHOOK_HEADLINES = {
    "customer.created": "A new Customer was created",
    "ticket.created": "A Ticket was created",
    "ticket.updated": "Ticket was updated",
    "ticket.comment": "A new comment was added to a Ticket",
    "ticket.resolved": "Ticket was resolved",
    "invoice.created": "An Invoice was added",
    "payment.created": "A Payment was added",
    "rmm_alert.created": "An RMM Alert was added",
}
_LINK_SEGMENT = {"customer": "customers", "ticket": "tickets", "invoice": "invoices",
                 "payment": "payments", "rmm_alert": "rmm_alerts"}


@dataclass
class Account:
    subdomain: str
    token: str
    customers: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    leads: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)  # monotonic time of each request
    paths: list[str] = field(default_factory=list)  # and its path, in the same order
    # (method, path under /api/v1, query parameters) of each request, in order.
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each call, in order
    recent: deque[float] = field(default_factory=deque)


class FakeSyncro:
    def __init__(self, *, per_page: int = 25) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accounts: dict[str, Account] = {}
        self.per_page = per_page
        self.limit: int | None = None
        self.window = 60.0
        self.retry_after = 1
        self.delay_s = 0.0
        self.timeout_after_create = 0  # how many POSTs to hold after creating
        self.hold_s = 5.0
        self.fail_with: int | None = None
        self.refuse_next = 0  # answer that many requests 429 (Retry-After), whatever the rate
        # (method, path regex under /api/v1, status, answers left or None: every one)
        self.fail_rules: list[list[Any]] = []
        self._ids = itertools.count(1000)
        app = Starlette(routes=[
            Route("/{sub}/api/v1/me", self._me, methods=["GET"]),
            Route("/{sub}/api/v1/customers", self._customers, methods=["GET"]),
            Route("/{sub}/api/v1/customers/{id:int}", self._customer, methods=["GET"]),
            Route("/{sub}/api/v1/tickets", self._tickets, methods=["GET", "POST"]),
            Route("/{sub}/api/v1/tickets/{id:int}", self._ticket, methods=["GET"]),
            Route("/{sub}/api/v1/tickets/{id:int}/comment", self._comment, methods=["POST"]),
            *records_routes(self),
        ])
        self.app = app
        self._http = LoopbackServer(app, self.port)

    def api_url(self) -> str:
        """The value of ``SWITCHBOARD_SYNCRO_API_URL`` for this fake."""
        return self.url + "/{subdomain}/api/v1"

    def add_account(self, subdomain: str, token: str) -> Account:
        account = self.accounts[subdomain] = Account(subdomain, token)
        return account

    def add_customer(self, account: Account, **fields: Any) -> dict[str, Any]:
        customer = {"id": next(self._ids), "business_name": None, "firstname": "Ada",
                    "lastname": "Lovelace", "email": None, "phone": None,
                    "created_at": _now_iso(), "updated_at": _now_iso(), **fields}
        account.customers.append(customer)
        return customer

    def hard_delete(self, account: Account, record: dict[str, Any]) -> None:
        """Delete a customer or contact for good, as a technician does in Syncro's web
        app: nothing is left (Syncro keeps no tombstone), its GET answers 404 and no
        listing has it; no webhook says so."""
        for records in (account.customers, account.contacts):
            if any(r is record for r in records):
                records[:] = [r for r in records if r is not record]
                return
        raise KeyError(record["id"])

    def fail_path(self, method: str, pattern: str, status: int,
                  times: int | None = None) -> None:
        """Answer `status` (429 with ``Retry-After``) to the requests whose method is
        `method` and path under ``/api/v1`` matches `pattern` (a regex, whole path), the
        next `times` of them or every one; `fail_path` again with the same route replaces
        the rule, `times=0` ends it."""
        self.fail_rules = [r for r in self.fail_rules if r[:2] != [method, pattern]]
        if times != 0:
            self.fail_rules.append([method, pattern, status, times])

    def _failing(self, method: str, path: str) -> Response | None:
        for rule in self.fail_rules:
            if rule[0] == method and re.fullmatch(rule[1], path) and rule[3] != 0:
                if rule[3] is not None:
                    rule[3] -= 1
                if rule[2] == 429:
                    return JSONResponse({"error": "Rate limit exceeded"}, status_code=429,
                                        headers={"Retry-After": str(self.retry_after)})
                return JSONResponse({"error": "Service unavailable"}, status_code=rule[2])
        return None

    # ---- the API ---------------------------------------------------------------------

    async def _gate(self, request: Request) -> Account | Response:
        account = self.accounts.get(request.path_params["sub"])
        if account is None:
            return JSONResponse({"error": "Account not found"}, status_code=404)
        now = time.monotonic()
        account.requests.append(now)
        account.paths.append(request.url.path.split("/api/v1", 1)[-1])
        account.calls.append((request.method,
                              request.url.path.split("/api/v1", 1)[1],
                              dict(request.query_params)))
        account.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return JSONResponse({"error": "Rate limit exceeded"}, status_code=429,
                                headers={"Retry-After": str(self.retry_after)})
        if self.fail_with is not None:
            return JSONResponse({"error": "Service unavailable"}, status_code=self.fail_with)
        failing = self._failing(request.method, account.calls[-1][1])
        if failing is not None:
            return failing
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {account.token}":
            return JSONResponse({"error": "Not authorized"}, status_code=401)
        if self.limit is not None:
            recent = account.recent
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            if len(recent) >= self.limit:
                return JSONResponse({"error": "Rate limit exceeded"}, status_code=429,
                                    headers={"Retry-After": str(self.retry_after)})
            recent.append(now)
        return account

    def _page(self, request: Request, key: str, records: list[dict[str, Any]]) -> Response:
        page = int(request.query_params.get("page", "1"))
        total_pages = max(1, -(-len(records) // self.per_page))
        start = (page - 1) * self.per_page
        return JSONResponse({key: records[start:start + self.per_page], "meta": {
            "total_pages": total_pages, "total_entries": len(records),
            "per_page": self.per_page, "page": page}})

    async def _me(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        return JSONResponse({"user_id": 7, "user_name": "Tech Tina",
                             "subdomain": account.subdomain})

    async def _customers(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        return self._page(request, "customers", filter_customers(request, account.customers))

    async def _customer(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        for c in account.customers:
            if c["id"] == request.path_params["id"]:
                return JSONResponse({"customer": c})
        return JSONResponse({"error": "Not found"}, status_code=404)

    def _find_ticket(self, account: Account, ticket_id: int) -> dict[str, Any] | None:
        return next((t for t in account.tickets if t["id"] == ticket_id), None)

    async def _tickets(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        if request.method == "GET":
            wanted = request.query_params.get("customer_id")
            found = [t for t in account.tickets
                     if wanted is None or str(t["customer_id"]) == wanted]
            found = filter_tickets(request, found)
            return self._page(request, "tickets", found)
        body = await request.json()
        if not body.get("subject") or not body.get("customer_id"):
            return JSONResponse({"success": False, "message": ["Subject can't be blank"]},
                                status_code=422)
        ticket_id = next(self._ids)
        comments = [self._new_comment(ticket_id, c)
                    for c in body.get("comments_attributes") or []]
        ticket = {**ticket_fields(body),  # the other fields given, as Syncro keeps them
                  "id": ticket_id, "number": ticket_id, "subject": body["subject"],
                  "customer_id": body["customer_id"], "status": body.get("status", "New"),
                  "problem_type": body.get("problem_type"), "comments": comments,
                  "created_at": _now_iso(), "updated_at": _now_iso()}
        account.tickets.append(ticket)
        return await self._answer({"ticket": ticket})

    async def _ticket(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        ticket = self._find_ticket(account, request.path_params["id"])
        if ticket is None:
            return JSONResponse({"error": "Not found"}, status_code=404)
        return JSONResponse({"ticket": ticket})

    def _new_comment(self, ticket_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": next(self._ids), "ticket_id": ticket_id, "subject": body.get("subject"),
                "body": body.get("body"), "hidden": bool(body.get("hidden", False)),
                "tech": "Hub", "created_at": _now_iso(), "updated_at": _now_iso()}

    async def _comment(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        ticket = self._find_ticket(account, request.path_params["id"])
        if ticket is None:
            return JSONResponse({"error": "Not found"}, status_code=404)
        body = await request.json()
        if not body.get("subject") or not body.get("body"):
            return JSONResponse({"success": False, "message": ["Body can't be blank"]},
                                status_code=422)
        comment = self._new_comment(ticket["id"], body)
        ticket["comments"].append(comment)
        ticket["updated_at"] = _now_iso()
        return await self._answer({"comment": comment})

    async def _answer(self, payload: dict[str, Any]) -> Response:
        if self.timeout_after_create > 0:
            # Written, but the answer comes too late: the client gives up first.
            self.timeout_after_create -= 1
            await asyncio.sleep(self.hold_s)
        return JSONResponse(payload)

    def tech_comment(self, ticket: dict[str, Any], body: str, *, hidden: bool = False,
                     tech: str = "Tina Tech", status: str | None = None) -> dict[str, Any]:
        """A technician comments on `ticket` in Syncro's web app (and may change its
        status, as *Resolve* does); returns the comment."""
        comment = {**self._new_comment(ticket["id"], {
            "subject": "Resolved" if status == "Resolved" else "Update", "body": body,
            "hidden": hidden}), "tech": tech, "user_id": 7}
        ticket["comments"].append(comment)
        if status is not None:
            ticket["status"] = status
        ticket["updated_at"] = _now_iso()
        return comment

    # ---- the Notification Center -------------------------------------------------------

    @staticmethod
    def webhook_body(subdomain: str, trigger: str, record: dict[str, Any]) -> dict[str, Any]:
        """What Syncro posts for `trigger` (a key of WEBHOOK_HEADLINES) about `record`."""
        kind = trigger.split(".", 1)[0]
        link = f"https://{subdomain}.syncromsp.com/{_LINK_SEGMENT[kind]}/{record['id']}"
        return {"text": f"{WEBHOOK_HEADLINES[trigger]}\n{link}", "link": link,
                "attributes": record}

    async def send_webhook(self, url: str, subdomain: str, trigger: str,
                           record: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=15) as client:
            return await client.post(url, json=self.webhook_body(subdomain, trigger, record),
                                     headers={"User-Agent": "Syncro Webhooks"})

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeSyncro:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + \
        f".{int(time.time() * 1000) % 1000:03d}-00:00"
