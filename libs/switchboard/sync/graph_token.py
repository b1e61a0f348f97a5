"""Microsoft identity platform: the token request that refreshes a Graph access token,
and its answer (pure: the request as a URL and form, the answer as a `TokenGrant`).

A mailbox side's credentials hold `refreshToken` and `clientId` (the app registration),
`clientSecret` for a confidential client (none for a public one), `tenant` (default
``common``) and optionally a current `accessToken`. The refresh is the OAuth2
refresh-token grant on the v2.0 endpoint::

    POST {authority}/{tenant}/oauth2/v2.0/token
    grant_type=refresh_token&client_id=…&refresh_token=…&scope=offline_access …[&client_secret=…]

The answer carries a new access token, its lifetime (`expires_in`, seconds) and usually
a new refresh token (Microsoft rotates them: the new one must be kept, the old one may
stop working). An `invalid_grant` (revoked, expired, password changed, consent withdrawn)
means the user must sign in again: `AuthFailed`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from switchboard.sync.errors import AuthFailed, ConnectorError, RateLimited

__all__ = [
    "GRAPH_SCOPES",
    "REFRESH_EARLY_MS",
    "GraphCredentials",
    "TokenGrant",
    "check_tenant",
    "credentials_from",
    "needs_refresh",
    "parse_token_answer",
    "refusal_detail",
    "token_request",
]

# Delegated permissions the connector uses; offline_access asks for a refresh token.
GRAPH_SCOPES = ("offline_access", "https://graph.microsoft.com/Contacts.ReadWrite",
                "https://graph.microsoft.com/Calendars.ReadWrite",
                "https://graph.microsoft.com/Tasks.ReadWrite",
                "https://graph.microsoft.com/Mail.Read")
# Refreshed this long before it expires: a request started just before expiry still
# arrives with a valid token, whatever the clock skew with Microsoft.
REFRESH_EARLY_MS = 5 * 60 * 1000
# A tenant is a GUID, a verified domain, or common / organizations / consumers; it goes
# into the URL path, so nothing else is accepted.
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$")


class GraphCredentials(Struct, frozen=True, kw_only=True):
    client_id: str
    refresh_token: str
    client_secret: str | None = None
    tenant: str = "common"
    access_token: str | None = None
    expires_at: int | None = None  # ms; unknown for a token given by the user


class TokenGrant(Struct, frozen=True, kw_only=True):
    access_token: str
    expires_at: int  # ms
    refresh_token: str | None  # a rotated refresh token, if the answer carried one


class _Answer(Struct):
    access_token: Annotated[str, Meta(min_length=1)]
    expires_in: Annotated[int, Meta(ge=0)] = 3600
    refresh_token: str | None = None


class _Refusal(Struct):
    error: str = "unknown_error"
    error_description: str = ""


_answer = msgspec.json.Decoder(_Answer)
_refusal = msgspec.json.Decoder(_Refusal)


def check_tenant(tenant: str) -> str:
    """`tenant` if it may go into the authority's URL path, else AuthFailed."""
    if not _TENANT.match(tenant):
        raise AuthFailed("graph: tenant must be a tenant id, a domain, or common / "
                         "organizations / consumers")
    return tenant


def refusal_detail(content: bytes) -> tuple[str, str]:
    """A refusal's OAuth2 `error` and the first line of its description (the AADSTS
    code and reason; the trace ids that follow are left out)."""
    try:
        why = _refusal.decode(content)
    except msgspec.DecodeError:
        why = _Refusal()
    detail = why.error_description.splitlines()[0][:300] if why.error_description else ""
    return why.error, detail


def credentials_from(credentials: Mapping[str, str]) -> GraphCredentials | None:
    """The refresh credentials of a mailbox side, or None when it holds only an access
    token (nothing to refresh with). ConnectorError if they are incomplete."""
    refresh = credentials.get("refreshToken")
    if not refresh:
        return None
    client_id = credentials.get("clientId")
    if not client_id:
        raise AuthFailed("graph: a refreshToken needs the clientId of the app registration "
                         "that issued it")
    tenant = check_tenant(credentials.get("tenant") or "common")
    return GraphCredentials(client_id=client_id, refresh_token=refresh,
                            client_secret=credentials.get("clientSecret") or None,
                            tenant=tenant, access_token=credentials.get("accessToken") or None)


def token_request(authority: str, creds: GraphCredentials) -> tuple[str, dict[str, str]]:
    """The refresh request: its URL and its form fields."""
    form = {"grant_type": "refresh_token", "client_id": creds.client_id,
            "refresh_token": creds.refresh_token, "scope": " ".join(GRAPH_SCOPES)}
    if creds.client_secret:
        form["client_secret"] = creds.client_secret
    return f"{authority.rstrip('/')}/{creds.tenant}/oauth2/v2.0/token", form


def parse_token_answer(status: int, content: bytes, now_ms: int,
                       retry_after: float | None = None) -> TokenGrant:
    """The token endpoint's answer as a grant; AuthFailed when it refuses the refresh
    token (the user must sign in again), RateLimited when it is busy or unreachable,
    ConnectorError for an answer that is not the protocol's."""
    if status == 200:
        try:
            got = _answer.decode(content)
        except msgspec.DecodeError:
            raise ConnectorError("graph_bad_token_answer",
                                 "the Microsoft identity platform's token answer is not "
                                 "the OAuth2 one") from None
        return TokenGrant(access_token=got.access_token,
                          expires_at=now_ms + got.expires_in * 1000,
                          refresh_token=got.refresh_token or None)
    if status == 429 or status >= 500:
        raise RateLimited(f"the Microsoft identity platform answered {status}",
                          30.0 if retry_after is None else retry_after)
    error, detail = refusal_detail(content)
    text = f"the Microsoft identity platform refused the refresh token ({error})"
    if detail:
        text += f": {detail}"
    if error in ("invalid_grant", "interaction_required", "consent_required"):
        raise AuthFailed(text + "; sign in to Microsoft 365 again and update the profile")
    if error in ("invalid_client", "unauthorized_client"):
        raise AuthFailed(text + "; check the clientId and clientSecret")
    raise AuthFailed(text)


def needs_refresh(creds: GraphCredentials, now_ms: int) -> bool:
    """Refresh before the first request (no access token, or one whose expiry is unknown
    is tried first, then refreshed on its 401) or when the token is about to expire."""
    if creds.access_token is None:
        return True
    return creds.expires_at is not None and now_ms >= creds.expires_at - REFRESH_EARLY_MS
