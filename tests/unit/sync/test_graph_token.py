"""The Microsoft identity platform refresh: the request built, the answers read."""

from __future__ import annotations

import orjson
import pytest

from switchboard.sync.errors import AuthFailed, ConnectorError, RateLimited
from switchboard.sync.graph_token import (
    GRAPH_SCOPES,
    REFRESH_EARLY_MS,
    GraphCredentials,
    credentials_from,
    needs_refresh,
    parse_token_answer,
    token_request,
)


def test_the_request() -> None:
    creds = credentials_from({"refreshToken": "rt", "clientId": "cid"})
    assert creds == GraphCredentials(client_id="cid", refresh_token="rt", tenant="common")
    url, form = token_request("https://login.microsoftonline.com/", creds)
    assert url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert form == {"grant_type": "refresh_token", "client_id": "cid", "refresh_token": "rt",
                    "scope": " ".join(GRAPH_SCOPES)}
    assert "offline_access" in GRAPH_SCOPES and len(GRAPH_SCOPES) == 5
    confidential = credentials_from({"refreshToken": "rt", "clientId": "cid",
                                     "clientSecret": "s", "tenant": "contoso.com",
                                     "accessToken": "at"})
    assert confidential is not None and confidential.access_token == "at"
    url, form = token_request("https://login.example", confidential)
    assert url == "https://login.example/contoso.com/oauth2/v2.0/token"
    assert form["client_secret"] == "s"


def test_credentials_without_a_refresh_token_or_incomplete() -> None:
    assert credentials_from({"accessToken": "at"}) is None
    with pytest.raises(AuthFailed, match="clientId"):
        credentials_from({"refreshToken": "rt"})
    for tenant in ("../evil", "a/b", "x?y=1", "", " "):
        if tenant.strip():
            with pytest.raises(AuthFailed, match="tenant"):
                credentials_from({"refreshToken": "rt", "clientId": "c", "tenant": tenant})


def test_answers() -> None:
    ok = orjson.dumps({"token_type": "Bearer", "scope": "x", "expires_in": 3599,
                       "ext_expires_in": 3599, "access_token": "at2", "refresh_token": "rt2"})
    grant = parse_token_answer(200, ok, 1_000)
    assert (grant.access_token, grant.expires_at, grant.refresh_token) == ("at2", 3_600_000,
                                                                           "rt2")
    same = parse_token_answer(200, orjson.dumps({"access_token": "at3", "expires_in": 60}), 0)
    assert same.refresh_token is None and same.expires_at == 60_000
    with pytest.raises(ConnectorError, match="not the OAuth2 one"):
        parse_token_answer(200, b"<html>", 0)
    with pytest.raises(ConnectorError):
        parse_token_answer(200, orjson.dumps({"access_token": ""}), 0)
    revoked = orjson.dumps({"error": "invalid_grant", "error_description":
                            "AADSTS50173: The provided grant has expired.\r\nTrace ID: 1"})
    with pytest.raises(AuthFailed) as info:
        parse_token_answer(400, revoked, 0)
    text = info.value.description
    assert "(invalid_grant): AADSTS50173: The provided grant has expired." in text
    assert "sign in to Microsoft 365 again" in text and "Trace ID" not in text
    with pytest.raises(AuthFailed, match="clientSecret"):
        parse_token_answer(401, orjson.dumps({"error": "invalid_client"}), 0)
    with pytest.raises(AuthFailed, match="unknown_error"):
        parse_token_answer(400, b"not json", 0)
    with pytest.raises(RateLimited) as busy:
        parse_token_answer(503, b"", 0, retry_after=7)
    assert busy.value.retry_after == 7
    with pytest.raises(RateLimited):
        parse_token_answer(429, b"", 0)


def test_when_to_refresh() -> None:
    creds = GraphCredentials(client_id="c", refresh_token="r")
    assert needs_refresh(creds, 0)  # no access token yet
    given = GraphCredentials(client_id="c", refresh_token="r", access_token="at")
    assert not needs_refresh(given, 10**15)  # expiry unknown: tried, refreshed on its 401
    fresh = GraphCredentials(client_id="c", refresh_token="r", access_token="at",
                             expires_at=3_600_000)
    assert not needs_refresh(fresh, 3_600_000 - REFRESH_EARLY_MS - 1)
    assert needs_refresh(fresh, 3_600_000 - REFRESH_EARLY_MS)
