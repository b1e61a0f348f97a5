"""A loopback Graph API for the Messenger channel, plus Meta's webhook side.

`FakeGraph` speaks the parts of the Graph API the hub uses, in Graph's wire format:
``GET /{v}/me``, ``GET /{v}/app``, ``POST /{v}/{page-id}/subscribed_apps`` and the Send
API ``POST /{v}/me/messages``. It checks ``access_token`` (and ``appsecret_proof`` when
the app requires it), answers errors as Graph does (``{"error": {"message", "type",
"code", "error_subcode", "fbtrace_id"}}``), and records every request.

`webhook()` and friends build the bodies Meta posts to a webhook, and `meta_signature`
signs them as Meta does: written here with hmac/hashlib, independent of the hub's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port
from tests.support import LoopbackServer


@dataclass
class Page:
    page_id: str
    name: str
    token: str
    app_id: str


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    json: Any
    page_id: str | None = None
    at: float = field(default_factory=time.monotonic)


def graph_error(message: str, code: int, *, type_: str = "OAuthException",
                subcode: int | None = None, status: int = 400) -> tuple[int, dict[str, Any]]:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code,
                           "fbtrace_id": "A" + uuid.uuid4().hex[:20]}
    if subcode is not None:
        err["error_subcode"] = subcode
    return status, {"error": err}


INVALID_TOKEN = graph_error("Invalid OAuth access token.", 190)
RATE_LIMITED = graph_error("(#613) Calls to this api have exceeded the rate limit.", 613,
                           status=429)
USER_UNAVAILABLE = graph_error("(#551) This person isn't available right now.", 551,
                               subcode=1545041)


class FakeGraph:
    """A Graph API on 127.0.0.1 that knows a few Pages of a few apps."""

    def __init__(self, version: str = "v19.0", *, require_proof: bool = True) -> None:
        self.version = version
        self.require_proof = require_proof
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pages: dict[str, Page] = {}  # by token
        self.app_secrets: dict[str, str] = {}  # app id → secret
        self.subscriptions: dict[str, list[str]] = {}  # page id → fields
        self.calls: list[Call] = []
        self.sent: list[Call] = []  # successful Send API calls
        # psid → answers to give (status, body), one per Send API call, before succeeding;
        # None in the list lets that call succeed as usual.
        self.script: dict[str, list[tuple[int, dict[str, Any]] | None]] = {}
        self._changed = asyncio.Condition()
        app = Starlette(routes=[
            Route("/{version}/me", self._me, methods=["GET"]),
            Route("/{version}/app", self._app, methods=["GET"]),
            Route("/{version}/me/messages", self._messages, methods=["POST"]),
            Route("/{version}/{page_id}/subscribed_apps", self._subscribe, methods=["POST"]),
            Route("/{version}/{page_id}/subscribed_apps", self._unsubscribe,
                  methods=["DELETE"]),
        ])
        self._http = LoopbackServer(app, self.port)

    # ---- set-up ------------------------------------------------------------------------

    def add_app(self, app_id: str, secret: str) -> None:
        self.app_secrets[app_id] = secret

    def add_page(self, page_id: str, app_id: str, name: str | None = None) -> Page:
        """A Page with a fresh page access token issued by `app_id`."""
        token = "EAA" + uuid.uuid4().hex + uuid.uuid4().hex
        page = Page(page_id=page_id, name=name or f"Page {page_id}", token=token,
                    app_id=app_id)
        self.pages[token] = page
        return page

    async def start(self) -> FakeGraph:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()

    # ---- inspection --------------------------------------------------------------------

    def sent_to(self, psid: str) -> list[Any]:
        return [c.json for c in self.sent if c.json["recipient"]["id"] == psid]

    def attempts_to(self, psid: str) -> int:
        return sum(1 for c in self.calls if c.path.endswith("/me/messages")
                   and isinstance(c.json, dict)
                   and c.json.get("recipient", {}).get("id") == psid)

    async def wait_sent(self, psid: str, count: int, timeout: float = 30.0) -> list[Any]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.sent_to(psid)) >= count)
        return self.sent_to(psid)

    # ---- Graph -------------------------------------------------------------------------

    @staticmethod
    def _json(status: int, body: Any) -> Response:
        return Response(orjson.dumps(body), status_code=status,
                        media_type="application/json")

    async def _record(self, request: Request) -> Call:
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        form: dict[str, str] = {}
        body: Any = None
        if ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        elif raw:
            body = orjson.loads(raw)
        call = Call(request.method, request.url.path, dict(request.query_params), form, body)
        self.calls.append(call)
        return call

    def _auth(self, call: Call, version: str) -> tuple[Page | None, Response | None]:
        if version != self.version:
            return None, self._json(*graph_error(
                f"Unknown path components: /{version}", 2500))
        token = call.query.get("access_token") or call.form.get("access_token")
        if not token:
            return None, self._json(*graph_error(
                "An active access token must be used to query information about the "
                "current user.", 2500))
        page = self.pages.get(token)
        if page is None:
            return None, self._json(*INVALID_TOKEN)
        secret = self.app_secrets.get(page.app_id)
        proof = call.query.get("appsecret_proof") or call.form.get("appsecret_proof")
        if secret is not None and (proof or self.require_proof):
            expected = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not proof:
                return None, self._json(*graph_error(
                    "API calls from the server require an appsecret_proof argument", 100,
                    type_="GraphMethodException"))
            if not hmac.compare_digest(proof, expected):
                return None, self._json(*graph_error(
                    "Invalid appsecret_proof provided in the API argument", 100,
                    type_="GraphMethodException"))
        call.page_id = page.page_id
        return page, None

    async def _me(self, request: Request) -> Response:
        call = await self._record(request)
        page, error = self._auth(call, request.path_params["version"])
        if error is not None:
            return error
        assert page is not None
        return self._json(200, {"id": page.page_id, "name": page.name})

    async def _app(self, request: Request) -> Response:
        call = await self._record(request)
        page, error = self._auth(call, request.path_params["version"])
        if error is not None:
            return error
        assert page is not None
        return self._json(200, {"id": page.app_id, "name": f"App {page.app_id}",
                                "link": f"https://www.facebook.com/games/?app_id={page.app_id}"})

    async def _subscribe(self, request: Request) -> Response:
        call = await self._record(request)
        page, error = self._auth(call, request.path_params["version"])
        if error is not None:
            return error
        assert page is not None
        if page.page_id != request.path_params["page_id"]:
            return self._json(*graph_error(
                "(#210) A page access token is required to request this resource.", 210))
        fields = call.query.get("subscribed_fields") or call.form.get("subscribed_fields")
        if not fields:
            return self._json(*graph_error(
                "(#100) The parameter subscribed_fields is required", 100))
        self.subscriptions[page.page_id] = fields.split(",")
        return self._json(200, {"success": True})

    async def _unsubscribe(self, request: Request) -> Response:
        call = await self._record(request)
        page, error = self._auth(call, request.path_params["version"])
        if error is not None:
            return error
        assert page is not None
        self.subscriptions.pop(page.page_id, None)
        return self._json(200, {"success": True})

    async def _messages(self, request: Request) -> Response:
        call = await self._record(request)
        _, error = self._auth(call, request.path_params["version"])
        if error is not None:
            return error
        body = call.json
        problem = _check_send(body)
        if problem:
            return self._json(*graph_error(f"(#100) {problem}", 100))
        psid = body["recipient"]["id"]
        queue = self.script.get(psid)
        scripted = queue.pop(0) if queue else None
        if scripted is not None:
            return self._json(*scripted)
        async with self._changed:
            self.sent.append(call)
            self._changed.notify_all()
        return self._json(200, {"recipient_id": psid, "message_id": "m_" + uuid.uuid4().hex})


def _check_send(body: Any) -> str:
    """The Send API's validation of a request body ("" when acceptable)."""
    if not isinstance(body, dict):
        return "The request body must be JSON"
    if not isinstance(body.get("recipient"), dict) or not body["recipient"].get("id"):
        return "The parameter recipient is required"
    if body.get("messaging_type") not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
        return "Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}"
    msg = body.get("message")
    if not isinstance(msg, dict) or ("text" in msg) == ("attachment" in msg):
        return "Must send either message text or an attachment"
    if "text" in msg and not 0 < len(msg["text"]) <= 2000:
        return "param message[text] must be a UTF-8 encoded string of at most 2000 characters"
    replies = msg.get("quick_replies", [])
    if len(replies) > 13:
        return "param message[quick_replies] has too many elements"
    for q in replies:
        if q.get("content_type") != "text" or not q.get("title") or not q.get("payload"):
            return "Quick replies of content_type text need a title and a payload"
    return ""


