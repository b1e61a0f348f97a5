"""Partner signup (seed 000, `switchboard.sync.signup`) and the users it makes.

- ``PUT /api/v1/hubs/{hubId}/syncSignup`` `{templateIds, regenerateSecret}` (hub token):
  the hub's signup app — its `appId`, its template group, and its app secret (made on
  the first call or with `regenerateSecret`, shown once, sealed). ``GET`` shows it
  without the secret.
- ``POST /api/v1/sync/signup`` (no token: `apiHash` is the proof): a user of an org;
  provisions one profile per template of the group (once per user and template) and
  answers `{accessToken, profiles}`. A new signup of the same user issues a new token
  (the previous one stops working); one not newer than the last accepted is a replay:
  409.
- The user's token (``Authorization: Bearer sbsu_…``, or Basic with the token as user
  name and ``X`` as password, as BrightSync's) reaches that user's profiles under
  ``/api/v1/hubs/{hubId}/syncProfiles`` only: another user's answers 404.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import WeakValueDictionary

import msgspec
from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import clock
from switchboard.errors import NotFound, Unauthorized
from switchboard.ids import new_id
from switchboard.kafka import SYNC_PROFILES
from switchboard.keys import hash_token
from switchboard.services.http import JSON
from switchboard.services.sync_webhooks import new_webhook_secret
from switchboard.sync.profiles import ProfileCreate
from switchboard.sync.signup import (
    USER_TOKEN_PREFIX,
    AppRecord,
    SignupApp,
    SignupRequest,
    UserRecord,
    app_secret_context,
    check_signup,
    new_app_secret,
    new_user_token,
    personalise,
    user_key,
)

if TYPE_CHECKING:
    from switchboard.services.sync_api import SyncProfilesApi

_enc = msgspec.json.Encoder()
_locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()


class SyncCaller(Struct, frozen=True, kw_only=True):
    """Who calls the profiles API: a hub (`owner` None) or one signed-up user."""

    hub_id: str
    owner: str | None = None


def _user_token(request: Request) -> str | None:
    """A signed-up user's token from Bearer or Basic (token as user name), else None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value.strip()
    if scheme.lower() == "basic":
        try:
            token = base64.b64decode(token, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    elif scheme.lower() != "bearer":
        return None
    return token if token.startswith(USER_TOKEN_PREFIX) else None


class SignupApi:
    def __init__(self, profiles: SyncProfilesApi) -> None:
        self.profiles = profiles
        self.runtime = profiles.runtime
        self.store = profiles.store

    def routes(self) -> list[Route]:
        app = "/api/v1/hubs/{hubId}/syncSignup"
        return [
            Route("/api/v1/sync/signup", self.signup, methods=["POST"]),
            Route(app, self.put_app, methods=["PUT"]),
            Route(app, self.get_app, methods=["GET"]),
        ]

    async def user_caller(self, request: Request, hub_id: str) -> SyncCaller | None:
        token = _user_token(request)
        if token is None:
            return None
        await self.store.sync()
        owner = self.store.profiles.user_tokens.get(hash_token(token))
        user = self.store.profiles.users.get(owner or "")
        if owner is None or user is None:
            raise Unauthorized("invalid_token", "the access token is not valid")
        if user.hub_id != hub_id:
            raise NotFound("hub_not_found", "no such hub")
        return SyncCaller(hub_id=hub_id, owner=owner)

    def _app_out(self, app: AppRecord) -> dict[str, Any]:
        return {"appId": app.app_id, "hubId": app.hub_id, "templateIds": app.template_ids,
                "signupUrl": self.runtime.settings.public_url.rstrip("/") + "/api/v1/sync/signup",
                "createdAt": app.created_at, "updatedAt": app.updated_at}

    async def get_app(self, request: Request) -> Response:
        hub_id = await self.profiles._hub(request)
        app = self.store.profiles.app_of_hub(hub_id)
        if app is None:
            raise NotFound("sync_signup_not_found", "the hub has no signup app yet: PUT one")
        return JSON(self._app_out(app))

    async def put_app(self, request: Request) -> Response:
        hub_id = await self.profiles._hub(request)
        raw = await request.body()
        body = SignupApp() if not raw.strip() else await self.profiles.api._body(request,
                                                                                SignupApp)
        for tid in body.template_ids:
            self.profiles.templates.template(hub_id, tid)  # 404 naming none of another hub
        now = clock.now_ms()
        app = self.store.profiles.app_of_hub(hub_id)
        secret = None
        if app is None or body.regenerate_secret:
            secret = new_app_secret()
        app_id = app.app_id if app is not None else new_id()
        sealed = (self.runtime.sealer.seal(secret.encode(), app_secret_context(app_id))
                  if secret is not None else app.secret if app is not None else "")
        new = AppRecord(app_id=app_id, hub_id=hub_id, secret=sealed,
                        template_ids=list(body.template_ids),
                        created_at=app.created_at if app is not None else now, updated_at=now)
        await self.store.write(SYNC_PROFILES, f"app:{app_id}".encode(), _enc.encode(new))
        out = self._app_out(new)
        if secret is not None:
            out["appSecret"] = secret  # shown once
        return JSON(out, status_code=201 if app is None else 200)

    async def signup(self, request: Request) -> Response:
        body: SignupRequest = await self.profiles.api._body(request, SignupRequest)
        await self.store.sync()
        app = self.store.profiles.apps.get(body.app_id)
        if app is None:
            raise Unauthorized("invalid_app", "unknown appId", "appId")
        secret = self.runtime.sealer.open(app.secret, app_secret_context(app.app_id)).decode()
        key = user_key(app.hub_id, body.comp_ext_id, body.user_ext_id)
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = asyncio.Lock()
        async with lock:
            await self.store.sync()
            old = self.store.profiles.users.get(key)
            now = clock.now_ms()
            check_signup(body, secret, now_ms=now,
                         window_ms=int(self.runtime.settings.sync_signup_window_s * 1000),
                         last_ts=old.last_signup_ts if old is not None else None)
            profiles = self.store.profiles.profiles
            mine = [p for p in profiles.values() if p.owner == key]
            have = {p.template_id for p in mine}
            for tid in app.template_ids:
                if tid in have or tid not in self.store.profiles.templates:
                    continue
                pid = new_id()
                rec = self.profiles.templates.provision(
                    app.hub_id, tid, ProfileCreate(), pid, now, owner=key,
                    configure=lambda c: personalise(c, body))
                rec = msgspec.structs.replace(
                    rec, webhook_secret=self.profiles.webhooks.seal(pid, new_webhook_secret()))
                await self.profiles._put(rec)
                mine.append(rec)
            token = new_user_token()
            name = " ".join(x for x in (body.first_name, body.last_name) if x) or None
            user = UserRecord(hub_id=app.hub_id, org_id=body.comp_ext_id,
                              user_id=body.user_ext_id, token_hash=hash_token(token),
                              last_signup_ts=body.request_timestamp,
                              profile_ids=[p.profile_id for p in mine],
                              created_at=old.created_at if old is not None else now,
                              email=body.email, name=name)
            await self.store.write(SYNC_PROFILES, f"user:{key}".encode(), _enc.encode(user))
        return JSON({"accessToken": token, "hubId": app.hub_id,
                     "profiles": [p.profile_id for p in mine]})


def openapi_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    hub = {"name": "hubId", "in": "path", "required": True, "schema": {"type": "string"}}
    app = "/api/v1/hubs/{hubId}/syncSignup"
    return {
        "/api/v1/sync/signup": {
            "post": op("A partner platform signs a user up (seed 000): apiHash = base64 "
                       "HMAC-SHA256(app secret, compExtId:userExtId:requestTimestamp), "
                       "timestamp in ms within the window; provisions the user's profiles "
                       "from the template group: {accessToken, profiles}; a replayed "
                       "signup 409", "SignupRequest", security=False,
                       responses=(400, 401, 409, 503)),
        },
        app: {
            "parameters": [hub],
            "put": op("Create or update the hub's signup app (templateIds; "
                      "regenerateSecret): the appSecret is shown once", "SignupApp",
                      responses=(400, 401, 403, 404, 503)),
            "get": op("The hub's signup app (appId, templateIds; never the secret)"),
        },
    }
