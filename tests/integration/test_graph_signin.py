"""Graph sign-in on a real broker: a graph ⇄ platform profile without a token is
connected through the authorization-code flow with PKCE (a loopback identity platform,
tests/fakes/identity.py, consenting at once), and a run then syncs with the token it
got. A tampered or expired state, Microsoft's refusal and a code used twice are clear
400 pages and write nothing.

The fake redirects to the hub's public URL (SWITCHBOARD_PUBLIC_URL); the test hub serves
on another port, so the test follows that one redirect itself, path and query unchanged."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from switchboard.kafka import SYNC_PROFILES
from switchboard.keys import derive_key, parse_master_keys
from switchboard.sealer import Sealer
from switchboard.sync.graph_signin import SigninState, sign_state
from switchboard.sync.profiles import open_credentials, profile_decoder
from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentity
from tests.fakes.platform import FakePlatform
from tests.integration.test_sync_runs import run_and_wait
from tests.topics import read_topics

CLIENT_ID = "5e3ce6c0-2b1f-4285-8d4b-75ee78787346"
SECRET = "app-secret"
PUBLIC = "https://hub.example.test"
RETURN = "https://app.example.test/sync/connected"


@dataclass
class Setup:
    hub: RunningHub
    platform: FakePlatform
    graph: FakeGraph
    identity: FakeIdentity


@pytest.fixture
async def setup(broker: Any) -> AsyncIterator[Setup]:
    platform = await FakePlatform(page_size=3).start()
    graph = FakeGraph(token="no-token-yet", page_size=3)
    await graph.start()

    def issued(token: str) -> None:
        graph.token = token

    identity = FakeIdentity(client_id=CLIENT_ID, client_secret=SECRET, on_issue=issued)
    await identity.start()
    settings = make_settings(broker, graph_api_url=graph.url, public_url=PUBLIC,
                             graph_authority_url=identity.url, provider_timeout_s=5.0,
                             graph_signin_return_urls="https://app.example.test/sync")
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        yield Setup(hub, platform, graph, identity)
    finally:
        await hub.stop()
        await identity.stop()
        await graph.stop()
        await platform.stop()


async def profile_records(s: Setup, pid: str) -> list[bytes]:
    return [v for _t, k, v in await read_topics(s.hub.settings, [SYNC_PROFILES])
            if k == pid.encode() and v is not None]


async def stored_credentials(s: Setup, pid: str) -> dict[str, str]:
    *_, value = await profile_records(s, pid)
    return open_credentials(Sealer.from_b64(s.hub.settings.sealing_keys),
                            profile_decoder.decode(value), "mailbox")


async def sign_in(s: Setup, url: str, auth: dict[str, str],
                  body: dict[str, str] | None = None) -> str:
    """Connect, let the fake consent: the callback path and query Microsoft sends back."""
    r = await s.hub.client.post(url + "/connect", headers=auth, json=body or {})
    assert r.status_code == 200, r.text
    assert r.json()["redirectUri"] == PUBLIC + "/api/v1/oauth/graph/callback"
    authorize = r.json()["authorizeUrl"]
    assert authorize.startswith(f"{s.identity.url}/contoso.test/oauth2/v2.0/authorize?")
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(authorize)
    assert consent.status_code == 302, consent.text
    location = consent.headers["location"]
    assert location.startswith(PUBLIC + "/api/v1/oauth/graph/callback?")
    return location.removeprefix(PUBLIC)


def with_state(callback: str, state: str) -> str:
    path, _, query = callback.partition("?")
    q = dict(urllib.parse.parse_qsl(query))
    return path + "?" + urllib.parse.urlencode({**q, "state": state})


async def test_sign_in_then_sync_and_every_refusal(setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth = await s.hub.create_hub("graph")
    s.platform.add_user("ptok", email="pat@platform.test")
    s.platform.add("contact", firstName="Ada", lastName="Lovelace", email="ada@example.test")
    s.graph.add("contacts", {"givenName": "Mia", "surname": "Wong", "displayName": "Mia Wong",
                             "emailAddresses": [{"address": "mia@example.test"}]})
    # The app registration only: no token of the user's yet.
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth, json={
        "name": "outlook",
        "portal": {"kind": "platform", "configuration": {"instanceUrl": s.platform.url},
                   "credentials": {"accessToken": "ptok"}},
        "mailbox": {"kind": "graph", "configuration": {},
                    "credentials": {"clientId": CLIENT_ID, "clientSecret": SECRET,
                                    "tenant": "contoso.test"}},
        "modules": {"contacts": {"options": {"direction": "BOTH"}, "needReview": False}}})
    assert r.status_code == 201, r.text
    pid = r.json()["profileId"]
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    # Before the sign-in a run fails on the mailbox, saying what to do.
    status = (await run_and_wait(c, url, auth, initial=True))["status"]
    assert status["errSvcId"] == "mailbox", status
    assert "no token yet; sign the mailbox in" in status["errMessage"]
    assert s.graph.requests == []

    callback = await sign_in(s, url, auth)
    written = len(await profile_records(s, pid))

    # A state whose MAC does not match: a 400 page, nothing redeemed, nothing written.
    state = dict(urllib.parse.parse_qsl(callback.partition("?")[2]))["state"]
    payload, _, mac = state.partition(".")
    tampered = payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    r = await c.get(with_state(callback, tampered))
    assert r.status_code == 400 and "text/html" in r.headers["content-type"]
    assert "not one this hub made" in r.text
    # A state of this hub's, 16 minutes old.
    key = derive_key(parse_master_keys(s.hub.settings.sealing_keys)[0], "graph-signin")
    old = SigninState(profile_id=pid, hub_id=hub_id, client_id=CLIENT_ID,
                      tenant="contoso.test", redirect_uri=PUBLIC + "/api/v1/oauth/graph/callback",
                      expires_at=int(time.time() * 1000) - 60_000, nonce="n" * 32)
    r = await c.get(with_state(callback, sign_state(key, old)))
    assert r.status_code == 400 and "expired" in r.text
    assert [f["grant_type"] for _t, f in s.identity.requests] == []
    assert len(await profile_records(s, pid)) == written

    # The real answer: the code redeemed with the PKCE verifier, the tokens sealed.
    r = await c.get(callback)
    assert r.status_code == 200, r.text
    assert "connected" in r.text and "You can close this page" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["referrer-policy"] == "no-referrer"
    [(tenant, form)] = s.identity.requests
    assert tenant == "contoso.test" and form["grant_type"] == "authorization_code"
    assert form["client_secret"] == SECRET and len(form["code_verifier"]) >= 43
    assert form["redirect_uri"] == PUBLIC + "/api/v1/oauth/graph/callback"
    [refresh] = s.identity.refresh_tokens
    creds = await stored_credentials(s, pid)
    assert creds == {"clientId": CLIENT_ID, "clientSecret": SECRET, "tenant": "contoso.test",
                     "refreshToken": refresh, "accessToken": s.graph.token}
    got = (await c.get(url, headers=auth)).json()
    assert got["mailbox"]["credentials"] == dict.fromkeys(creds, "********")
    assert got["connected"] is True

    # The same code again: Microsoft refuses it, the page says so, nothing changes.
    written = len(await profile_records(s, pid))
    r = await c.get(callback)
    assert r.status_code == 400
    assert "refused the sign-in code (invalid_grant): AADSTS54005" in r.text
    assert len(await profile_records(s, pid)) == written

    # A run with the token the sign-in got.
    done = await run_and_wait(c, url, auth, initial=True)
    status = done["status"]
    assert status.get("errMessage") is None, status
    assert status["modules"]["contacts"]["created"] == 2
    assert {x["email"] for x in s.platform.live("contact")} == {
        "ada@example.test", "mia@example.test"}
    assert {x["emailAddresses"][0]["address"] for x in s.graph.live("contacts")} == {
        "ada@example.test", "mia@example.test"}

    # The user declines consent: Microsoft's error on a 400 page.
    s.identity.deny = True
    denied = await sign_in(s, url, auth)
    r = await c.get(denied)
    assert r.status_code == 400 and "access_denied" in r.text and "AADSTS65004" in r.text
    assert "Trace ID" not in r.text
    assert len(await profile_records(s, pid)) == written
    s.identity.deny = False

    # Back to the caller's page when asked (allow-listed), told which profile it was.
    r = await c.post(url + "/connect", headers=auth,
                     json={"returnUrl": "https://app.example.test.evil.test/sync"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "return_url_not_allowed"
    back = await sign_in(s, url, auth, {"returnUrl": RETURN})
    r = await c.get(back)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"{RETURN}?graphSignin=connected&profileId={pid}"
    assert (await stored_credentials(s, pid))["refreshToken"] in s.identity.refresh_tokens

    # The profile deleted between connect and callback.
    late = await sign_in(s, url, auth)
    assert (await c.delete(url, headers=auth)).status_code == 204
    r = await c.get(late)
    assert r.status_code == 400 and "no longer exists" in r.text

    # Bad input: a missing code, a mailbox that is not Graph's, unknown fields.
    assert (await c.get("/api/v1/oauth/graph/callback")).status_code == 400
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth, json={
        "portal": {"kind": "platform", "configuration": {"instanceUrl": s.platform.url},
                   "credentials": {"accessToken": "ptok"}},
        "mailbox": {"kind": "platform", "configuration": {"instanceUrl": s.platform.url},
                    "credentials": {"accessToken": "ptok"}},
        "modules": {"contacts": {"options": {"direction": "BOTH"}}}})
    other = f"/api/v1/hubs/{hub_id}/syncProfiles/{r.json()['profileId']}"
    r = await c.post(other + "/connect", headers=auth, json={"clientId": CLIENT_ID})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "not_a_graph_mailbox"
    r = await c.post(other + "/connect", headers=auth, json={"nope": 1})
    assert r.status_code == 400
    assert (await c.post(other + "/connect", json={})).status_code == 401
