"""Who is calling the API: the admin token, a hub's access token, or nobody.

The token is checked against this process's registry view before anything else, so a
missing, malformed or unknown token never costs a broker round trip (a well-formed token
this view does not know yet — a hub created through another process a moment ago — looks
the registry up again, at most every `TOKEN_MISS_SYNC_S` in all). Only then is the view
caught up for a linearizable read, and the token checked once more (rotated meanwhile).
"""

from __future__ import annotations

import contextlib
import time

from msgspec import Struct
from starlette.requests import Request

from switchboard import keys
from switchboard.errors import Unauthorized, Unavailable
from switchboard.ratelimit import RateLimiter
from switchboard.registry import RegistryView
from switchboard.services.http import limit
from switchboard.services.runtime import Runtime

TOKEN_MISS_SYNC_S = 0.2


class Principal(Struct, frozen=True):
    admin: bool
    hub_id: str | None = None
    token_hash: str | None = None

    def may_see(self, hub_id: str) -> bool:
        return self.admin or self.hub_id == hub_id


def _invalid() -> Unauthorized:
    return Unauthorized("invalid_token", "the access token is not valid")


class Authenticator:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self._limiter = RateLimiter(s.api_rate_per_s, s.api_burst)
        self._last_miss_sync = 0.0

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing_token", "send Authorization: Bearer <token>")
        admin = self.runtime.settings.admin_token
        if admin and keys.tokens_equal(token, admin):
            return Principal(admin=True)
        token_hash = keys.hash_token(token)
        registry = self.runtime.registry
        hub = registry.view.hub_for_token_hash(token_hash)
        now = time.monotonic()
        if hub is None and keys.looks_like_access_token(token) \
                and now - self._last_miss_sync > TOKEN_MISS_SYNC_S:
            self._last_miss_sync = now
            with contextlib.suppress(Unavailable):
                await registry.sync()
            hub = registry.view.hub_for_token_hash(token_hash)
        if hub is None:
            raise _invalid()
        return Principal(admin=False, hub_id=hub.hub_id, token_hash=token_hash)

    async def session(self, request: Request) -> tuple[Principal, RegistryView]:
        """The caller (rate-limited per hub) and the registry view caught up."""
        principal = await self.authenticate(request)
        if not principal.admin:
            limit(self._limiter, principal.hub_id or "", "api", self.runtime.metrics)
        view = await self.runtime.registry.sync()
        if principal.token_hash is not None:
            # Rotated or deleted while we caught up: the token is no longer valid.
            hub = view.hub_for_token_hash(principal.token_hash)
            if hub is None or hub.hub_id != principal.hub_id:
                raise _invalid()
        return principal, view
