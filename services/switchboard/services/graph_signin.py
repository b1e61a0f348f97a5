"""Graph sign-in for a profile's mailbox side (the authorization-code flow with PKCE;
pure parts in `switchboard.sync.graph_signin`).

- ``POST /api/v1/hubs/{hubId}/syncProfiles/{profileId}/connect``
  {clientId?, tenant?, returnUrl?}
  (hub or user token): the `authorizeUrl` to open in a browser. The app registration
  defaults to the one the profile's mailbox credentials name.
- ``GET /api/v1/oauth/graph/callback?code&state`` (public: Microsoft's redirect): the state is
  checked, the code redeemed (the client secret, if the profile holds one, from its
  sealed credentials), and the tokens sealed into the profile; a small page says so, or
  a 303 sends the browser to the `returnUrl` (allow-listed) given to connect.

Nothing is stored between the two: the state carries what the callback needs, signed.
"""

from __future__ import annotations

import html
import logging
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.clock import now_ms
from switchboard.errors import BadRequest, SwitchboardError, Unavailable
from switchboard.ids import new_id
from switchboard.kafka import SYNC_PROFILES
from switchboard.keys import derive_key, parse_master_keys
from switchboard.services.http import JSON
from switchboard.services.http_client import HttpError
from switchboard.sync.graph_signin import (
    CALLBACK_PATH,
    STATE_TTL_MS,
    SigninState,
    authorize_url,
    code_request,
    open_state,
    parse_code_answer,
    pkce_challenge,
    pkce_verifier,
    return_allowed,
    return_to,
    sign_state,
)
from switchboard.sync.graph_token import check_tenant
from switchboard.sync.profiles import ProfileRecord, open_credentials, seal_credentials

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi

log = logging.getLogger(__name__)

CONNECT = "/api/v1/hubs/{hubId}/syncProfiles/{profileId}/connect"
_enc = msgspec.json.Encoder()
# The page holds no script, style or image of anyone's; the URL it was reached by holds
# the code, so it is not sent on as a referrer and not cached.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "referrer-policy": "no-referrer", "cache-control": "no-store",
    "x-content-type-options": "nosniff", "x-frame-options": "DENY"}


class GraphConnect(Struct, frozen=True, kw_only=True, rename="camel",
                   forbid_unknown_fields=True):
    client_id: str | None = None
    tenant: str | None = None
    # Where the browser goes when the sign-in is done (SWITCHBOARD_GRAPH_SIGNIN_RETURN_URLS).
    return_url: str | None = None


def page(status: int, title: str, text: str) -> Response:
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></html>")
    return Response(body, status, media_type="text/html; charset=utf-8",
                    headers=_PAGE_HEADERS)


class GraphSigninApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.profiles = profiles
        self.runtime = profiles.runtime
        self.store = profiles.store
        self._keys = [derive_key(k, "graph-signin")
                      for k in parse_master_keys(self.runtime.settings.sealing_keys)]

    def routes(self) -> list[Route]:
        return [Route(CONNECT, self.connect, methods=["POST"]),
                Route(CALLBACK_PATH, self.callback, methods=["GET"])]

    def redirect_uri(self) -> str:
        return self.runtime.settings.public_url.rstrip("/") + CALLBACK_PATH

    async def connect(self, request: Request) -> Response:
        rec = await self.profiles._own(request)
        body: GraphConnect = await self.profiles.api._body(request, GraphConnect)
        if rec.mailbox.kind != "graph":
            raise BadRequest("not_a_graph_mailbox", "the profile's mailbox side is not of "
                             "kind graph", field="mailbox.kind")
        stored = open_credentials(self.runtime.sealer, rec, "mailbox")
        client_id = body.client_id or stored.get("clientId")
        if not client_id:
            raise BadRequest("missing_field", "clientId: the application (client) id of the "
                             "app registration in Entra ID", field="clientId")
        try:
            tenant = check_tenant(body.tenant or stored.get("tenant") or "common")
        except SwitchboardError as exc:
            raise BadRequest("invalid_tenant", exc.description, field="tenant") from None
        allowed = [u for u in self.runtime.settings.graph_signin_return_urls.split(",")
                   if u.strip()]
        if body.return_url is not None and not return_allowed(body.return_url, allowed):
            raise BadRequest("return_url_not_allowed", "returnUrl is not under any of "
                             "SWITCHBOARD_GRAPH_SIGNIN_RETURN_URLS", field="returnUrl")
        state = SigninState(profile_id=rec.profile_id, hub_id=rec.hub_id,
                            client_id=client_id, tenant=tenant,
                            redirect_uri=self.redirect_uri(),
                            expires_at=now_ms() + STATE_TTL_MS, nonce=new_id() + new_id(),
                            return_url=body.return_url)
        key = self._keys[0]
        url = authorize_url(self.runtime.settings.graph_authority_url, state,
                            sign_state(key, state),
                            pkce_challenge(pkce_verifier(key, state.nonce)))
        return JSON({"authorizeUrl": url, "redirectUri": state.redirect_uri,
                     "expiresAt": state.expires_at})

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        if q.get("error"):
            # Microsoft's own refusal (the user said no, or the app is not allowed).
            why = q.get("error_description", "").splitlines()[0][:300] if q.get(
                "error_description") else ""
            return page(400, "Microsoft 365 was not connected",
                        f"Microsoft answered {q['error'][:100]}"
                        + (f": {why}" if why else "") + ". Start the sign-in again.")
        try:
            state = await self._complete(q.get("code", ""), q.get("state", ""))
        except SwitchboardError as exc:
            return page(exc.status, "Microsoft 365 was not connected", exc.description)
        if state.return_url is not None:
            return Response(status_code=303, headers={
                **_PAGE_HEADERS, "location": return_to(state.return_url, state.profile_id)})
        return page(200, "Microsoft 365 connected",
                    "The mailbox is connected to the sync profile. You can close this page.")

    async def _complete(self, code: str, signed: str) -> SigninState:
        if not code or not signed:
            raise BadRequest("missing_field", "the sign-in answer has no code or no state")
        state, key = open_state(self._keys, signed, now_ms())
        await self.store.sync()
        rec = self.store.profiles.profiles.get(state.profile_id)
        if (rec is None or rec.hub_id != state.hub_id or rec.mailbox.kind != "graph"
                or rec.hub_id not in self.runtime.registry.view.hubs):
            raise BadRequest("sync_profile_not_found", "the sync profile this sign-in was "
                             "for no longer exists")
        stored = open_credentials(self.runtime.sealer, rec, "mailbox")
        # A secret the profile holds belongs to its own app registration, not another's.
        same_app = stored.get("clientId") in (None, state.client_id)
        secret = stored.get("clientSecret") if same_app else None
        url, form = code_request(self.runtime.settings.graph_authority_url, state, code,
                                 pkce_verifier(key, state.nonce), secret)
        try:
            resp = await self.runtime.http.request(
                "POST", url, content=urllib.parse.urlencode(form).encode(),
                headers={"content-type": "application/x-www-form-urlencoded",
                         "accept": "application/json"},
                timeout_s=self.runtime.settings.provider_timeout_s)
        except HttpError as exc:
            log.warning("graph sign-in: %s", exc.reason)
            raise Unavailable("identity_unreachable", "the Microsoft identity platform "
                              "could not be reached; start the sign-in again") from None
        grant = parse_code_answer(resp.status_code, resp.content, now_ms())
        await self._save(rec, state, grant.refresh_token, grant.access_token,
                         secret is not None)
        return state

    async def _save(self, rec: ProfileRecord, state: SigninState, refresh: str,
                    access: str, keep_secret: bool) -> None:
        """The new tokens sealed into the profile's mailbox side (as the token refresh
        writes a rotated one); whatever token it held before is replaced."""
        plain = {"clientId": state.client_id, "tenant": state.tenant,
                 "refreshToken": refresh, "accessToken": access}
        creds = seal_credentials(self.runtime.sealer, rec.profile_id, "mailbox", plain)
        old = rec.mailbox.credentials
        if keep_secret and "clientSecret" in old:
            creds["clientSecret"] = old["clientSecret"]
        mailbox = msgspec.structs.replace(rec.mailbox, credentials=creds)
        new = msgspec.structs.replace(rec, mailbox=mailbox, connected=True,
                                      updated_at=now_ms())
        await self.store.write(SYNC_PROFILES, rec.profile_id.encode(), _enc.encode(new))
        log.info("sync %s: mailbox signed in to Microsoft 365, tokens stored",
                 rec.profile_id)


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    pid = {"name": "profileId", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        CONNECT: {
            "parameters": [hub, pid],
            "post": op("Start the Microsoft 365 sign-in of a graph mailbox side "
                       "{clientId?, tenant?, returnUrl?}: {authorizeUrl, redirectUri, "
                       "expiresAt}; open authorizeUrl in a browser (valid 15 minutes)",
                       "GraphConnect",
                       responses=(400, 401, 404, 503)),
        },
        CALLBACK_PATH: {
            "get": op("Microsoft's redirect after the sign-in (code, state; or error, "
                      "error_description): the tokens are sealed into the profile and a "
                      "page says so (or 303 to the returnUrl given to connect); a bad, "
                      "expired or refused sign-in is a 400 page", ok=200, security=False,
                      responses=(400, 503)),
        },
    }
