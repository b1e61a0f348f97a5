"""Records deleted for good in Syncro (no tombstone, a 404 on their GET, absent from its
listings) found by the check of paired ids, end to end on a real broker: the REST API,
the `sync` worker, the real `syncro` and `platform` kinds against their fakes over HTTP.

A hard-deleted Syncro contact is deleted on the platform only where the direction (and
``mailboxDeletes`` when Syncro is the mailbox) allows; a 5xx or a 429 is never taken as
a delete; an incremental run checks only once the interval has passed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.platform import FakePlatform
from tests.fakes.syncro import Account, FakeSyncro
from tests.integration.test_sync_e2e import PLATFORM_CAPS, by_email
from tests.integration.test_sync_runs import run_and_wait

CONTACT_GET = r"/contacts/\d+"


@dataclass
class Env:
    hub: RunningHub
    platform: FakePlatform
    syncro: FakeSyncro
    hub_id: str
    auth: dict[str, str]


@dataclass
class Profile:
    url: str
    account: Account
    owner: str  # the platform user whose records the profile syncs
    ada: dict[str, Any]  # Syncro's contact
    bob: dict[str, Any]


async def _env(broker: Any, **settings: Any) -> AsyncIterator[Env]:
    platform = await FakePlatform(page_size=3).start()
    syncro = await FakeSyncro(per_page=3).start()
    hub = await RunningHub(make_settings(
        broker, syncro_api_url=syncro.api_url(), provider_timeout_s=5.0, **settings),
        ["api", "sync"]).start()
    try:
        hub_id, auth = await hub.create_hub("vanished")
        yield Env(hub, platform, syncro, hub_id, auth)
    finally:
        await hub.stop()
        await syncro.stop()
        await platform.stop()


@pytest.fixture(scope="module")
async def every_run(broker: Any) -> AsyncIterator[Env]:
    """A hub whose runs all check Syncro's paired ids (interval 0)."""
    async for env in _env(broker, sync_syncro_check_interval_s=0.0):
        yield env


@pytest.fixture
async def daily(broker: Any) -> AsyncIterator[Env]:
    """A hub with the default interval: a day."""
    async for env in _env(broker):
        yield env


async def run(env: Env, url: str, **body: Any) -> dict[str, Any]:
    """A run that finished well: its status."""
    done = await run_and_wait(env.hub.client, url, env.auth, timeout=120.0, **body)
    status: dict[str, Any] = done["status"]
    assert status.get("errMessage") is None, status
    return status


async def paired_profile(env: Env, syncro_side: str, direction: str,
                         mailbox_deletes: bool = False) -> Profile:
    """Syncro (as `syncro_side`) ⇄ the platform, accounts and contacts in `direction`,
    after an initial run that paired Syncro's Acme, Ada and Bob with the platform's."""
    n = uuid.uuid4().hex[:8]
    owner, token = f"u{n}", f"ptok{n}"
    p, s = env.platform, env.syncro
    p.add_user(token, user_id=owner, email=f"pat{n}@platform.test")
    account = s.add_account("van" + n, "stok" + n)
    # Its own domain: the reference platform refuses a second live contact of an e-mail.
    domain = f"acme{n}.test"
    acme = s.add_customer(account, business_name="Acme", email="boss@" + domain)
    people = []
    for name in ("Ada Lovelace", "Bob Byte"):
        person = {"id": next(s._ids), "name": name,
                  "email": name.split()[0].lower() + "@" + domain, "phone": None,
                  "mobile": None, "title": None, "customer_id": acme["id"],
                  "created_at": acme["created_at"], "updated_at": acme["updated_at"]}
        account.contacts.append(person)
        people.append(person)
    platform = {"kind": "platform",
                "configuration": {"instanceUrl": p.url, "capabilities": PLATFORM_CAPS},
                "credentials": {"accessToken": token}}
    syncro = {"kind": "syncro",
              "configuration": {"subdomain": account.subdomain,
                                "defaultCustomerId": acme["id"]},
              "credentials": {"apiToken": "stok" + n}}
    options = {"direction": direction, "mailboxDeletes": mailbox_deletes}
    modules = {m: {"options": options, "needReview": False}
               for m in ("accounts", "contacts")}
    sides = ({"portal": syncro, "mailbox": platform} if syncro_side == "portal"
             else {"portal": platform, "mailbox": syncro})
    r = await env.hub.client.post(f"/api/v1/hubs/{env.hub_id}/syncProfiles", json={
        "name": f"Syncro as {syncro_side}, {direction}", **sides, "modules": modules},
        headers=env.auth)
    assert r.status_code == 201, r.text
    url = f"/api/v1/hubs/{env.hub_id}/syncProfiles/{r.json()['profileId']}"
    if (direction, syncro_side) in {("TO_PORTAL", "portal"), ("FROM_PORTAL", "mailbox")}:
        # Syncro's records do not flow to the platform: the platform has them already,
        # and the first run pairs them by e-mail.
        acct = p.add("account", owner_id=owner, name="Acme", domain=domain)
        for person in people:
            first, last = person["name"].split()
            p.add("contact", owner_id=owner, firstName=first, lastName=last,
                  email=person["email"], accountId=acct["id"])
    await run(env, url, initial=True)
    assert contacts(env, owner) == {"ada", "bob"}
    return Profile(url, account, owner, people[0], people[1])


