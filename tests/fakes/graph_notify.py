"""The loopback Graph's change notifications (part of tests/fakes/graph.py):
``POST|GET /subscriptions``, ``GET|PATCH|DELETE /subscriptions/{id}``,
``POST /subscriptions/{id}/reauthorize`` (204) as Graph v1.0 answers them, and the
notifications themselves.

Creating a subscription first sends Graph's validation request (``POST
{notificationUrl}?validationToken=…``, text/plain; the ``lifecycleNotificationUrl`` gets
one too) and expects the token back, 200 text/plain, within 10 s, else 400
``ValidationError``; ``expirationDateTime`` must be in
the future and at most 4,230 minutes away (To Do's and Outlook's common limit). Every
change to a watched collection (created, updated, deleted, made through the API or the
test knobs) is posted to the subscriptions of that resource as ``{"value": [{
subscriptionId, subscriptionExpirationDateTime, changeType, resource, resourceData,
clientState, tenantId}]}``; the answers' statuses are kept in `delivered`. With `lose`
set, change notifications are lost (counted in `lost`), as when Graph fails to deliver.

`lifecycle(id, event)` posts a lifecycle notification to the subscription's
``lifecycleNotificationUrl`` as Graph does: ``{"value": [{subscriptionId,
subscriptionExpirationDateTime, tenantId, clientState, lifecycleEvent}]}`` with
``lifecycleEvent`` one of ``reauthorizationRequired``, ``subscriptionRemoved`` (the
subscription is deleted first, as Graph has dropped it) and ``missed``.

`reroute` (prefix, replacement) stands in for DNS: a test hub's public URL is not the
port it serves on.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from tests.fakes.graph import FakeGraph

MAX_MINUTES = 4230
TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
APP = "24d3b144-21ae-4080-943f-7067b395b913"
_ODATA_TYPES = {"contacts": "#Microsoft.OutlookServices.Contact",
                "events": "#Microsoft.OutlookServices.Event",
                "messages": "#Microsoft.OutlookServices.Message",
                "tasks": "#Microsoft.OutlookServices.TodoTask"}


def _error(status: int, code: str, message: str) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status,
                    media_type="application/json")


def _when(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")[:26].rstrip("+"))
    except (ValueError, AttributeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resource_of(key: str) -> str:
    """The subscribable resource of a fake collection key."""
    if key.startswith("tasks:"):
        return f"me/todo/lists/{key.partition(':')[2]}/tasks"
    return f"me/{key}"


class GraphSubscriptions:
    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.delivered: list[tuple[str, int]] = []  # (changeType, the endpoint's status)
        self.validations: list[int] = []  # the endpoint's status per validation request
        self.reauthorized: list[str] = []  # subscription ids, per reauthorize call
        self.lose = False
        self.lost = 0
        self.reroute: tuple[str, str] | None = None
        self._n = itertools.count(1)
        self._sending: set[asyncio.Task[None]] = set()

    def _target(self, url: str) -> str:
        if self.reroute is not None and url.startswith(self.reroute[0]):
            return self.reroute[1] + url[len(self.reroute[0]):]
        return url

    async def handle(self, request: Request, rest: list[str]) -> Response:
        if not rest:
            if request.method == "GET":
                return self.graph._json({
                    "@odata.context": f"{self.graph.url}/$metadata#subscriptions",
                    "value": list(self.subscriptions.values())})
            if request.method == "POST":
                return await self._create(request)
        elif len(rest) == 1 and rest[0] in self.subscriptions:
            sub = self.subscriptions[rest[0]]
            if request.method == "GET":
                return self.graph._json(sub)
            if request.method == "DELETE":
                del self.subscriptions[rest[0]]
                return Response(status_code=204)
            if request.method == "PATCH":
                body = orjson.loads(await request.body())
                refused = self._check_expiry(body.get("expirationDateTime"))
                if refused is not None:
                    return refused
                sub["expirationDateTime"] = body["expirationDateTime"]
                return self.graph._json(sub)
        elif rest[1:] == ["reauthorize"] and request.method == "POST":
            if rest[0] not in self.subscriptions:
                return _error(404, "ResourceNotFound", "The object was not found.")
            self.reauthorized.append(rest[0])
            return Response(status_code=204)
        elif len(rest) == 1:
            return _error(404, "ResourceNotFound", "The object was not found.")
        return _error(405, "ErrorInvalidRequest", "The OData request is not supported.")

    @staticmethod
    def _check_expiry(value: Any) -> Response | None:
        when = _when(value) if isinstance(value, str) else None
        now = datetime.now(UTC)
        if when is None or when <= now or when > now + timedelta(minutes=MAX_MINUTES):
            return _error(400, "ExtensionError", "Subscription expiration can only be "
                          f"{MAX_MINUTES} minutes in the future.")
        return None

    async def _create(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "Cannot read the request body.")
        for field in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not isinstance(body.get(field), str):
                return _error(400, "InvalidRequest", f"{field} is required.")
        if not set(body["changeType"].split(",")) <= {"created", "updated", "deleted"}:
            return _error(400, "InvalidRequest", "changeType is not valid.")
        resource = body["resource"].strip("/")
        known = {resource_of(k) for k in ("contacts", "events", "messages")} | {
            resource_of(f"tasks:{x['id']}") for x in self.graph.task_lists}
        if resource not in known:
            return _error(400, "ExtensionError", "Operation: Create; Exception: [Status "
                          "Code: NotFound; Reason: The resource was not found.]")
        refused = self._check_expiry(body["expirationDateTime"])
        if refused is not None:
            return refused
        if len(body.get("clientState") or "") > 128:
            return _error(400, "InvalidRequest", "clientState is longer than 128.")
        life = body.get("lifecycleNotificationUrl")
        if life is not None and not isinstance(life, str):
            return _error(400, "InvalidRequest", "lifecycleNotificationUrl is not valid.")
        good = await self._validate(body["notificationUrl"])
        if good and life is not None:
            good = await self._validate(life)
        if not good:
            return _error(400, "ValidationError", "Subscription validation request failed. "
                          "Notification endpoint must respond with 200 OK to validation "
                          "request.")
        sub = {"@odata.context": f"{self.graph.url}/$metadata#subscriptions/$entity",
               "id": f"7f105c7d-2dc5-4530-97cd-{next(self._n):012d}",
               "resource": body["resource"], "applicationId": APP,
               "changeType": body["changeType"], "clientState": body.get("clientState"),
               "notificationUrl": body["notificationUrl"],
               "notificationQueryOptions": None, "lifecycleNotificationUrl": life,
               "expirationDateTime": body["expirationDateTime"],
               "creatorId": self.graph.me["id"], "includeResourceData": False,
               "latestSupportedTlsVersion": "v1_2", "encryptionCertificate": None,
               "encryptionCertificateId": None, "notificationUrlAppId": None}
        self.subscriptions[sub["id"]] = sub
        return self.graph._json(sub, 201)

    async def _validate(self, url: str) -> bool:
        token = secrets.token_urlsafe(24)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(self._target(url),
                                           params={"validationToken": token},
                                           headers={"content-type": "text/plain"})
        except httpx.HTTPError:
            return False
        self.validations.append(answer.status_code)
        return (answer.status_code == 200 and answer.text == token
                and answer.headers.get("content-type", "").startswith("text/plain"))

    def lifecycle(self, sub_id: str, event: str) -> None:
        """Graph tells the subscription's lifecycleNotificationUrl about `event`."""
        sub = self.subscriptions[sub_id]
        if event == "subscriptionRemoved":
            del self.subscriptions[sub_id]
        if sub["lifecycleNotificationUrl"] is None:
            return  # Graph sends lifecycle notifications only to subscriptions with one
        note = {"subscriptionId": sub_id,
                "subscriptionExpirationDateTime": sub["expirationDateTime"],
                "tenantId": TENANT, "clientState": sub["clientState"],
                "lifecycleEvent": event}
        self._send(sub["lifecycleNotificationUrl"], event, {"value": [note]})

    def changed(self, key: str, item_id: str, change: str, etag: str | None) -> None:
        """An item of `key` was created, updated or deleted: notify its subscribers."""
        resource = resource_of(key)
        coll = key.split(":")[0]
        now = datetime.now(UTC)
        for sub in list(self.subscriptions.values()):
            expires = _when(sub["expirationDateTime"])
            if (sub["resource"].strip("/") != resource or change not in sub["changeType"]
                    or expires is None or expires <= now):
                continue
            if self.lose:
                self.lost += 1
                continue
            note = {"subscriptionId": sub["id"],
                    "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "changeType": change, "clientState": sub["clientState"],
                    "tenantId": TENANT,
                    "resource": f"Users/{self.graph.me['id']}/{coll.title()}/{item_id}",
                    "resourceData": {"@odata.type": _ODATA_TYPES[coll],
                                     "@odata.id": f"Users/{self.graph.me['id']}/"
                                                  f"{coll.title()}/{item_id}",
                                     "@odata.etag": etag, "id": item_id}}
            self._send(sub["notificationUrl"], change, {"value": [note]})

    def _send(self, url: str, change: str, body: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous test): nobody to tell
        task = loop.create_task(self._post(url, change, body))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _post(self, url: str, change: str, body: dict[str, Any]) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(self._target(url), content=orjson.dumps(body),
                                           headers={"content-type": "application/json"})
            self.delivered.append((change, answer.status_code))
        except httpx.HTTPError:
            self.delivered.append((change, 0))

    async def stop(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
