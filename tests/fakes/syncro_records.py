"""The loopback Syncro's customers, contacts, tickets and leads CRUD, as Syncro's API v1
shapes it.

- ``GET /customers`` filters by ``query`` (names, email, phones), ``firstname``,
  ``lastname``, ``business_name`` (case-insensitive parts), ``email``, ``id``, ``id_not``,
  and leaves disabled customers out unless ``include_disabled=true``; ``sort`` is
  ``"<field> ASC|DESC"``. ``POST`` (422 without a business or last name),
  ``PUT``/``DELETE /customers/{id}`` (404 for an unknown id).
- ``GET /tickets`` filters by ``contact_id``, ``number``, ``status`` (``Not Closed``: not
  Resolved), ``user_id``, ``mine`` (the token's user, 7), ``query`` (subject),
  ``resolved_after``, ``created_after``, ``since_updated_at``; ``PUT``/``DELETE
  /tickets/{id}`` (``comments_attributes`` added as comments; 422 for a blank subject).
- ``GET /contacts`` filters by ``customer_id`` and ``query`` (name, email, phones) and
  takes ``sort`` like customers; ``POST`` (422 without a ``name`` or an existing
  ``customer_id``), ``GET``/``PUT``/``DELETE /contacts/{id}`` (404 for an unknown id).
- ``GET /leads`` filters by ``query``, ``status_list``, ``users``, ``mailbox_ids``
  (comma-separated), ``has_ticket``; ``POST``, ``GET``/``PUT /leads/{id}``; Syncro's API
  deletes no lead (no route: 404).

Records are wrapped as ``{"customer": {…}}``; lists as ``{"customers": […], "meta": …}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from tests.fakes.syncro import FakeSyncro

TOKEN_USER_ID = 7  # the user `GET /me` answers for


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + \
        f".{int(time.time() * 1000) % 1000:03d}-00:00"


def _has(value: Any, part: str) -> bool:
    return isinstance(value, str) and part.casefold() in value.casefold()


def _sorted(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sort = request.query_params.get("sort")
    if not sort:
        return records
    name, _, order = sort.partition(" ")
    return sorted(records, key=lambda r: (r.get(name) is None, str(r.get(name) or "")),
                  reverse=order.strip().upper() == "DESC")


def filter_customers(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query_params
    out = [c for c in records if q.get("include_disabled") == "true" or not c.get("disabled")]
    if "query" in q:
        out = [c for c in out if any(_has(c.get(f), q["query"]) for f in (
            "firstname", "lastname", "business_name", "email", "phone", "mobile"))]
    for name in ("firstname", "lastname", "business_name"):
        if name in q:
            out = [c for c in out if _has(c.get(name), q[name])]
    if "email" in q:
        out = [c for c in out if str(c.get("email") or "").casefold() == q["email"].casefold()]
    if "id" in q:
        out = [c for c in out if str(c["id"]) == q["id"]]
    if "id_not" in q:
        out = [c for c in out if str(c["id"]) != q["id_not"]]
    return _sorted(request, out)


def _since(value: Any, bound: str) -> bool:
    # ISO 8601 strings of one format compare as times; a date bound is the day's start.
    return isinstance(value, str) and value[:len(bound)] >= bound


def filter_tickets(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query_params
    out = list(records)
    for name in ("contact_id", "number", "user_id"):
        if name in q:
            out = [t for t in out if str(t.get(name)) == q[name]]
    if "status" in q:
        out = [t for t in out if t.get("status") != "Resolved"] if q["status"] == \
            "Not Closed" else [t for t in out if t.get("status") == q["status"]]
    if q.get("mine") == "true":
        out = [t for t in out if t.get("user_id") == TOKEN_USER_ID]
    if "query" in q:
        out = [t for t in out if _has(t.get("subject"), q["query"])]
    for name, field in (("resolved_after", "resolved_at"), ("created_after", "created_at"),
                        ("since_updated_at", "updated_at")):
        if name in q:
            out = [t for t in out if _since(t.get(field), q[name])]
    return out


def ticket_fields(body: dict[str, Any]) -> dict[str, Any]:
    """What a ticket keeps of a create or update body (comments are added as comments)."""
    return {k: v for k, v in body.items() if k != "comments_attributes"}


def _filter_leads(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query_params
    out = list(records)
    if "query" in q:
        out = [x for x in out if any(_has(x.get(f), q["query"]) for f in (
            "first_name", "last_name", "business_name", "email", "phone", "mobile"))]
    for name, field in (("status_list", "status"), ("users", "user_id"),
                        ("mailbox_ids", "mailbox_id")):
        if name in q:
            wanted = set(q[name].split(","))
            out = [x for x in out if str(x.get(field)) in wanted]
    if "has_ticket" in q:
        out = [x for x in out if (x.get("ticket_id") is not None) == (q["has_ticket"] == "true")]
    return out


def filter_contacts(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query_params
    out = list(records)
    if "customer_id" in q:
        out = [c for c in out if str(c.get("customer_id")) == q["customer_id"]]
    if "query" in q:
        out = [c for c in out if any(_has(c.get(f), q["query"]) for f in (
            "name", "email", "phone", "mobile"))]
    return _sorted(request, out)


def _unprocessable(*messages: str) -> Response:
    return JSONResponse({"success": False, "message": list(messages)}, status_code=422)


def _not_found() -> Response:
    return JSONResponse({"error": "Not found"}, status_code=404)


def records_routes(fake: FakeSyncro) -> list[Route]:
    """The routes, over `fake`'s accounts (its gate: auth, rate, delays, failures)."""

    def find(records: list[dict[str, Any]], record_id: int) -> dict[str, Any] | None:
        return next((r for r in records if r["id"] == record_id), None)

    async def customer_create(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        body = await request.json()
        if not body.get("business_name") and not body.get("lastname"):
            return _unprocessable("Last name can't be blank", "Business name can't be blank")
        customer = fake.add_customer(account, **{"firstname": None, "lastname": None, **body})
        return await fake._answer({"customer": customer})

    async def customer_write(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        customer = find(account.customers, request.path_params["id"])
        if customer is None:
            return _not_found()
        if request.method == "DELETE":
            account.customers.remove(customer)
            return JSONResponse({"message": f"Customer {customer['id']} was deleted."})
        body = await request.json()
        if "email" in body and body["email"] is not None and "@" not in body["email"]:
            return JSONResponse({"success": False, "errors": {"email": ["is invalid"]}},
                                status_code=422)
        customer.update(body, updated_at=now_iso())
        return JSONResponse({"customer": customer})

    async def ticket_write(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        ticket = find(account.tickets, request.path_params["id"])
        if ticket is None:
            return _not_found()
        if request.method == "DELETE":
            account.tickets.remove(ticket)
            return JSONResponse({"message": f"Ticket {ticket['number']} was deleted."})
        body = await request.json()
        if "subject" in body and not body["subject"]:
            return _unprocessable("Subject can't be blank")
        if "customer_id" in body and find(account.customers, body["customer_id"]) is None:
            return _unprocessable("Customer must exist")
        ticket.update(ticket_fields(body), updated_at=now_iso())
        if body.get("status") == "Resolved":
            ticket["resolved_at"] = now_iso()
        for c in body.get("comments_attributes") or []:
            ticket["comments"].append(fake._new_comment(ticket["id"], c))
        return JSONResponse({"ticket": ticket})

    async def contacts(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        if request.method == "GET":
            return fake._page(request, "contacts", filter_contacts(request, account.contacts))
        body = await request.json()
        if find(account.customers, body.get("customer_id")) is None:
            return _unprocessable("Customer must exist")
        if not body.get("name"):
            return _unprocessable("Name can't be blank")
        contact = {"name": None, "email": None, "phone": None, "mobile": None, "title": None,
                   **body, "id": next(fake._ids), "created_at": now_iso(),
                   "updated_at": now_iso()}
        account.contacts.append(contact)
        return await fake._answer({"contact": contact})

    async def contact(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        found = find(account.contacts, request.path_params["id"])
        if found is None:
            return _not_found()
        if request.method == "DELETE":
            account.contacts.remove(found)
            return JSONResponse({"message": f"Contact {found['id']} was deleted."})
        if request.method == "PUT":
            body = await request.json()
            if "name" in body and not body["name"]:
                return _unprocessable("Name can't be blank")
            found.update(body, updated_at=now_iso())
        return JSONResponse({"contact": found})

    async def leads(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        if request.method == "GET":
            return fake._page(request, "leads", _filter_leads(request, account.leads))
        body = await request.json()
        if not any(body.get(f) for f in ("first_name", "last_name", "business_name", "email")):
            return _unprocessable("Name or email can't be blank")
        lead = {"first_name": None, "last_name": None, "business_name": None, "email": None,
                "status": "New", "ticket_id": None, **body, "id": next(fake._ids),
                "created_at": now_iso(), "updated_at": now_iso()}
        account.leads.append(lead)
        return await fake._answer({"lead": lead})

    async def lead(request: Request) -> Response:
        account = await fake._gate(request)
        if isinstance(account, Response):
            return account
        found = find(account.leads, request.path_params["id"])
        if found is None:
            return _not_found()
        if request.method == "PUT":
            found.update(await request.json(), updated_at=now_iso())
        return JSONResponse({"lead": found})

    return [
        Route("/{sub}/api/v1/customers", customer_create, methods=["POST"]),
        Route("/{sub}/api/v1/customers/{id:int}", customer_write, methods=["PUT", "DELETE"]),
        Route("/{sub}/api/v1/tickets/{id:int}", ticket_write, methods=["PUT", "DELETE"]),
        Route("/{sub}/api/v1/contacts", contacts, methods=["GET", "POST"]),
        Route("/{sub}/api/v1/contacts/{id:int}", contact, methods=["GET", "PUT", "DELETE"]),
        Route("/{sub}/api/v1/leads", leads, methods=["GET", "POST"]),
        Route("/{sub}/api/v1/leads/{id:int}", lead, methods=["GET", "PUT"]),
    ]
