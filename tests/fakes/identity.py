"""A loopback Microsoft identity platform: the refresh-token and authorization-code grants
of ``POST /{tenant}/oauth2/v2.0/token`` as Microsoft documents them (form-encoded request;
``{token_type, scope, expires_in, access_token, refresh_token}`` or
``{error, error_description, error_codes, timestamp, trace_id, correlation_id}`` with 400),
and ``GET /{tenant}/oauth2/v2.0/authorize``, where the user signs in and consents at once
(a 302 to the redirect URI with ``code`` and ``state``; ``deny`` makes it an
``error=access_denied`` instead). A code is good once, for its redirect URI and its PKCE
challenge (S256 only, checked against the ``code_verifier`` as Microsoft does).

It knows its valid refresh tokens, rotates each one it redeems (the old one stops
working, as a revoked one does) and hands every access token it issues to `on_issue`
(so the Graph fake accepts it). Test knobs: `revoke`, `expires_in`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
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
        self.deny = False
        # code -> (client_id, redirect_uri, challenge, scope)
        self.codes: dict[str, tuple[str, str, str, str]] = {}
        self.redeemed: set[str] = set()
        self._n = itertools.count(1)
        app = Starlette(routes=[
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize", self._authorize, methods=["GET"])])
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

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id:
            return Response("AADSTS700016: Application not found in the directory.", 400)
        redirect = q.get("redirect_uri", "")
        if not redirect.startswith("http"):
            return Response("AADSTS900144: redirect_uri is missing.", 400)
        state = {"state": q["state"]} if "state" in q else {}
        if self.deny:
            return RedirectResponse(redirect + "?" + urlencode({
                "error": "access_denied", "error_description": "AADSTS65004: User declined "
                "to consent to access the app.\r\nTrace ID: 0000", **state}), 302)
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" \
                or not q.get("code_challenge"):
            return RedirectResponse(redirect + "?" + urlencode({
                "error": "invalid_request", "error_description": "AADSTS9002325: Proof Key "
                "for Code Exchange is required.", **state}), 302)
        code = f"code-{next(self._n)}"
        self.codes[code] = (q["client_id"], redirect, q["code_challenge"], q.get("scope", ""))
        return RedirectResponse(redirect + "?" + urlencode({"code": code, **state}), 302)

    def _redeem(self, form: dict[str, str]) -> Response | None:
        """None when the code is good (it is then used up), else the refusal."""
        code = form.get("code", "")
        if code in self.redeemed:
            return self._refuse("invalid_grant", 54005, "OAuth2 Authorization code was "
                                "already redeemed, please retry with a new valid code or use "
                                "an existing refresh token.")
        got = self.codes.pop(code, None)
        if got is None:
            return self._refuse("invalid_grant", 70000, "The provided authorization code "
                                "is invalid or has expired.")
        self.redeemed.add(code)
        client_id, redirect, challenge, _scope = got
        if form.get("redirect_uri") != redirect or form.get("client_id") != client_id:
            return self._refuse("invalid_grant", 50148, "The redirect_uri does not match "
                                "the one of the authorization request.")
        verifier = form.get("code_verifier", "")
        sent = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                        ).rstrip(b"=").decode()
        if not verifier or sent != challenge:
            return self._refuse("invalid_grant", 501481, "The Code_Verifier does not match "
                                "the code_challenge supplied in the authorization request.")
        return None

    async def _token(self, request: Request) -> Response:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self._refuse("invalid_request", 900144,
                                "The request body must contain the parameter 'grant_type'.")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append((request.path_params["tenant"], form))
        grant_type = form.get("grant_type")
        if grant_type not in ("refresh_token", "authorization_code"):
            return self._refuse("unsupported_grant_type", 70003, "The grant type is not "
                                "supported.")
        if form.get("client_id") != self.client_id or (
                self.client_secret is not None
                and form.get("client_secret") != self.client_secret):
            return self._refuse("invalid_client", 7000215, "Invalid client secret provided.")
        if "offline_access" not in form.get("scope", "").split():
            return self._refuse("invalid_scope", 70011, "The provided value for the input "
                                "parameter 'scope' is not valid.")
        if grant_type == "authorization_code":
            refused = self._redeem(form)
            if refused is not None:
                return refused
            new = self.grant()
            access = f"at-{next(self._n)}"
            self.on_issue(access)
            return Response(orjson.dumps({
                "token_type": "Bearer", "scope": form["scope"],
                "expires_in": self.expires_in, "ext_expires_in": self.expires_in,
                "access_token": access, "refresh_token": new}), 200,
                media_type="application/json")
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