# ---- Meta's side of the webhook --------------------------------------------------------


def meta_signature(app_secret: str, body: bytes) -> dict[str, str]:
    """The headers Meta sends with a webhook body signed by `app_secret`."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-hub-signature-256": f"sha256={digest}"}


def webhook(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"object": "page", "entry": list(entries)})


def entry(page_id: str, *events: dict[str, Any]) -> dict[str, Any]:
    return {"id": page_id, "time": int(time.time() * 1000), "messaging": list(events)}


def _event(psid: str, page_id: str, **body: Any) -> dict[str, Any]:
    return {"sender": {"id": psid}, "recipient": {"id": page_id},
            "timestamp": int(time.time() * 1000), **body}


def text_event(psid: str, page_id: str, text: str, mid: str | None = None) -> dict[str, Any]:
    return _event(psid, page_id, message={"mid": mid or f"m_{uuid.uuid4().hex}",
                                          "text": text})


def image_event(psid: str, page_id: str, url: str, mid: str | None = None) -> dict[str, Any]:
    return _event(psid, page_id, message={
        "mid": mid or f"m_{uuid.uuid4().hex}",
        "attachments": [{"type": "image", "payload": {"url": url}}]})


def echo_event(page_id: str, psid: str, text: str, app_id: str) -> dict[str, Any]:
    """What Meta sends back for a message the Page sent (sender is the Page)."""
    return {"sender": {"id": page_id}, "recipient": {"id": psid},
            "timestamp": int(time.time() * 1000),
            "message": {"is_echo": True, "app_id": int(app_id), "mid": f"m_{uuid.uuid4().hex}",
                        "text": text}}


def postback_event(psid: str, page_id: str, payload: str, title: str,
                   mid: str | None = None) -> dict[str, Any]:
    return _event(psid, page_id, postback={"mid": mid or f"m_{uuid.uuid4().hex}",
                                           "title": title, "payload": payload})


def read_event(psid: str, page_id: str, watermark: int) -> dict[str, Any]:
    return _event(psid, page_id, read={"watermark": watermark})
