"""Graph sign-in, pure parts: the authorize URL, the signed state, PKCE, the code
redemption and its answers."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse

import orjson
import pytest

from switchboard.errors import BadRequest
from switchboard.sync.errors import AuthFailed, ConnectorError, RateLimited
from switchboard.sync.graph_signin import (
    CodeGrant,
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
from switchboard.sync.graph_token import GRAPH_SCOPES

KEY, OTHER = b"k" * 32, b"o" * 32
STATE = SigninState(profile_id="p1", hub_id="h1", client_id="cid", tenant="contoso.com",
                    redirect_uri="https://hub.example/api/v1/oauth/graph/callback",
                    expires_at=10_000, nonce="n" * 32)


def test_state_round_trip_and_key_rotation() -> None:
    signed = sign_state(KEY, STATE)
    assert open_state([KEY], signed, 9_999) == (STATE, KEY)
    # After a key rotation the old key still opens what it signed, and says it did.
    assert open_state([OTHER, KEY], signed, 0) == (STATE, KEY)


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"),   # the MAC changed
    lambda s: "e30" + s[s.index("."):],                             # another payload
    lambda s: s.replace(".", ""),                                   # no MAC at all
    lambda s: s + "!",                                              # not base64
    lambda s: "",
])
def test_a_tampered_state_is_refused(mangle: object) -> None:
    signed = sign_state(KEY, STATE)
    with pytest.raises(BadRequest) as err:
        open_state([KEY], mangle(signed), 0)  # type: ignore[operator]
    assert err.value.code == "invalid_signin_state"


def test_a_state_of_another_deployment_or_expired_is_refused() -> None:
    with pytest.raises(BadRequest, match="not one this hub made"):
        open_state([OTHER], sign_state(KEY, STATE), 0)
    with pytest.raises(BadRequest, match="expired"):
        open_state([KEY], sign_state(KEY, STATE), 10_000)


def test_pkce_is_rfc7636_s256() -> None:
    verifier = pkce_verifier(KEY, STATE.nonce)
    assert 43 <= len(verifier) <= 128 and verifier == pkce_verifier(KEY, STATE.nonce)
    assert verifier != pkce_verifier(OTHER, STATE.nonce)
    assert verifier != pkce_verifier(KEY, "m" * 32)
    # RFC 7636 appendix B's example.
    assert pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    raw = base64.urlsafe_b64decode(pkce_challenge(verifier) + "=")
    assert raw == hashlib.sha256(verifier.encode()).digest()


def test_the_authorize_url() -> None:
    url = authorize_url("https://login.microsoftonline.com/", STATE, "S.M", "CH")
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == \
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize"
    assert dict(urllib.parse.parse_qsl(parts.query)) == {
        "client_id": "cid", "response_type": "code", "response_mode": "query",
        "redirect_uri": "https://hub.example/api/v1/oauth/graph/callback",
        "scope": " ".join(GRAPH_SCOPES), "state": "S.M", "code_challenge": "CH",
        "code_challenge_method": "S256"}
    bad = SigninState(**{**{f: getattr(STATE, f) for f in STATE.__struct_fields__},
                         "tenant": "../evil"})
    with pytest.raises(AuthFailed, match="tenant"):
        authorize_url("https://login.microsoftonline.com", bad, "S", "C")


def test_the_code_request() -> None:
    url, form = code_request("https://login.example", STATE, "the-code", "v", None)
    assert url == "https://login.example/contoso.com/oauth2/v2.0/token"
    assert form == {"grant_type": "authorization_code", "client_id": "cid",
                    "code": "the-code", "redirect_uri": STATE.redirect_uri,
                    "scope": " ".join(GRAPH_SCOPES), "code_verifier": "v"}
    _, form = code_request("https://login.example", STATE, "c", "v", "sec")
    assert form["client_secret"] == "sec"


def test_the_answers() -> None:
    ok = orjson.dumps({"token_type": "Bearer", "expires_in": 3599, "access_token": "at",
                       "refresh_token": "rt", "scope": "x"})
    assert parse_code_answer(200, ok, 1000) == CodeGrant(
        access_token="at", refresh_token="rt", expires_at=1000 + 3599_000)
    with pytest.raises(AuthFailed, match="offline_access"):
        parse_code_answer(200, orjson.dumps({"access_token": "at"}), 0)
    with pytest.raises(ConnectorError):
        parse_code_answer(200, b"<html>", 0)
    with pytest.raises(RateLimited):
        parse_code_answer(503, b"", 0)
    used = orjson.dumps({"error": "invalid_grant", "error_description":
                         "AADSTS54005: OAuth2 Authorization code was already redeemed.\r\n"
                         "Trace ID: 1"})
    with pytest.raises(AuthFailed) as err:
        parse_code_answer(400, used, 0)
    assert "refused the sign-in code (invalid_grant): AADSTS54005" in err.value.description
    assert "Trace ID" not in err.value.description
    with pytest.raises(AuthFailed, match="clientSecret"):
        parse_code_answer(401, orjson.dumps({"error": "invalid_client"}), 0)


ALLOWED = ["https://app.example.com/sync/done", "http://localhost:3000"]


@pytest.mark.parametrize(("url", "ok"), [
    ("https://app.example.com/sync/done", True),
    ("https://app.example.com/sync/done/step?x=1", True),
    ("https://APP.example.com/sync/done", True),           # host names have no case
    ("http://localhost:3000/anything", True),
    ("https://app.example.com/sync/donee", False),          # not under the path
    ("https://app.example.com/other", False),
    ("http://app.example.com/sync/done", False),            # another scheme
    ("https://app.example.com:8443/sync/done", False),      # another port
    ("https://app.example.com.evil.test/sync/done", False),
    ("https://evil.test@app.example.com/sync/done", False),  # user info
    ("https://evil.test/sync/done", False),
    ("javascript:alert(1)", False),
    ("//app.example.com/sync/done", False),
    ("https://app.example.com:99999/sync/done", False),     # not a port
    ("", False),
])
def test_return_urls_are_allow_listed(url: str, ok: bool) -> None:
    assert return_allowed(url, ALLOWED) is ok
    assert return_allowed(url, []) is False


def test_return_to_names_the_profile() -> None:
    assert return_to("https://app.example.com/done?a=1#frag", "p1") == \
        "https://app.example.com/done?a=1&graphSignin=connected&profileId=p1"
