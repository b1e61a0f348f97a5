"""Slack provisioning: the ``oauth.v2.access`` code exchange (its form body and the
installation it grants) and ``auth.test`` (who a bot token belongs to).
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from switchboard import jsonsafe
from switchboard.errors import BadRequest, Unavailable

__all__ = [
    "AuthTest",
    "OAuthResult",
    "oauth_access_form",
    "parse_auth_test",
    "parse_oauth_response",
]


def oauth_access_form(code: str, client_id: str, client_secret: str,
                      redirect_uri: str | None = None) -> dict[str, str]:
    """The form body of ``oauth.v2.access`` (client credentials in the body)."""
    form = {"code": code, "client_id": client_id, "client_secret": client_secret}
    if redirect_uri:
        form["redirect_uri"] = redirect_uri
    return form


class _Team(Struct):
    id: str
    name: str | None = None


class _AuthedUser(Struct):
    id: str | None = None
    access_token: str | None = None


class _OAuthAnswer(Struct):
    ok: bool = False
    error: str | None = None
    access_token: str | None = None
    token_type: str | None = None
    bot_user_id: str | None = None
    app_id: str | None = None
    team: _Team | None = None
    authed_user: _AuthedUser | None = None


class OAuthResult(Struct, frozen=True, kw_only=True):
    bot_access_token: str
    team_id: str
    team_name: str | None = None
    bot_user_id: str | None = None
    app_id: str | None = None
    user_access_token: str | None = None


_oauth_decoder = msgspec.json.Decoder(_OAuthAnswer)


def _provider_unavailable(what: str, status: int) -> Unavailable:
    return Unavailable("slack_unavailable", f"Slack {what} failed (HTTP {status}); retry later")


def parse_oauth_response(status: int, body: bytes) -> OAuthResult:
    """The installation an ``oauth.v2.access`` answer grants; BadRequest with Slack's own
    error (``invalid_code``, ``code_already_used``, ``bad_client_secret``…) if refused."""
    if status == 429 or status >= 500:
        raise _provider_unavailable("oauth.v2.access", status)
    try:
        answer = jsonsafe.decode(body, _oauth_decoder)
    except BadRequest:
        raise _provider_unavailable("oauth.v2.access", status) from None
    if not answer.ok:
        error = (answer.error or f"http_{status}")[:64]
        raise BadRequest("slack_oauth_failed", f"Slack refused the OAuth code: {error}",
                         "configuration.code")
    if not answer.access_token or answer.team is None:
        raise BadRequest("slack_oauth_failed",
                         "Slack granted no bot token: the app must request bot scopes",
                         "configuration.code")
    user = answer.authed_user
    return OAuthResult(
        bot_access_token=answer.access_token,
        team_id=answer.team.id,
        team_name=answer.team.name,
        bot_user_id=answer.bot_user_id,
        app_id=answer.app_id,
        user_access_token=user.access_token if user is not None else None,
    )


class AuthTest(Struct, frozen=True, kw_only=True):
    team_id: str
    user: str | None = None  # the bot user's name
    user_id: str | None = None
    bot_id: str | None = None


class _AuthTestAnswer(Struct):
    ok: bool = False
    error: str | None = None
    team_id: str | None = None
    user: str | None = None
    user_id: str | None = None
    bot_id: str | None = None


_auth_test_decoder = msgspec.json.Decoder(_AuthTestAnswer)


def parse_auth_test(status: int, body: bytes) -> AuthTest:
    """Who a token belongs to (``auth.test``); BadRequest if Slack refuses the token."""
    if status == 429 or status >= 500:
        raise _provider_unavailable("auth.test", status)
    try:
        answer = jsonsafe.decode(body, _auth_test_decoder)
    except BadRequest:
        raise _provider_unavailable("auth.test", status) from None
    if not answer.ok or not answer.team_id:
        error = (answer.error or f"http_{status}")[:64]
        raise BadRequest("slack_auth_failed", f"Slack refused the bot token: {error}",
                         "configuration.botAccessToken")
    return AuthTest(team_id=answer.team_id, user=answer.user, user_id=answer.user_id,
                    bot_id=answer.bot_id)
