"""A loopback Microsoft identity platform token endpoint: the refresh-token grant of
``POST /{tenant}/oauth2/v2.0/token`` as Microsoft documents it (form-encoded request;
``{token_type, scope, expires_in, access_token, refresh_token}`` or
``{error, error_description, error_codes, timestamp, trace_id, correlation_id}`` with 400).

It knows its valid refresh tokens, rotates each one it redeems (the old one stops
working, as a revoked one does) and hands every access token it issues to `on_issue`
(so the Graph fake accepts it). Test knobs: `revoke`, `expires_in`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.brokers import free_port
from tests.support import LoopbackServer


class FakeIdentity:
    def __init__(self, *, client_id: str, client_secret: str | None = None,
                 on_issue: Callable[[str], None] = lambda token: None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = client_id
        self.client_secret = client_secret
        self.on_issue = on_issue
        self.expires_in = 3599
        self.refresh_tokens: set[str] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (tenant, form)
        self._n = itertools.count(1)
        app = Starlette(routes=[Route("/{tenant}/oauth2/v2.0/token", self._token,
                                      methods=["POST"])])
        self._http = LoopbackServer(app, self.port)

    async def start(self) -> None:
        await self._http.start()

    async def stop(self) -> None:
        await self._http.stop()

    def grant(self) -> str:
        """A refresh token the user got by signing in."""
        token = f"rt-{next(self._n)}"
        self.refresh_tokens.add(token)
        return token

    def revoke(self) -> None:
        """The user changed their password (or an admin revoked the sessions)."""
        self.refresh_tokens.clear()

    @staticmethod
    def _refuse(error: str, code: int, text: str) -> Response:
        body: dict[str, Any] = {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: 0000\r\n"
                                 "Correlation ID: 0000\r\nTimestamp: 2026-12-02 00:00:00Z",
            "error_codes": [code], "timestamp": "2026-12-02 00:00:00Z",
            "trace_id": "0000", "correlation_id": "0000"}
        return Response(orjson.dumps(body), 400, media_type="application/json")

    async def _token(self, request: Request) -> Response:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self._refuse("invalid_request", 900144,
                                "The request body must contain the parameter 'grant_type'.")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append((request.path_params["tenant"], form))
        if form.get("grant_type") != "refresh_token":
            return self._refuse("unsupported_grant_type", 70003, "The grant type is not "
                                "supported.")
        if form.get("client_id") != self.client_id or (
                self.client_secret is not None
                and form.get("client_secret") != self.client_secret):
            return self._refuse("invalid_client", 7000215, "Invalid client secret provided.")
        if "offline_access" not in form.get("scope", "").split():
            return self._refuse("invalid_scope", 70011, "The provided value for the input "
                                "parameter 'scope' is not valid.")
        old = form.get("refresh_token", "")
        if old not in self.refresh_tokens:
            return self._refuse("invalid_grant", 50173, "The provided grant has expired due "
                                "to it being revoked, a fresh auth token is needed.")
        self.refresh_tokens.discard(old)
        new = self.grant()
        access = f"at-{next(self._n)}"
        self.on_issue(access)
        return Response(orjson.dumps({
            "token_type": "Bearer", "scope": form["scope"], "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in, "access_token": access,
            "refresh_token": new}), 200, media_type="application/json")
