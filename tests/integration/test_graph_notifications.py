"""Graph change notifications on a real broker: the `sync` worker subscribes a profile
whose mailbox has changeNotifications (the hub answers Graph's validation handshake), a
contact created in the Graph fake is notified, and the run that triggers brings it to
the platform fake with no run asked for; a subscription near its expiry is renewed; a
notification without the profile's clientState runs nothing. Lifecycle notifications:
reauthorizationRequired reauthorizes, missed runs, subscriptionRemoved subscribes again;
forged ones do nothing; a Graph call of theirs that fails (503, 429 beyond what the
request waits out itself) is tried again (the schedule made fast through the settings).

The fake posts to the hub's public URL (SWITCHBOARD_PUBLIC_URL); `reroute` points that
at the port the test hub serves on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.platform import FakePlatform
from tests.integration.test_sync_runs import run_and_wait, wait_job

PUBLIC = "https://hub.example.test"


@dataclass
class Setup:
    hub: RunningHub
    platform: FakePlatform
    graph: FakeGraph


@pytest.fixture
async def setup(broker: Any) -> AsyncIterator[Setup]:
    platform = await FakePlatform(page_size=3).start()
    graph = FakeGraph(page_size=3)
    await graph.start()
    # Lifecycle work tried again 0.1 s after a failure (Graph's Retry-After honoured).
    settings = make_settings(broker, graph_api_url=graph.url, public_url=PUBLIC,
                             provider_timeout_s=5.0,
                             graph_lifecycle_retry_schedule="0,0.1,0.1,0.1,0.1",
                             graph_lifecycle_retry_max_s=60.0)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    graph.subs.reroute = (PUBLIC, hub.base_url)
    try:
        yield Setup(hub, platform, graph)
    finally:
        await hub.stop()
        await graph.stop()
        await platform.stop()


async def until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return got


async def notified_profile(s: Setup, *modules: str) -> tuple[str, dict[str, str], str]:
    """A hub and a profile between the platform (user ``ptok``) and the Graph mailbox with
    change notifications on and `modules` both ways, out of review: hub id, auth, profile
    id."""
    hub_id, auth = await s.hub.create_hub("graph")
    s.platform.add_user("ptok", email="pat@platform.test")
    r = await s.hub.client.post(f"/api/v1/hubs/{hub_id}/syncProfiles", headers=auth, json={
        "name": "outlook",
        "portal": {"kind": "platform", "configuration": {"instanceUrl": s.platform.url},
                   "credentials": {"accessToken": "ptok"}},
        "mailbox": {"kind": "graph", "configuration": {"changeNotifications": True},
                    "credentials": {"accessToken": s.graph.token}},
        "modules": {m: {"options": {"direction": "BOTH"}, "needReview": False}
                    for m in modules}})
    assert r.status_code == 201, r.text
    return hub_id, auth, str(r.json()["profileId"])


async def test_a_contact_made_in_outlook_reaches_the_platform_by_notification(
        setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth, pid = await notified_profile(s, "contacts", "tasks")
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    hook = f"/api/v1/sync/graph/notifications/{pid}"
    done = await run_and_wait(c, url, auth, initial=True)
    assert done["status"].get("errMessage") is None, done["status"]

    subs = s.graph.subs
    # The worker that owns the profile subscribes it (the collections of its modules, the
    # to-do list being the user's default one); the hub passed the handshakes.
    made = await until("the subscriptions", lambda: len(subs.subscriptions) == 2
                       and list(subs.subscriptions.values()))
    assert {x["resource"] for x in made} == {"/me/contacts",
                                             "/me/todo/lists/AAMkTasksDefault/tasks"}
    assert {x["notificationUrl"] for x in made} == {PUBLIC + hook}
    assert {x["changeType"] for x in made} == {"created,updated,deleted"}
    assert {x["lifecycleNotificationUrl"] for x in made} == {
        f"{PUBLIC}/api/v1/sync/graph/lifecycle/{pid}"}
    assert subs.validations == [200] * 4  # each URL of each subscription
    [sub] = [x for x in made if x["resource"] == "/me/contacts"]

    # Made in Outlook: notified, and the run that triggers carries it over.
    s.graph.add("contacts", {"givenName": "Zed", "surname": "Ray", "displayName": "Zed Ray",
                             "emailAddresses": [{"address": "zed@example.test"}]})
    await until("the contact on the platform", lambda: [
        x for x in s.platform.live("contact") if x.get("email") == "zed@example.test"])
    assert ("created", 202) in subs.delivered
    status = (await c.get(url, headers=auth)).json()["status"]
    assert status.get("errMessage") is None, status

    # A notification without the profile's clientState: 202, and nothing runs.
    before = (await c.get(url, headers=auth)).json()["status"].get("jobId")
    forged = {"value": [{**{"subscriptionId": sub["id"], "changeType": "created",
                            "resource": "Users/u/Contacts/x"}, "clientState": "guess"}]}
    r = await c.post(hook, json=forged)
    assert r.status_code == 202 and r.json()["accepted"] == 0 and r.json()["jobId"] is None
    assert (await c.get(url, headers=auth)).json()["status"].get("jobId") == before

    # The handshake, and refusals: not Graph's shape, an unknown profile.
    r = await c.post(hook, params={"validationToken": "Validation: abc <b>"})
    assert r.status_code == 200 and r.text == "Validation: abc <b>"
    assert r.headers["content-type"].startswith("text/plain")
    assert (await c.post(hook, content=b"{]")).status_code == 400
    assert (await c.post(hook, json={"value": 3})).status_code == 400
    assert (await c.post("/api/v1/sync/graph/notifications/nope", json={})).status_code \
        == 404

    # Less than a day left: renewed when the worker looks again (a changed profile is
    # looked at at once).
    soon = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    sub["expirationDateTime"] = soon
    r = await c.patch(url, headers=auth, json={"name": "outlook 2"})
    assert r.status_code == 200, r.text
    await until("the renewal", lambda: sub["expirationDateTime"] != soon)
    assert len(subs.subscriptions) == 2 and sub["id"] in subs.subscriptions
    renewed = datetime.fromisoformat(sub["expirationDateTime"].replace("Z", "+00:00"))
    assert renewed > datetime.now(UTC) + timedelta(hours=60)


async def test_lifecycle_notifications(setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth, pid = await notified_profile(s, "contacts")
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    hook = f"/api/v1/sync/graph/lifecycle/{pid}"
    done = await run_and_wait(c, url, auth, initial=True)
    assert done["status"].get("errMessage") is None, done["status"]
    subs = s.graph.subs
    [sub] = await until("the subscription", lambda: list(subs.subscriptions.values()))
    assert sub["lifecycleNotificationUrl"] == PUBLIC + hook

    def on_platform(email: str) -> Callable[[], Any]:
        return lambda: [x for x in s.platform.live("contact") if x.get("email") == email]

    async def job_id() -> str | None:
        return (await c.get(url, headers=auth)).json()["status"].get("jobId")

    # Forged (a guessed clientState, none, another profile's): 202, accepted 0. That
    # nothing follows is shown by a genuine notification handled after them: its
    # reauthorize is seen, theirs (and a run) are not.
    before = await job_id()
    forged = {"value": [
        {"subscriptionId": "forged-1", "lifecycleEvent": "reauthorizationRequired",
         "clientState": "guess", "tenantId": "t"},
        {"subscriptionId": sub["id"], "lifecycleEvent": "missed"},
        {"subscriptionId": sub["id"], "lifecycleEvent": "subscriptionRemoved",
         "clientState": sub["clientState"][:-1] + "x"}]}
    r = await c.post(hook, json=forged)
    assert r.status_code == 202 and r.json() == {"profileId": pid, "accepted": 0}

    # reauthorizationRequired: the hub reauthorizes the subscription on Graph.
    subs.lifecycle(sub["id"], "reauthorizationRequired")
    await until("the reauthorize call", lambda: subs.reauthorized)
    assert subs.reauthorized == [sub["id"]]
    assert ("reauthorizationRequired", 202) in subs.delivered
    assert await job_id() == before and list(subs.subscriptions) == [sub["id"]]

    # missed: a contact whose notification Graph lost still arrives, by the run the
    # missed notification asks for.
    subs.lose = True
    s.graph.add("contacts", {"givenName": "Mia", "displayName": "Mia Lost",
                             "emailAddresses": [{"address": "mia@example.test"}]})
    subs.lose = False
    assert subs.lost == 1
    subs.lifecycle(sub["id"], "missed")
    await until("the missed contact on the platform", on_platform("mia@example.test"))
    assert ("missed", 202) in subs.delivered

    # subscriptionRemoved: Graph dropped it; the hub subscribes again (its handshakes
    # passed) and runs. A contact made after that is notified on the new subscription.
    before = await job_id()
    subs.lifecycle(sub["id"], "subscriptionRemoved")
    [again] = await until("the new subscription", lambda: [
        x for x in subs.subscriptions.values() if x["id"] != sub["id"]])
    assert again["resource"] == "/me/contacts" and list(subs.subscriptions) == [again["id"]]
    assert again["lifecycleNotificationUrl"] == PUBLIC + hook
    assert again["clientState"] == sub["clientState"]
    rerun = await until_async("the run after the removal", job_id, lambda j: j != before)
    await wait_job(c, url, auth, rerun)
    notified = sum(1 for x in subs.delivered if x[0] == "created")
    s.graph.add("contacts", {"givenName": "Zed", "displayName": "Zed Ray",
                             "emailAddresses": [{"address": "zed@example.test"}]})
    await until("the contact on the platform", on_platform("zed@example.test"))
    assert sum(1 for x in subs.delivered if x == ("created", 202)) > notified
    status = (await c.get(url, headers=auth)).json()["status"]
    assert status.get("errMessage") is None, status

    # The lifecycle URL's handshake and refusals, as the notification URL's.
    r = await c.post(hook, params={"validationToken": "Validation: xyz"})
    assert r.status_code == 200 and r.text == "Validation: xyz"
    assert r.headers["content-type"].startswith("text/plain")
    assert (await c.post(hook, content=b"{]")).status_code == 400
    assert (await c.post("/api/v1/sync/graph/lifecycle/nope", json={})).status_code == 404


async def until_async(what: str, get: Callable[[], Awaitable[Any]],
                      ok: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not ok(got := await get()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return got


async def test_lifecycle_work_is_retried_when_graph_fails(setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth, pid = await notified_profile(s, "contacts")
    url = f"/api/v1/hubs/{hub_id}/syncProfiles/{pid}"
    done = await run_and_wait(c, url, auth, initial=True)
    assert done["status"].get("errMessage") is None, done["status"]
    subs, graph = s.graph.subs, s.graph
    [sub] = await until("the subscription", lambda: list(subs.subscriptions.values()))
    reauth = f"subscriptions/{sub['id']}/reauthorize"

    # reauthorizationRequired while reauthorize answers 503 twice: the third attempt
    # reaches Graph.
    graph.fail("POST", reauth, times=2, status=503)
    subs.lifecycle(sub["id"], "reauthorizationRequired")
    await until("the reauthorize call", lambda: subs.reauthorized)
    assert subs.reauthorized == [sub["id"]]
    assert graph.failed == [("POST", reauth, 503)] * 2
    assert ("reauthorizationRequired", 202) in subs.delivered

    # Throttled longer than a request waits out itself (three 429s in a row): the
    # lifecycle work waits Graph's Retry-After and tries again.
    graph.failed.clear()
    graph.fail("POST", reauth, times=4, status=429, retry_after="1")
    subs.lifecycle(sub["id"], "reauthorizationRequired")
    await until("the second reauthorize call", lambda: len(subs.reauthorized) == 2)
    assert graph.failed == [("POST", reauth, 429)] * 4

    # subscriptionRemoved while making a subscription fails once: made again.
    graph.failed.clear()
    graph.fail("POST", "subscriptions", times=1, status=503)
    subs.lifecycle(sub["id"], "subscriptionRemoved")
    [again] = await until("the new subscription", lambda: [
        x for x in subs.subscriptions.values() if x["id"] != sub["id"]])
    assert again["resource"] == "/me/contacts" and list(subs.subscriptions) == [again["id"]]
    assert graph.failed == [("POST", "subscriptions", 503)]
