"""The Graph mailbox's access token refreshed from the profile's refresh token, on a real
broker through the `sync` worker: an expired token is refreshed (once, on Graph's 401)
and the run succeeds; Microsoft's rotated refresh token is sealed into the profile; a
revoked one fails the run with errSvcId mailbox and a message saying what to do. The
token endpoint is a loopback Microsoft identity platform (tests/fakes/identity.py) on
SWITCHBOARD_GRAPH_AUTHORITY_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.kafka import SYNC_PROFILES
from switchboard.sealer import Sealer
from switchboard.sync.profiles import open_credentials, profile_decoder
from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentity
from tests.fakes.platform import FakePlatform
from tests.integration.test_sync_runs import run_and_wait
from tests.topics import read_topics

CLIENT_ID = "5e3ce6c0-2b1f-4285-8d4b-75ee78787346"
SECRET = "app-secret"


@dataclass
class Setup:
    hub: RunningHub
    platform: FakePlatform
    graph: FakeGraph
    identity: FakeIdentity


@pytest.fixture
async def setup(broker: Any) -> AsyncIterator[Setup]:
    platform = await FakePlatform(page_size=3).start()
    graph = FakeGraph(token="at-issued-yesterday", page_size=3)
    await graph.start()

    def issued(token: str) -> None:
        graph.token = token  # the new one works, the old one has expired

    identity = FakeIdentity(client_id=CLIENT_ID, client_secret=SECRET, on_issue=issued)
    await identity.start()
    settings = make_settings(broker, graph_api_url=graph.url,
                             graph_authority_url=identity.url, provider_timeout_s=5.0)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        yield Setup(hub, platform, graph, identity)
    finally:
        await hub.stop()
        await identity.stop()
        await graph.stop()
        await platform.stop()


async def stored_credentials(s: Setup, profile_id: str) -> dict[str, str]:
    """The mailbox credentials as stored on sync.profiles (opened here)."""
    [*_, value] = [v for _t, k, v in await read_topics(s.hub.settings, [SYNC_PROFILES])
                   if k == profile_id.encode()]
    assert value is not None
    rec = profile_decoder.decode(value)
    return open_credentials(Sealer.from_b64(s.hub.settings.sealing_keys), rec, "mailbox")


async def test_an_expired_token_is_refreshed_the_rotation_kept_a_revoked_one_reported(
        setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth = await s.hub.create_hub("graph")
    s.platform.add_user("ptok", email="pat@platform.test")
    s.platform.add("contact", firstName="Ada", lastName="Lovelace", email="ada@example.test")
    s.graph.add("contacts", {"givenName": "Mia", "surname": "Wong", "displayName": "Mia Wong",
                             "emailAddresses": [{"address": "mia@example.test"}]})
    refresh = s.identity.grant()
    s.graph.token = "at-current"
    r = await c.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth, json={
        "name": "outlook",
        "portal": {"kind": "platform",
                   "configuration": {"instanceUrl": s.platform.url},
                   "credentials": {"accessToken": "ptok"}},
        "mailbox": {"kind": "graph", "configuration": {},
                    "credentials": {"accessToken": "at-issued-yesterday",
                                    "refreshToken": refresh, "clientId": CLIENT_ID,
                                    "clientSecret": SECRET, "tenant": "contoso.test"}},
        "modules": {"contacts": {"options": {"direction": "BOTH"}, "needReview": False}}})
    assert r.status_code == 201, r.text
    pid = r.json()["profileId"]
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"

    # Graph answers 401 to the stored token: one refresh, the request again, the run goes on.
    done = await run_and_wait(c, url, auth, initial=True)
    status = done["status"]
    assert status.get("errMessage") is None, status
    assert status["modules"]["contacts"]["created"] == 2
    assert {x["emailAddresses"][0]["address"] for x in s.graph.live("contacts")} == {
        "ada@example.test", "mia@example.test"}
    assert {x["email"] for x in s.platform.live("contact")} == {
        "ada@example.test", "mia@example.test"}
    [(tenant, form)] = s.identity.requests
    assert tenant == "contoso.test"
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == refresh
    assert form["client_id"] == CLIENT_ID and form["client_secret"] == SECRET
    assert set(form["scope"].split()) == {
        "offline_access", "https://graph.microsoft.com/Contacts.ReadWrite",
        "https://graph.microsoft.com/Calendars.ReadWrite",
        "https://graph.microsoft.com/Tasks.ReadWrite", "https://graph.microsoft.com/Mail.Read"}
    # Every Graph request after the refresh carried the new token.
    sent = [h.get("authorization") for _m, _p, _q, h in s.graph.requests]
    assert sent[0] == "Bearer at-issued-yesterday"
    assert set(sent[1:]) == {f"Bearer {s.graph.token}"}

    # The refresh token Microsoft rotated is the one stored now (sealed, as the API
    # would), the stale access token is gone, the rest is as given.
    [rotated] = s.identity.refresh_tokens
    assert rotated != refresh
    creds = await stored_credentials(s, pid)
    assert creds == {"refreshToken": rotated, "clientId": CLIENT_ID, "clientSecret": SECRET,
                     "tenant": "contoso.test"}
    got = (await c.get(url, headers=auth)).json()
    assert got["mailbox"]["credentials"] == dict.fromkeys(creds, "********")

    # The next run refreshes first (no access token stored) with the rotated token.
    s.platform.add("contact", firstName="Bo", lastName="Berg", email="bo@example.test")
    done = await run_and_wait(c, url, auth)
    assert done["status"].get("errMessage") is None, done["status"]
    assert done["status"]["modules"]["contacts"]["created"] == 1
    assert [f["refresh_token"] for _t, f in s.identity.requests] == [refresh, rotated]
    assert (await stored_credentials(s, pid))["refreshToken"] in s.identity.refresh_tokens

    # The user's sessions are revoked: the refresh is refused, the run fails on the mailbox
    # side with a message that says what to do; nothing is written.
    s.identity.revoke()
    before = len(s.platform.live("contact"))
    s.platform.add("contact", firstName="Cy", lastName="Cole", email="cy@example.test")
    done = await run_and_wait(c, url, auth)
    status = done["status"]
    assert status["errSvcId"] == "mailbox", status
    assert "refused the refresh token (invalid_grant)" in status["errMessage"]
    assert "AADSTS50173" in status["errMessage"]
    assert "sign in to Microsoft 365 again" in status["errMessage"]
    assert "Trace ID" not in status["errMessage"]
    assert len(s.graph.live("contacts")) == 3 and len(s.platform.live("contact")) == before + 1
