"""The reference platform: the seed-001 connector contract served over HTTP, as a CRM
vendor would serve it for Switchboard's platform connector (README, "Platform contract").

A vendor can read this file as the contract in code. In memory, per kind (accounts,
contacts, tasks, events, e-mails, opportunities), every record is kept with its
``modifiedAt`` (epoch ms, strictly increasing) and per-field ``fieldModifiedAt``; a
delete leaves a tombstone (``{"id", "modifiedAt", "deleted": true}``) so "updated since"
listings report it.

- Auth: ``Authorization: Bearer <token>`` or Basic with the token as user name (any
  password); 401 otherwise. A token acts as one user of one org (`add_user`).
- ``GET /me``; ``GET /users?email=…`` (repeated).
- ``GET /me/{resource}?updatedSince=&cursor=&limit=`` — the user's records (``ownerId``
  theirs); with ``updatedSince`` those modified at or after it, tombstones included,
  without it the live ones. Ordered by (``modifiedAt``, ``id``); the cursor is the last
  key of the page (keyset paging: a record changed while a client pages moves behind
  the cursor and is read, never skipped).
- ``GET /{resource}?name=|domain=|email=…|emailDomain=|contactId=…`` — lookups among
  live records (case-insensitive), paged the same way.
- ``POST /{resource}`` → 201 and the record; ``GET``/``PATCH``/``DELETE
  /{resource}/{id}`` → 200 record / 200 record / 204; 404 for an unknown or deleted id;
  422 for a body that is not the record's JSON; 409 for a second live contact with the
  same e-mail (`unique_emails`).
- An e-mail's or an event's ``attachments`` (``[{name, contentType, size, contentBytes}]``,
  base64; a PATCH's replace the event's) are
  kept with it and answered without their ``contentBytes`` (a platform stores the
  files; sending them back would double the traffic); 422 if ``contentBytes`` is not
  base64 of ``size`` bytes.

Errors are ``{"error": {"code", "message"}}``. Knobs: `refuse_next` (answer that many
requests 429 with ``Retry-After: retry_after``), `answer_next` (canned answers for the
next requests, after auth), `calls` (method, path, query of every request).
"""

from __future__ import annotations

import base64
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.brokers import free_port
from switchboard.sync.records import KINDS, Kind
from tests.support import LoopbackServer

RESOURCES: dict[str, Kind] = {
    "accounts": "account", "contacts": "contact", "tasks": "task", "events": "event",
    "emails": "email", "opportunities": "opportunity"}
SERVER_FIELDS = {"kind", "id", "modifiedAt", "fieldModifiedAt", "deleted"}
# What each kind's JSON may hold: the canonical record's fields, by their wire names.
FIELDS: dict[Kind, set[str]] = {
    k: {f.encode_name for f in msgspec.structs.fields(t)} - SERVER_FIELDS
    for k, t in KINDS.items()}
MAX_LIMIT = 500


@dataclass
class PlatformUser:
    org_id: str
    user_id: str
    name: str
    email: str
    timezone: str = "UTC"

    def json(self) -> dict[str, str]:
        return {"orgId": self.org_id, "userId": self.user_id, "name": self.name,
                "email": self.email, "timezone": self.timezone}


