"""A loopback Microsoft Graph v1.0: one user's contacts, calendar, to-do tasks and mail in
Graph's documented wire format (checked with Microsoft's own SDK as the oracle,
tests/integration/test_graph_fake_oracle.py).

Base URL ``{url}`` is ``http://127.0.0.1:{port}/v1.0``. Speaks:

- ``GET /me``; ``GET|POST /me/contacts``, ``GET|PATCH|DELETE /me/contacts/{id}``,
  ``GET /me/contacts/delta``; ``POST /me/events``, ``GET|PATCH|DELETE /me/events/{id}``,
  ``GET /me/events``, ``GET /me/calendarView`` and ``/me/calendarView/delta`` (with
  ``startDateTime``/``endDateTime``); ``GET /me/todo/lists``, the same CRUD and delta on
  ``/me/todo/lists/{id}/tasks``; ``GET /me/messages`` (``$filter=receivedDateTime ge``,
  ``$orderby``), ``GET /me/messages/{id}``, a message's or an event's attachments
  (tests/fakes/graph_attachments.py, `attachments`). ``delta()`` is accepted for ``delta``.
- camelCase items with ``@odata.etag``, collections as ``{"value": […]}`` with
  ``@odata.nextLink`` (page size from ``Prefer: odata.maxpagesize`` or ``$top``, else
  `page_size`) and, ending a delta round, ``@odata.deltaLink``; a later round lists
  what changed since, deletes as ``{"id", "@removed": {"reason": "deleted"}}``.
- ``$filter`` on contacts: ``displayName eq '…'`` and
  ``emailAddresses/any(a:a/address eq '…')``; others are 400.
- ``Prefer: outlook.timezone="…"``: event times answered in that zone (IANA or UTC).
- ``/subscriptions`` and change notifications (tests/fakes/graph_notify.py, `subs`).
- Errors as ``{"error": {"code", "message"}}``: 401 without the bearer token, 404,
  412 when If-Match is not the item's etag, 429 with ``Retry-After`` (`throttle`); the
  next N requests of one route answered 503, 429 (+ ``Retry-After``) or another status
  (`fail`, recorded in `failed`).
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port
from tests.fakes.graph_attachments import GraphAttachments
from tests.fakes.graph_notify import GraphSubscriptions
from tests.support import LoopbackServer

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
_TYPES = {"contacts": "contact", "events": "event", "tasks": "todoTask",
          "messages": "message"}
_BY_NAME = re.compile(r"^displayName eq '((?:[^']|'')*)'$")
_BY_EMAIL = re.compile(r"^emailAddresses/any\((\w+):\1/address eq '((?:[^']|'')*)'\)$")
_RECEIVED = re.compile(r"^receivedDateTime ge (\S+)$")


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status,
                    headers=headers, media_type="application/json")


def _iso(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _instant(text: str) -> datetime:
    text = re.sub(r"\.(\d+)", lambda m: "." + m.group(1)[:6].ljust(6, "0"), text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wall(value: dict[str, Any]) -> datetime:
    """A dateTimeTimeZone as an aware datetime (IANA names and UTC only)."""
    moment = _instant(value["dateTime"]).replace(tzinfo=None)
    return moment.replace(tzinfo=ZoneInfo(value.get("timeZone") or "UTC"))


class FakeGraph:
    def __init__(self, *, token: str = "graph-token",  # noqa: S107
                 page_size: int = 10) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1.0"
        self.token = token
        self.page_size = page_size
        self.me = {"id": "6e7b768e-07e2-4810-8459-485f84f8f204", "displayName": "Megan Bowen",
                   "givenName": "Megan", "surname": "Bowen", "mail": "megan@contoso.com",
                   "userPrincipalName": "megan@contoso.onmicrosoft.com"}
        self.task_lists = [
            {"id": "AAMkTasksDefault", "displayName": "Tasks", "isOwner": True,
             "isShared": False, "wellknownListName": "defaultList"},
            {"id": "AAMkTasksOther", "displayName": "Groceries", "isOwner": True,
             "isShared": False, "wellknownListName": "none"}]
        # collection → id → item; a delete leaves the id's change sequence in `gone`.
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.seq: dict[str, dict[str, int]] = {}
        self.gone: dict[str, dict[str, int]] = {}
        self._seq = 0
        self._ids = itertools.count(1)
        self._last_ms = 0
        self._throttled: list[str] = []  # Retry-After values of the next 429s
        # (method, path) → (status, Retry-After) of its next failures (`fail`).
        self._failing: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
        self.failed: list[tuple[str, str, int]] = []  # (method, path, status) answered
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.subs = GraphSubscriptions(self)
        self.attachments = GraphAttachments(self)
        app = Starlette(routes=[Route("/v1.0/{path:path}", self._handle,
                                      methods=["GET", "POST", "PATCH", "DELETE"])])
        self._http = LoopbackServer(app, self.port)

    async def start(self) -> None:
        await self._http.start()

    async def stop(self) -> None:
        await self.subs.stop()
        await self._http.stop()

    # Test knobs -------------------------------------------------------------------------

    def throttle(self, times: int = 1, retry_after: str = "1") -> None:
        """Answer the next `times` requests 429 with this Retry-After."""
        self._throttled += [retry_after] * times

    def fail(self, method: str, path: str, times: int = 1, status: int = 503,
             retry_after: str | None = None) -> None:
        """Answer the next `times` requests of `method` on `path` (under the base URL,
        e.g. ``subscriptions/{id}/reauthorize``) with `status` (503, 429, 500, …) and
        this Retry-After, if any; each is recorded in `failed`."""
        self._failing.setdefault((method.upper(), path.strip("/")), []).extend(
            [(status, retry_after)] * times)

    def now_ms(self) -> int:
        # Strictly increasing, so every write has its own lastModifiedDateTime.
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def _touch(self, coll: str, item: dict[str, Any]) -> dict[str, Any]:
        change = "updated" if item["id"] in self.seq.get(coll, {}) else "created"
        self._seq += 1
        item["lastModifiedDateTime"] = _iso(self.now_ms())
        item["@odata.etag"] = f'W/"CQAAABYAAA{self._seq:08d}"'
        if coll != "tasks" and coll != "messages":
            item["changeKey"] = f"CQAAABYAAA{self._seq:08d}"
        self.items.setdefault(coll, {})[item["id"]] = item
        self.seq.setdefault(coll, {})[item["id"]] = self._seq
        self.subs.changed(coll, item["id"], change, item["@odata.etag"])
        return item

    def add(self, coll: str, item: dict[str, Any], list_id: str = "AAMkTasksDefault"
            ) -> dict[str, Any]:
        """Create an item directly, as the user would in Outlook."""
        return self._create(self._key(coll, list_id), dict(item))

    def edit(self, coll: str, item_id: str, list_id: str = "AAMkTasksDefault",
             **fields: Any) -> dict[str, Any]:
        key = self._key(coll, list_id)
        item = self.items[key][item_id]
        item.update(fields)
        return self._touch(key, item)

    def remove(self, coll: str, item_id: str, list_id: str = "AAMkTasksDefault") -> None:
        key = self._key(coll, list_id)
        del self.items[key][item_id]
        self._seq += 1
        self.seq[key].pop(item_id, None)
        self.gone.setdefault(key, {})[item_id] = self._seq
        self.subs.changed(key, item_id, "deleted", None)

    def live(self, coll: str, list_id: str = "AAMkTasksDefault") -> list[dict[str, Any]]:
        return list(self.items.get(self._key(coll, list_id), {}).values())

    @staticmethod
    def _key(coll: str, list_id: str) -> str:
        return f"tasks:{list_id}" if coll == "tasks" else coll

    # Items ------------------------------------------------------------------------------

    def _create(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        coll = key.split(":")[0]
        n = next(self._ids)
        item = {"id": f"AAMkAGI2{coll[:3].upper()}{n:06d}=",
                "createdDateTime": _iso(self.now_ms())}
        if coll == "contacts":
            item |= {"givenName": None, "surname": None, "displayName": "",
                     "emailAddresses": [], "businessPhones": [], "mobilePhone": None,
                     "jobTitle": None, "companyName": None, "categories": []}
        elif coll == "events":
            item |= {"subject": "", "body": {"contentType": "text", "content": ""},
                     "isAllDay": False, "sensitivity": "normal", "type": "singleInstance",
                     "seriesMasterId": None, "location": {"displayName": ""},
                     "attendees": [], "iCalUId": f"040000008200E00074C5B7101A82E008{n:08d}",
                     "organizer": {"emailAddress": {"name": self.me["displayName"],
                                                    "address": self.me["mail"]}}}
        elif coll == "tasks":
            item |= {"title": "", "status": "notStarted", "importance": "normal",
                     "body": {"contentType": "text", "content": ""}}
        elif coll == "messages":
            item |= {"isDraft": False, "toRecipients": [], "ccRecipients": []}
        item.update(body)
        return self._touch(key, item)

    def _render(self, coll: str, item: dict[str, Any], request: Request) -> dict[str, Any]:
        out = dict(item)
        if coll == "events":
            m = re.search(r'outlook\.timezone="([^"]+)"', request.headers.get("prefer", ""))
            if m and not out.get("isAllDay"):
                for bound in ("start", "end"):
                    if out.get(bound):
                        moment = _wall(out[bound]).astimezone(ZoneInfo(m.group(1)))
                        out[bound] = {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                                      "timeZone": m.group(1)}
        return out

    # HTTP -------------------------------------------------------------------------------

    def _json(self, value: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(value), status, media_type=ODATA_JSON)

    async def _handle(self, request: Request) -> Response:
        path = request.path_params["path"].rstrip("/")
        query = dict(request.query_params)
        self.requests.append((request.method, path, query, dict(request.headers)))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "InvalidAuthenticationToken",
                          "Access token is empty." if "authorization" not in request.headers
                          else "IDX14100: JWT is not well formed.")
        if self._throttled:
            return _error(429, "TooManyRequests", "Too many requests, retry later.",
                          {"Retry-After": self._throttled.pop(0)})
        if failing := self._failing.get((request.method, path)):
            status, retry_after = failing.pop(0)
            self.failed.append((request.method, path, status))
            return _error(status, "TooManyRequests" if status == 429 else
                          "ServiceNotAvailable" if status == 503 else "InternalServerError",
                          "Injected failure.",
                          None if retry_after is None else {"Retry-After": retry_after})
        parts = [p.removesuffix("()") for p in path.split("/")]
        if parts[:1] == ["subscriptions"]:
            return await self.subs.handle(request, parts[1:])
        if parts[:1] != ["me"]:
            return _error(400, "BadRequest", "Resource not found for the segment.")
        parts = parts[1:]
        if not parts:
            return self._json({"@odata.context": f"{self.url}/$metadata#users/$entity",
                               **self.me})
        if parts == ["todo", "lists"]:
            return self._json({"value": self.task_lists})
        if parts[:2] == ["todo", "lists"] and len(parts) >= 4 and parts[3] == "tasks":
            if parts[2] not in {x["id"] for x in self.task_lists}:
                return _error(404, "ErrorItemNotFound", "The specified object was not "
                              "found in the store.")
            key, rest = f"tasks:{parts[2]}", parts[4:]
        elif parts[0] in ("messages", "events") and parts[2:3] == ["attachments"]:
            return self.attachments.handle(request, parts[1], parts[3:], parts[0])
        elif parts[0] in ("contacts", "events", "messages", "calendarView"):
            key, rest = parts[0], parts[1:]
        else:
            return _error(400, "BadRequest", f"Unsupported segment {parts[0]}")
        return await self._collection(request, key, rest, query)

    async def _collection(self, request: Request, key: str, rest: list[str],
                          query: dict[str, str]) -> Response:
        window = key == "calendarView"
        if window:
            key = "events"
            if "startDateTime" not in query and "$deltatoken" not in query \
                    and "$skiptoken" not in query:
                return _error(400, "ErrorInvalidParameter", "This request requires a time "
                              "window specified by the query string parameters "
                              "StartDateTime and EndDateTime.")
        coll = key.split(":")[0]
        items = self.items.setdefault(key, {})
        if rest == ["delta"] and request.method == "GET":
            return self._delta(request, key, query, window)
        if rest and rest[0] != "delta":
            item_id = rest[0]
            item = items.get(item_id)
            if item is None or len(rest) > 1:
                return _error(404, "ErrorItemNotFound",
                              "The specified object was not found in the store.")
            if request.method == "GET":
                return self._json(self._render(coll, item, request))
            match = request.headers.get("if-match")
            if match is not None and match not in ("*", item["@odata.etag"]):
                return _error(412, "ErrorIrresolvableConflict", "The change key passed "
                              "in the request does not match the current change key for "
                              "the item.")
            if request.method == "DELETE":
                self.remove(coll, item_id, key.partition(":")[2])
                return Response(status_code=204)
            if request.method == "PATCH" and coll != "messages":
                item.update(orjson.loads(await request.body()))
                return self._json(self._render(coll, self._touch(key, item), request))
            return _error(405, "ErrorInvalidRequest", "The OData request is not supported.")
        if request.method == "POST" and not window and coll != "messages":
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                return _error(400, "RequestBodyRead", "Cannot read the request body.")
            return self._json(self._render(coll, self._create(key, body), request), 201)
        if request.method != "GET" or rest:
            return _error(405, "ErrorInvalidRequest", "The OData request is not supported.")
        found = list(items.values())
        if window:
            found = self._in_window(found, query["startDateTime"], query["endDateTime"])
        flt = query.get("$filter")
        if flt is not None:
            selected = self._filter(coll, found, flt)
            if selected is None:
                return _error(400, "ErrorInvalidUrlQueryFilter",
                              "The query filter contains one or more invalid nodes.")
            found = selected
        if query.get("$orderby", "").startswith("receivedDateTime"):
            found.sort(key=lambda x: x.get("receivedDateTime") or "")
        size = self._size(request, query)
        skip = int(query.get("$skip", "0"))
        body: dict[str, Any] = {"value": [self._render(coll, x, request)
                                          for x in found[skip:skip + size]]}
        if skip + size < len(found):
            body["@odata.nextLink"] = (f"{self.url}/{request.path_params['path']}?"
                                       + urlencode({**query, "$skip": str(skip + size)}))
        return self._json(body)

    def _size(self, request: Request, query: dict[str, str]) -> int:
        m = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
        if "$top" in query:
            return int(query["$top"])
        return int(m.group(1)) if m else self.page_size

    @staticmethod
    def _in_window(items: list[dict[str, Any]], start: str, end: str
                   ) -> list[dict[str, Any]]:
        lo, hi = _instant(start), _instant(end)
        return [x for x in items if x.get("start") and x.get("end")
                and _wall(x["start"]) < hi and _wall(x["end"]) > lo]

    @staticmethod
    def _filter(coll: str, items: list[dict[str, Any]], flt: str
                ) -> list[dict[str, Any]] | None:
        flt = flt.strip()
        if coll == "contacts" and (m := _BY_NAME.match(flt)):
            name = m.group(1).replace("''", "'").casefold()
            return [x for x in items if (x.get("displayName") or "").casefold() == name]
        if coll == "contacts" and (m := _BY_EMAIL.match(flt)):
            addr = m.group(2).replace("''", "'").casefold()
            return [x for x in items if any((e.get("address") or "").casefold() == addr
                                            for e in x.get("emailAddresses") or [])]
        if coll == "messages" and (m := _RECEIVED.match(flt)):
            since = _instant(m.group(1))
            return [x for x in items if _instant(x["receivedDateTime"]) >= since]
        return None

    def _delta(self, request: Request, key: str, query: dict[str, str], window: bool
               ) -> Response:
        """A delta round: the state is (since, upto, offset[, window]) in the token."""
        coll = key.split(":")[0]
        if "$skiptoken" in query or "$deltatoken" in query:
            raw = query.get("$skiptoken") or query["$deltatoken"]
            try:
                state = orjson.loads(base64.urlsafe_b64decode(raw))
            except ValueError:
                return _error(400, "SyncStateInvalid", "Invalid sync state.")
            if "$deltatoken" in query:
                state = {**state, "since": state["upto"], "upto": self._seq, "offset": 0}
        else:
            state = {"since": 0, "upto": self._seq, "offset": 0}
            if window:
                state |= {"start": query["startDateTime"], "end": query["endDateTime"]}
        since, upto = state["since"], state["upto"]
        seqs = self.seq.get(key, {})
        changed = [self.items[key][i] for i, s in seqs.items() if since < s <= upto]
        if "start" in state:
            changed = self._in_window(changed, state["start"], state["end"])
        entries = [self._render(coll, x, request) for x in changed]
        if since:
            entries += [{"@odata.type": f"#microsoft.graph.{_TYPES[coll]}", "id": i,
                         "@removed": {"reason": "deleted"}}
                        for i, s in self.gone.get(key, {}).items() if since < s <= upto]
        entries.sort(key=lambda x: x["id"])
        size = self._size(request, {})
        offset = state["offset"]
        page = entries[offset:offset + size]
        base = f"{self.url}/{request.path_params['path']}"
        body: dict[str, Any] = {"@odata.context": f"{self.url}/$metadata#Collection("
                                                  f"{_TYPES[coll]})", "value": page}
        if offset + size < len(entries):
            token = base64.urlsafe_b64encode(orjson.dumps(
                {**state, "offset": offset + size})).decode()
            body["@odata.nextLink"] = f"{base}?$skiptoken={token}"
        else:
            token = base64.urlsafe_b64encode(orjson.dumps({**state, "offset": 0})).decode()
            body["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
        return self._json(body)
