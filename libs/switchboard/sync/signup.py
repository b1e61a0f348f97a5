"""Partner platform signup (BrightSync, seed 000): a platform signs a user up with
`apiHash` = base64(HMAC-SHA256(app secret, "<compExtId>:<userExtId>:<requestTimestamp>"))
and gets an access token for that user's sync profiles; pure.

The seed's sample signs the literal text ``"OrgId:UserId:"`` followed by the timestamp;
read as the placeholders they are (the org's and the user's ids), so that a signature
is good for one user only. `requestTimestamp` is epoch milliseconds
(`System.currentTimeMillis()` in the seed's sample).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from switchboard.errors import Conflict, Unauthorized
from switchboard.ids import stable_id

__all__ = [
    "USER_TOKEN_PREFIX",
    "AppRecord",
    "SignupApp",
    "SignupRequest",
    "UserRecord",
    "api_hash",
    "check_signup",
    "new_app_secret",
    "new_user_token",
    "personalise",
    "user_key",
]

USER_TOKEN_PREFIX = "sbsu_"  # noqa: S105 (a prefix)
ExtId = Annotated[str, Meta(min_length=1, max_length=200)]
Text = Annotated[str, Meta(max_length=500)]


class SignupRequest(Struct, kw_only=True, rename="camel"):
    """The seed's signup body (unknown fields are ignored, as a partner may send more)."""

    app_id: Annotated[str, Meta(min_length=1, max_length=100)]
    comp_ext_id: ExtId
    user_ext_id: ExtId
    api_hash: Annotated[str, Meta(min_length=1, max_length=200)]
    request_timestamp: Annotated[int, Meta(ge=0, le=10**15)]
    company_name: Text | None = None
    instance_url: Text | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    admin: bool = False
    time_zone_info: Text | None = None


class SignupApp(Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """`PUT /api/v1/hubs/{hubId}/syncSignup`: the template group new users get, and
    whether to make a new app secret (shown once)."""

    template_ids: Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]],
                            Meta(max_length=16)] = []
    regenerate_secret: bool = False


class AppRecord(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A hub's signup app (`sync.profiles`, key ``app:<appId>``), its secret sealed."""

    app_id: str
    hub_id: str
    secret: str
    template_ids: list[str]
    created_at: int
    updated_at: int


class UserRecord(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A signed-up user (`sync.profiles`, key ``user:<hub>:<key>``): who, the hash of
    their current access token, their profiles, and the newest accepted signup time."""

    hub_id: str
    org_id: str
    user_id: str
    token_hash: str
    last_signup_ts: int
    profile_ids: list[str]
    created_at: int
    email: str | None = None
    name: str | None = None


app_decoder = msgspec.json.Decoder(AppRecord)


def app_secret_context(app_id: str) -> str:
    """A signup app's secret is bound to its app."""
    return f"sync_app:{app_id}:secret"
user_decoder = msgspec.json.Decoder(UserRecord)


def user_key(hub_id: str, org_id: str, user_id: str) -> str:
    """The owner name of a user's profiles (ids may hold any character: hashed)."""
    return stable_id("sync-user", hub_id, org_id, user_id)


def new_app_secret() -> str:
    return secrets.token_urlsafe(32)


def new_user_token() -> str:
    return USER_TOKEN_PREFIX + secrets.token_urlsafe(32)


def api_hash(secret: str, org_id: str, user_id: str, timestamp: int) -> str:
    """The seed's `apiHash` (standard base64 with padding)."""
    mac = hmac.new(secret.encode(), f"{org_id}:{user_id}:{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def check_signup(req: SignupRequest, secret: str, *, now_ms: int, window_ms: int,
                 last_ts: int | None) -> None:
    """Unauthorized for a wrong hash or a timestamp outside the window; Conflict for a
    signup not newer than the user's last accepted one (a replay)."""
    want = api_hash(secret, req.comp_ext_id, req.user_ext_id, req.request_timestamp)
    if not hmac.compare_digest(want.encode(), req.api_hash.encode("utf-8", "surrogatepass")):
        raise Unauthorized("invalid_api_hash", "apiHash does not match", "apiHash")
    if abs(now_ms - req.request_timestamp) > window_ms:
        raise Unauthorized("stale_timestamp", f"requestTimestamp is more than "
                           f"{window_ms // 1000} s from now (epoch ms expected)",
                           "requestTimestamp")
    if last_ts is not None and req.request_timestamp <= last_ts:
        raise Conflict("signup_replayed", "this signup (or a newer one) was already "
                       "accepted: sign a new one with the current time")


def personalise(configuration: dict[str, Any], req: SignupRequest) -> dict[str, Any]:
    """A template side's configuration for one user: ``{instanceUrl}``, ``{email}``,
    ``{compExtId}``, ``{userExtId}`` in its string values replaced."""
    values = {"{instanceUrl}": req.instance_url or "", "{email}": req.email or "",
              "{compExtId}": req.comp_ext_id, "{userExtId}": req.user_ext_id}
    out: dict[str, Any] = {}
    for key, value in configuration.items():
        if isinstance(value, str):
            for placeholder, given in values.items():
                value = value.replace(placeholder, given)
        out[key] = value
    return out