@dataclass
class Canned:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _answer(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as answered: attachments without their bytes."""
    if not rec.get("attachments"):
        return rec
    return {**rec, "attachments": [{k: v for k, v in a.items() if k != "contentBytes"}
                                   for a in rec["attachments"]]}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None
          ) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def _cursor(rec: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{rec['modifiedAt']}:{rec['id']}".encode()).decode()


def _after(cursor: str) -> tuple[int, str]:
    at, _, rid = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
    return int(at), rid


def _fold(value: Any) -> str:
    return value.strip().casefold() if isinstance(value, str) else ""


def _domain_of(email: Any) -> str:
    return _fold(email).rpartition("@")[2] if "@" in _fold(email) else ""


class FakePlatform:
    def __init__(self, *, page_size: int = 50, unique_emails: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.page_size = page_size
        self.unique_emails = unique_emails
        self.tokens: dict[str, PlatformUser] = {}
        self.records: dict[Kind, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.refuse_next = 0
        self.retry_after = 1
        self.answer_next: list[Canned] = []
        self.calls: list[tuple[str, str, list[tuple[str, str]]]] = []
        self._ids = itertools.count(1)
        self._last_ms = 0
        app = Starlette(routes=[
            Route("/me", self._me, methods=["GET"]),
            Route("/users", self._users, methods=["GET"]),
            Route("/me/{res}", self._mine, methods=["GET"]),
            Route("/{res}", self._collection, methods=["GET", "POST"]),
            Route("/{res}/{id}", self._one, methods=["GET", "PATCH", "DELETE"]),
        ])
        self._http = LoopbackServer(app, self.port)

    # ---- test setup ------------------------------------------------------------------

    def add_user(self, token: str, *, org_id: str = "org1", user_id: str = "u1",
                 name: str = "Pat Platform", email: str = "pat@platform.test"
                 ) -> PlatformUser:
        user = self.tokens[token] = PlatformUser(org_id, user_id, name, email)
        return user

    def now(self) -> int:
        """The platform's clock: epoch ms, strictly increasing across writes."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def add(self, kind: Kind, owner_id: str = "u1", **values: Any) -> dict[str, Any]:
        """A record made in the platform's own UI (camelCase fields)."""
        now = self.now()
        rec = {"ownerId": owner_id, **values, "id": f"{kind[0].upper()}{next(self._ids)}",
               "modifiedAt": now, "fieldModifiedAt": {k: now for k in values}}
        self.records[kind][rec["id"]] = rec
        return rec

    def edit(self, kind: Kind, rid: str, **values: Any) -> dict[str, Any]:
        rec = self.records[kind][rid]
        now = self.now()
        rec.update(values, modifiedAt=now)
        rec["fieldModifiedAt"].update((k, now) for k in values)
        return rec

    def remove(self, kind: Kind, rid: str) -> None:
        """Delete as a user would: a tombstone stays for "updated since" listings."""
        self.records[kind][rid] = {"id": rid, "modifiedAt": self.now(), "deleted": True,
                                   "ownerId": self.records[kind][rid].get("ownerId")}

    def live(self, kind: Kind) -> list[dict[str, Any]]:
        return [r for r in self.records[kind].values() if not r.get("deleted")]

    # ---- the contract ------------------------------------------------------------------

    def _auth(self, request: Request) -> PlatformUser | Response:
        self.calls.append((request.method, request.url.path,
                           list(request.query_params.multi_items())))
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token = value
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(value, validate=True).decode().partition(":")[0]
            except ValueError:
                token = ""
        elif scheme.lower() != "bearer":
            token = ""
        user = self.tokens.get(token)
        if user is None:
            return error(401, "unauthorized", "invalid or expired token")
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return error(429, "rate_limited", "too many requests",
                         {"Retry-After": str(self.retry_after)})
        if self.answer_next:
            canned = self.answer_next.pop(0)
            return JSONResponse(canned.body, canned.status, canned.headers)
        return user

    def _kind(self, request: Request) -> Kind | Response:
        kind = RESOURCES.get(request.path_params["res"])
        return error(404, "not_found", "no such resource") if kind is None else kind

    def _public(self, rec: dict[str, Any], kind: Kind) -> dict[str, Any]:
        if rec.get("deleted"):
            return {"id": rec["id"], "modifiedAt": rec["modifiedAt"], "deleted": True}
        return rec

    def _paged(self, request: Request, kind: Kind, records: list[dict[str, Any]]
               ) -> Response:
        q = request.query_params
        try:
            limit = min(MAX_LIMIT, max(1, int(q.get("limit", self.page_size))))
            after = _after(q["cursor"]) if "cursor" in q else None
        except ValueError:
            return error(400, "bad_request", "bad limit or cursor")
        ordered = sorted(records, key=lambda r: (r["modifiedAt"], r["id"]))
        if after is not None:
            ordered = [r for r in ordered if (r["modifiedAt"], r["id"]) > after]
        page = ordered[:limit]
        more = len(ordered) > limit
        return JSONResponse({"records": [self._public(r, kind) for r in page],
                             "nextCursor": _cursor(page[-1]) if more else None})

    async def _me(self, request: Request) -> Response:
        user = self._auth(request)
        return user if isinstance(user, Response) else JSONResponse(user.json())

    async def _users(self, request: Request) -> Response:
        user = self._auth(request)
        if isinstance(user, Response):
            return user
        wanted = {_fold(e) for e in request.query_params.getlist("email")}
        found = {u.user_id: u for u in self.tokens.values() if _fold(u.email) in wanted}
        return JSONResponse({"records": [u.json() for u in found.values()],
                             "nextCursor": None})

    async def _mine(self, request: Request) -> Response:
        user = self._auth(request)
        if isinstance(user, Response):
            return user
        kind = self._kind(request)
        if isinstance(kind, Response):
            return kind
        mine = [r for r in self.records[kind].values() if r.get("ownerId") == user.user_id]
        since = request.query_params.get("updatedSince")
        if since is None:
            mine = [r for r in mine if not r.get("deleted")]
        else:
            if not since.isdigit():
                return error(400, "bad_request", "updatedSince is epoch milliseconds")
            mine = [r for r in mine if r["modifiedAt"] >= int(since)]
        return self._paged(request, kind, mine)

    def _lookup(self, kind: Kind, request: Request) -> list[dict[str, Any]] | Response:
        q = request.query_params
        live = self.live(kind)
        if "name" in q:
            name = _fold(q["name"])
            return [r for r in live if name in (
                _fold(r.get("name") or r.get("subject")),
                _fold(f"{r.get('firstName') or ''} {r.get('lastName') or ''}"))]
        if "domain" in q:
            return [r for r in live if _fold(r.get("domain")) == _fold(q["domain"])]
        if "email" in q:
            wanted = {_fold(e) for e in q.getlist("email")}
            return [r for r in live if _fold(r.get("email")) in wanted]
        if "emailDomain" in q:
            return [r for r in live if _domain_of(r.get("email")) == _fold(q["emailDomain"])]
        if "contactId" in q:
            wanted = set(q.getlist("contactId"))
            return [r for r in live if wanted & set(r.get("contactIds") or [])]
        return error(400, "bad_request", "a lookup needs name, domain, email, emailDomain "
                     "or contactId (the user's records are at /me/…)")

    def _checked(self, kind: Kind, rec: dict[str, Any]) -> Response | None:
        try:
            msgspec.convert({k: v for k, v in rec.items() if k != "ownerId"}
                            | {"id": rec.get("id") or "x", "modifiedAt": 0},
                            KINDS[kind])
        except msgspec.ValidationError as exc:
            return error(422, "invalid", str(exc))
        for a in rec.get("attachments") or []:
            try:
                raw = base64.b64decode(a.get("contentBytes") or "", validate=True)
            except ValueError:
                raw = None
            if raw is None or len(raw) != a.get("size"):
                return error(422, "invalid", f"attachment {a.get('name')!r}: contentBytes "
                             "is not base64 of size bytes")
        return None

    def _duplicate(self, kind: Kind, rec: dict[str, Any]) -> Response | None:
        email = _fold(rec.get("email"))
        if kind != "contact" or not self.unique_emails or not email:
            return None
        if any(_fold(r.get("email")) == email and r["id"] != rec.get("id")
               for r in self.live(kind)):
            return error(409, "duplicate", f"a contact with e-mail {email} exists")
        return None

    async def _body(self, request: Request, kind: Kind) -> dict[str, Any] | Response:
        try:
            body = await request.json()
        except ValueError:
            return error(422, "invalid", "the body is not JSON")
        if not isinstance(body, dict):
            return error(422, "invalid", "the body is not a JSON object")
        unknown = set(body) - FIELDS[kind] - {"kind"}
        if unknown:
            return error(422, "invalid", f"unknown or read-only fields: {sorted(unknown)}")
        return {k: v for k, v in body.items() if k != "kind"}

    async def _collection(self, request: Request) -> Response:
        user = self._auth(request)
        if isinstance(user, Response):
            return user
        kind = self._kind(request)
        if isinstance(kind, Response):
            return kind
        if request.method == "GET":
            found = self._lookup(kind, request)
            return found if isinstance(found, Response) else self._paged(request, kind,
                                                                          found)
        body = await self._body(request, kind)
        if isinstance(body, Response):
            return body
        now = self.now()
        rec = {"ownerId": user.user_id, **body, "id": f"{kind[0].upper()}{next(self._ids)}",
               "modifiedAt": now, "fieldModifiedAt": {k: now for k in body}}
        refused = self._checked(kind, rec) or self._duplicate(kind, rec)
        if refused is not None:
            return refused
        self.records[kind][rec["id"]] = rec
        return JSONResponse(_answer(rec), status_code=201)

    async def _one(self, request: Request) -> Response:
        user = self._auth(request)
        if isinstance(user, Response):
            return user
        kind = self._kind(request)
        if isinstance(kind, Response):
            return kind
        rid = request.path_params["id"]
        rec = self.records[kind].get(rid)
        if rec is None or rec.get("deleted"):
            return error(404, "not_found", f"no {kind} {rid}")
        if request.method == "GET":
            return JSONResponse(_answer(rec))
        if request.method == "DELETE":
            self.remove(kind, rid)
            return Response(status_code=204)
        body = await self._body(request, kind)
        if isinstance(body, Response):
            return body
        candidate = {**rec, **body}
        refused = self._checked(kind, candidate) or self._duplicate(kind, candidate)
        if refused is not None:
            return refused
        return JSONResponse(_answer(self.edit(kind, rid, **body)))

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakePlatform:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()