def contacts(env: Env, owner: str) -> set[str]:
    """The live platform contacts of `owner`, by their e-mail's name ("ada", "bob")."""
    mine = by_email([c for c in env.platform.live("contact") if c.get("ownerId") == owner])
    return {email.split("@")[0] for email in mine}


def sweeps(account: Account) -> int:
    """The requests of the check's listing sweeps so far."""
    return sum(1 for method, _, query in account.calls
               if method == "GET" and query.get("sort") == "id ASC")


def gets(account: Account, record: dict[str, Any]) -> int:
    return account.calls.count(("GET", f"/contacts/{record['id']}", {}))


@pytest.mark.parametrize(("syncro_side", "direction", "mailbox_deletes", "propagates"), [
    ("portal", "BOTH", False, True),
    ("portal", "FROM_PORTAL", False, True),  # portal → mailbox: Syncro's deletes flow
    ("portal", "TO_PORTAL", False, False),  # mailbox → portal only
    ("mailbox", "TO_PORTAL", True, True),  # Syncro as the mailbox, mailboxDeletes on
    ("mailbox", "BOTH", False, False),  # mailboxDeletes off (the default)
])
async def test_a_contact_deleted_for_good_in_syncro_is_deleted_where_the_direction_allows(
        every_run: Env, syncro_side: str, direction: str, mailbox_deletes: bool,
        propagates: bool) -> None:
    env = every_run
    prof = await paired_profile(env, syncro_side, direction, mailbox_deletes)
    env.syncro.hard_delete(prof.account, prof.ada)
    status = await run(env, prof.url)
    assert gets(prof.account, prof.ada) >= 1  # asked: the sweep did not list it
    left = contacts(env, prof.owner)
    assert ("ada" not in left) == propagates, left
    assert "bob" in left  # listed by the sweep: never in doubt
    assert status["modules"]["contacts"]["deleted"] == (1 if propagates else 0), status

    # Once handled, it is no longer checked (pair gone, or a tombstone), nor recreated
    # in Syncro; the next run changes nothing.
    before = gets(prof.account, prof.ada)
    status = await run(env, prof.url)
    assert sum(m["created"] + m["updated"] + m["deleted"]
               for m in status["modules"].values()) == 0, status
    assert gets(prof.account, prof.ada) == before
    assert [c["name"] for c in prof.account.contacts] == ["Bob Byte"]
    assert ("ada" not in contacts(env, prof.owner)) == propagates


async def test_a_transient_error_is_never_taken_as_a_delete(every_run: Env) -> None:
    env, s = every_run, every_run.syncro
    prof = await paired_profile(env, "portal", "BOTH")
    s.hard_delete(prof.account, prof.ada)
    try:
        # Syncro fails every GET of a contact: no verdict, the run still succeeds.
        s.fail_path("GET", CONTACT_GET, 503)
        await run(env, prof.url)
        assert gets(prof.account, prof.ada) == 1
        assert "ada" in contacts(env, prof.owner)
        # A 429 is waited out (twice here, Retry-After 1 s), then Syncro's 404 decides.
        s.fail_path("GET", CONTACT_GET, 429, times=2)
        status = await run(env, prof.url)
        assert gets(prof.account, prof.ada) == 4  # the 503, two 429s, the 404
    finally:
        s.fail_path("GET", CONTACT_GET, 503, times=0)
    assert "ada" not in contacts(env, prof.owner)
    assert status["modules"]["contacts"]["deleted"] == 1, status


async def test_incremental_runs_check_once_a_day_initial_runs_always(daily: Env) -> None:
    env = daily
    prof = await paired_profile(env, "portal", "BOTH")
    # The first run checked before anything was paired: nothing to ask, the check done.
    assert sweeps(prof.account) == 0
    env.syncro.hard_delete(prof.account, prof.ada)
    await run(env, prof.url)  # within the day: no check, the delete is not seen yet
    assert sweeps(prof.account) == 0 and gets(prof.account, prof.ada) == 0
    assert "ada" in contacts(env, prof.owner)
    await run(env, prof.url, initial=True)
    # Customers and contacts swept (one page each: the account is small), Ada asked.
    assert sweeps(prof.account) == 2 and gets(prof.account, prof.ada) == 1
    assert "ada" not in contacts(env, prof.owner)
