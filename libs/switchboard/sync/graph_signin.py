"""Microsoft Graph sign-in: the authorization-code flow with PKCE that gets a mailbox
side its first refresh token (pure: the authorize URL, the signed state, the PKCE pair,
the code redemption request and its answer).

The state is the whole server-side memory of a sign-in: profile, hub, app registration
(`clientId`, `tenant`), redirect URI, expiry and a nonce, as compact JSON with an
HMAC-SHA256 under a key derived from the deployment's master key. Any replica checks it;
nothing is stored. The PKCE verifier is an HMAC of the nonce under the same key, so the
callback derives it again instead of keeping it anywhere; only a holder of the server key
can, and Microsoft sees only its S256 challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Sequence
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from switchboard.errors import BadRequest
from switchboard.sync.errors import AuthFailed, ConnectorError, RateLimited
from switchboard.sync.graph_token import GRAPH_SCOPES, check_tenant, refusal_detail

__all__ = [
    "CALLBACK_PATH",
    "STATE_TTL_MS",
    "CodeGrant",
    "SigninState",
    "authorize_url",
    "code_request",
    "open_state",
    "parse_code_answer",
    "pkce_challenge",
    "pkce_verifier",
    "return_allowed",
    "return_to",
    "sign_state",
]

CALLBACK_PATH = "/api/v1/oauth/graph/callback"
# Long enough to find the password and approve an MFA prompt, short enough that a state
# copied out of a browser's history is useless by the time anyone reads it.
STATE_TTL_MS = 15 * 60 * 1000


class SigninState(Struct, frozen=True, kw_only=True, rename={
        "profile_id": "p", "hub_id": "h", "client_id": "c", "tenant": "t",
        "redirect_uri": "r", "expires_at": "e", "nonce": "n", "return_url": "u"}):
    profile_id: Annotated[str, Meta(min_length=1)]
    hub_id: Annotated[str, Meta(min_length=1)]
    client_id: Annotated[str, Meta(min_length=1)]
    tenant: str
    redirect_uri: str
    expires_at: int  # ms
    nonce: Annotated[str, Meta(min_length=16)]
    return_url: str | None = None  # where the browser goes when done (allow-listed)


class CodeGrant(Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str
    expires_at: int  # ms


class _Answer(Struct):
    access_token: Annotated[str, Meta(min_length=1)]
    expires_in: Annotated[int, Meta(ge=0)] = 3600
    refresh_token: str | None = None


_state_enc = msgspec.json.Encoder()
_state_dec = msgspec.json.Decoder(SigninState)
_answer = msgspec.json.Decoder(_Answer)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, label: bytes, data: bytes) -> bytes:
    return hmac.new(key, label + data, hashlib.sha256).digest()


def sign_state(key: bytes, state: SigninState) -> str:
    """``<payload>.<mac>``, both base64url."""
    payload = _state_enc.encode(state)
    return f"{_b64(payload)}.{_b64(_mac(key, b'graph-signin-state:', payload))}"


def _refused(why: str) -> BadRequest:
    return BadRequest("invalid_signin_state", f"{why}: start the sign-in again from the "
                      "profile's connect link", field="state")


def open_state(keys: Sequence[bytes], text: str, now_ms: int) -> tuple[SigninState, bytes]:
    """The state and the key that signed it (one of `keys`: key rotation); BadRequest if
    it is malformed, signed by none of them, or expired."""
    payload_b64, dot, mac_b64 = text.partition(".")
    if not dot or len(text) > 4096:
        raise _refused("the sign-in state is not one this hub made")
    try:
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
    except ValueError:
        raise _refused("the sign-in state is not one this hub made") from None
    signer = next((k for k in keys
                   if hmac.compare_digest(_mac(k, b"graph-signin-state:", payload), mac)),
                  None)
    if signer is None:
        raise _refused("the sign-in state is not one this hub made")
    try:
        state = _state_dec.decode(payload)
    except msgspec.DecodeError:
        raise _refused("the sign-in state is not one this hub made") from None
    if now_ms >= state.expires_at:
        raise _refused("the sign-in link has expired")
    return state, signer


def pkce_verifier(key: bytes, nonce: str) -> str:
    """The PKCE code verifier of a sign-in (43 characters, RFC 7636's minimum entropy)."""
    return _b64(_mac(key, b"graph-signin-pkce:", nonce.encode()))


def pkce_challenge(verifier: str) -> str:
    """S256: base64url(SHA-256(verifier))."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


def authorize_url(authority: str, state: SigninState, signed: str, challenge: str) -> str:
    """Where the user signs in and consents (the v2.0 authorize endpoint)."""
    check_tenant(state.tenant)
    query = urllib.parse.urlencode({
        "client_id": state.client_id, "response_type": "code",
        "redirect_uri": state.redirect_uri, "response_mode": "query",
        "scope": " ".join(GRAPH_SCOPES), "state": signed,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    return f"{authority.rstrip('/')}/{state.tenant}/oauth2/v2.0/authorize?{query}"


def code_request(authority: str, state: SigninState, code: str, verifier: str,
                 client_secret: str | None) -> tuple[str, dict[str, str]]:
    """The code redemption: its URL and form fields."""
    form = {"grant_type": "authorization_code", "client_id": state.client_id,
            "code": code, "redirect_uri": state.redirect_uri,
            "scope": " ".join(GRAPH_SCOPES), "code_verifier": verifier}
    if client_secret:
        form["client_secret"] = client_secret
    return f"{authority.rstrip('/')}/{state.tenant}/oauth2/v2.0/token", form


def parse_code_answer(status: int, content: bytes, now_ms: int) -> CodeGrant:
    """The tokens of a redeemed code; AuthFailed when Microsoft refuses it (used, expired,
    verifier wrong, client wrong), RateLimited when it is busy."""
    if status == 200:
        try:
            got = _answer.decode(content)
        except msgspec.DecodeError:
            raise ConnectorError("graph_bad_token_answer",
                                 "the Microsoft identity platform's token answer is not "
                                 "the OAuth2 one") from None
        if not got.refresh_token:
            raise AuthFailed("the Microsoft identity platform gave no refresh token: the "
                             "app registration must allow offline_access")
        return CodeGrant(access_token=got.access_token, refresh_token=got.refresh_token,
                         expires_at=now_ms + got.expires_in * 1000)
    if status == 429 or status >= 500:
        raise RateLimited(f"the Microsoft identity platform answered {status}", 30.0)
    error, detail = refusal_detail(content)
    text = f"the Microsoft identity platform refused the sign-in code ({error})"
    if detail:
        text += f": {detail}"
    if error in ("invalid_client", "unauthorized_client"):
        raise AuthFailed(text + "; check the clientId and the profile's clientSecret")
    raise AuthFailed(text + "; sign in again")


def return_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether `url` is under one of the `allowed` prefixes: the same scheme and host
    (and port) exactly, its path under the prefix's, no user info. Anything looser would
    make the hub an open redirect."""
    try:
        got = urllib.parse.urlsplit(url)
        port = got.port
    except ValueError:
        return False
    if got.scheme not in ("https", "http") or not got.hostname or "@" in got.netloc:
        return False
    for prefix in allowed:
        want = urllib.parse.urlsplit(prefix.strip())
        if not want.hostname:
            continue
        try:
            want_port = want.port
        except ValueError:
            continue
        base = want.path.rstrip("/")
        under = not base or got.path == base or got.path.startswith(base + "/")
        if (got.scheme == want.scheme.lower() and got.hostname == want.hostname
                and port == want_port and under):
            return True
    return False


def return_to(url: str, profile_id: str) -> str:
    """The allow-listed return URL, told which profile is connected now."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [("graphSignin", "connected"), ("profileId", profile_id)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query),
                                                  fragment=""))
