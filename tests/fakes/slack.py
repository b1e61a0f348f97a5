"""A loopback Slack: the Web API methods the hub calls, in Slack's wire format, plus
helpers that build Events API requests signed the way Slack signs them (with slack_sdk).

Web API (``{url}/api/{method}``), as documented by Slack:
- ``oauth.v2.access``: form ``code`` with the client credentials in the form or in HTTP
  Basic auth; answers the installation or ``{"ok": false, "error": "invalid_code"}``;
  a code works once (``code_already_used``).
- ``auth.test``: ``Authorization: Bearer <token>``.
- ``chat.postMessage``: Bearer token, JSON (or form) body; channel by name or id; answers
  ``{"ok": true, "channel": "<id>", "ts": "<ts>", "message": {...}}``; failures are HTTP
  200 with ``ok: false`` (``invalid_auth``, ``channel_not_found``, ``no_text``…), except
  rate limiting: HTTP 429, ``Retry-After``, ``{"ok": false, "error": "ratelimited"}``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port
from tests.support import LoopbackServer


@dataclass
class Install:
    """What an OAuth code grants."""

    team_id: str
    team_name: str
    bot_token: str = field(default_factory=lambda: "xoxb-" + uuid.uuid4().hex)
    bot_user_id: str = field(default_factory=lambda: "U" + uuid.uuid4().hex[:8].upper())
    bot_id: str = field(default_factory=lambda: "B" + uuid.uuid4().hex[:8].upper())
    bot_name: str = "switchboard"
    app_id: str = "A0SWITCHBD"
    # An installation that asked for user scopes also gets a user token (`xoxp-`).
    user_token: str | None = None


@dataclass
class Post:
    """One chat.postMessage call as Slack received it."""

    token: str | None
    content_type: str
    body: dict[str, Any]
    channel: str | None = None  # the channel id it went to (None: refused)
    ts: str | None = None
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def thread_ts(self) -> str | None:
        value = self.body.get("thread_ts")
        return str(value) if value is not None else None

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/json; charset=utf-8")


class FakeSlack:
    """The Slack Web API on 127.0.0.1. `url` is what SWITCHBOARD_SLACK_API_URL points at."""

    def __init__(self, client_id: str = "1234.5678",
                 client_secret: str = "cs-fake") -> None:  # noqa: S107 - a test double
        self.client_id = client_id
        self.client_secret = client_secret
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/api"
        self.codes: dict[str, Install] = {}
        self.used_codes: set[str] = set()
        self.installs: list[Install] = []
        # Channels by name → id; a post may name either.
        self.channels: dict[str, str] = {"general": "C0GENERAL", "support": "C0SUPPORT"}
        self.posts: list[Post] = []
        self.oauth_calls: list[dict[str, str]] = []
        # Scripted answers for chat.postMessage to a channel (as named in the request,
        # without "#"), taken first: (status, body, headers).
        self.script: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        app = Starlette(routes=[Route("/api/{method}", self._handle, methods=["POST"])])
        self._http = LoopbackServer(app, self.port)

    # ---- set-up ---------------------------------------------------------------------

    def grant(self, team_id: str = "T0ACME", team_name: str = "Acme") -> tuple[str, Install]:
        """A fresh OAuth code for an installation into `team_id`."""
        code = f"{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"
        install = Install(team_id=team_id, team_name=team_name)
        self.codes[code] = install
        return code, install

    def install_for(self, token: str | None) -> Install | None:
        return next((i for i in self.installs if i.bot_token == token), None)

    # ---- the Web API --------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                params: dict[str, Any] = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                return _json({"ok": False, "error": "invalid_json"})
        else:
            params = dict(parse_qsl(raw.decode()))
        auth = request.headers.get("authorization", "")
        if method == "oauth.v2.access":
            return self._oauth(params, auth)
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get(
            "token")
        if method == "auth.test":
            install = self.install_for(token)
            if install is None:
                return _json({"ok": False, "error": "invalid_auth"})
            return _json({"ok": True, "url": f"https://{install.team_name.lower()}.slack.com/",
                          "team": install.team_name, "user": install.bot_name,
                          "team_id": install.team_id, "user_id": install.bot_user_id,
                          "bot_id": install.bot_id, "is_enterprise_install": False})
        if method == "chat.postMessage":
            return await self._post_message(token, ctype, params)
        return _json({"ok": False, "error": "unknown_method"}, status=404)

    def _oauth(self, params: dict[str, Any], auth: str) -> Response:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        self.oauth_calls.append({"code": str(params.get("code")), "client_id": str(client_id)})
        if client_id != self.client_id:
            return _json({"ok": False, "error": "invalid_client_id"})
        if client_secret != self.client_secret:
            return _json({"ok": False, "error": "bad_client_secret"})
        code = str(params.get("code", ""))
        if code in self.used_codes:
            return _json({"ok": False, "error": "code_already_used"})
        install = self.codes.pop(code, None)
        if install is None:
            return _json({"ok": False, "error": "invalid_code"})
        self.used_codes.add(code)
        self.installs.append(install)
        return _json({
            "ok": True, "access_token": install.bot_token, "token_type": "bot",
            "scope": "chat:write,channels:history,groups:history",
            "bot_user_id": install.bot_user_id, "app_id": install.app_id,
            "team": {"name": install.team_name, "id": install.team_id},
            "enterprise": None, "authed_user": {"id": "U0INSTALLER"} | (
                {"access_token": install.user_token, "token_type": "user"}
                if install.user_token else {}),
            "is_enterprise_install": False,
        })

    async def _post_message(self, token: str | None, ctype: str,
                            params: dict[str, Any]) -> Response:
        post = Post(token=token, content_type=ctype, body=params)
        status, answer, headers = 200, {}, {}
        channel = str(params.get("channel", "")).lstrip("#")
        if self.install_for(token) is None:
            answer = {"ok": False, "error": "invalid_auth"}
        elif self.script.get(channel):
            status, answer, headers = self.script[channel].pop(0)
        if not answer:
            channel_id = self.channels.get(channel) or (
                channel if channel in self.channels.values() else None)
            if channel_id is None:
                answer = {"ok": False, "error": "channel_not_found"}
            elif not params.get("text") and not params.get("blocks"):
                answer = {"ok": False, "error": "no_text"}
            else:
                ts = f"{int(time.time())}.{next(self._ts):06d}"
                post.channel, post.ts = channel_id, ts
                message = {"type": "message", "text": params.get("text", ""), "ts": ts,
                           "bot_id": self.install_for(token).bot_id}  # type: ignore[union-attr]
                if params.get("thread_ts"):
                    message["thread_ts"] = params["thread_ts"]
                answer = {"ok": True, "channel": channel_id, "ts": ts, "message": message}
        post.status, post.answer = status, answer
        async with self._changed:
            self.posts.append(post)
            self._changed.notify_all()
        return _json(answer, status=status, headers=headers)

    # ---- waiting ------------------------------------------------------------------------

    @property
    def delivered(self) -> list[Post]:
        """Posts Slack accepted."""
        return [p for p in self.posts if p.ts is not None]

    async def wait_for_posts(self, count: int, timeout: float = 30.0, *,
                             accepted: bool = True) -> list[Post]:
        def chosen() -> list[Post]:
            return self.delivered if accepted else self.posts

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(chosen()) >= count)
        return chosen()

    async def start(self) -> FakeSlack:
        await self._http.start()
        return self

    async def stop(self) -> None:
        await self._http.stop()


# ---- Events API requests, as Slack sends them ------------------------------------------


def signed(signing_secret: str, payload: dict[str, Any] | bytes, *,
           timestamp: int | None = None, retry_num: int | None = None) -> tuple[bytes, dict[str,
                                                                                       str]]:
    """The body and headers of an Events API POST, signed by slack_sdk (the oracle)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": signature, "User-Agent": "Slackbot 1.0"}
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return body, headers


def message_event(team_id: str, channel: str, *, text: str, thread_ts: str | None,
                  user: str = "U0AGENT", ts: str | None = None, bot_id: str | None = None,
                  subtype: str | None = None, event_id: str | None = None,
                  display_name: str | None = None) -> dict[str, Any]:
    """An ``event_callback`` carrying a ``message`` event (message.channels)."""
    ts = ts or f"{time.time():.6f}"
    event: dict[str, Any] = {"type": "message", "channel": channel, "user": user,
                             "text": text, "ts": ts, "event_ts": ts, "channel_type": "channel",
                             "team": team_id,
                             "blocks": [{"type": "rich_text", "block_id": "b1", "elements": []}]}
    if thread_ts:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = "U0BOT"
    if bot_id:
        event["bot_id"] = bot_id
        event.pop("user")
    if subtype:
        event["subtype"] = subtype
    if display_name:
        event["user_profile"] = {"display_name": display_name, "real_name": display_name,
                                 "name": display_name.lower()}
    return {
        "token": "deprecated-verification-token", "team_id": team_id, "api_app_id": "A0SWITCHBD",
        "event": event, "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": "U0BOT",
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": "4-eyJldCI6Im1lc3NhZ2UifQ",
    }
