"""Two-way sync end to end on a real broker, through the REST API and the `sync` worker,
with the real connector kinds against their fakes over HTTP on 127.0.0.1:

- a Microsoft 365 mailbox (`graph`, tests/fakes/graph.py) ⇄ the reference platform
  (`platform`, tests/fakes/platform.py): contacts, calendar and tasks two-way, e-mail
  logging into the platform;
- Syncro (`syncro`, tests/fakes/syncro.py) ⇄ the platform: accounts and contacts, a
  contact's account translated through the account pairs.

Each goes review → report → allowSync → run → converged → second run changes nothing →
edits flow both ways → deletes only where the direction allows. Schedules and
webhook-triggered runs extend this module (the fixtures and helpers below are meant to
be reused).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import RunningHub, make_settings
from tests.fakes.graph import FakeGraph
from tests.fakes.platform import FakePlatform
from tests.fakes.syncro import FakeSyncro
from tests.integration.test_sync_runs import run_and_wait

DAY_MS = 86_400_000
PLATFORM_CAPS = ["tasks", "events", "email", "opportunities", "accounts_by_domain",
                 "account_writes"]


@dataclass
class E2E:
    hub: RunningHub
    platform: FakePlatform
    graph: FakeGraph
    syncro: FakeSyncro
    hub_id: str
    auth: dict[str, str]

    @property
    def client(self) -> httpx.AsyncClient:
        return self.hub.client

    def portal(self, token: str) -> dict[str, Any]:
        return {"kind": "platform",
                "configuration": {"instanceUrl": self.platform.url,
                                  "capabilities": PLATFORM_CAPS},
                "credentials": {"accessToken": token}}

    async def create(self, body: dict[str, Any]) -> str:
        r = await self.client.post(f"/api/v1/hubs/{self.hub_id}/syncProfiles", json=body,
                                   headers=self.auth)
        assert r.status_code == 201, r.text
        return f"/api/v1/hubs/{self.hub_id}/syncProfiles/{r.json()['profileId']}"

    async def run(self, url: str, **run: Any) -> dict[str, Any]:
        """A run, finished well: its status."""
        done = await run_and_wait(self.client, url, self.auth, **run)
        status: dict[str, Any] = done["status"]
        assert status.get("errMessage") is None, status
        return status


@pytest.fixture
async def e2e(broker: Any) -> AsyncIterator[E2E]:
    platform = await FakePlatform(page_size=3).start()
    graph = FakeGraph(page_size=3)
    await graph.start()
    syncro = await FakeSyncro(per_page=3).start()
    settings = make_settings(broker, graph_api_url=graph.url,
                             syncro_api_url=syncro.api_url(), provider_timeout_s=5.0)
    hub = await RunningHub(settings, ["api", "sync"]).start()
    try:
        hub_id, auth = await hub.create_hub("e2e")
        yield E2E(hub, platform, graph, syncro, hub_id, auth)
    finally:
        await hub.stop()
        await syncro.stop()
        await graph.stop()
        await platform.stop()


def ops(status: dict[str, Any]) -> int:
    return sum(m["created"] + m["updated"] + m["deleted"]
               for m in status["modules"].values())


def by_email(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["email"].casefold(): r for r in records if r.get("email")}


def graph_contacts(graph: FakeGraph) -> dict[str, dict[str, Any]]:
    return {c["emailAddresses"][0]["address"].casefold(): c
            for c in graph.live("contacts") if c.get("emailAddresses")}


def when(ms: int) -> dict[str, str]:
    return {"dateTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)),
            "timeZone": "UTC"}


def mail(graph: FakeGraph, n: int, sender: str, to: list[str], at_ms: int) -> None:
    graph.add("messages", {
        "subject": f"mail {n}", "internetMessageId": f"<m{n}.{uuid.uuid4().hex}@x.test>",
        "receivedDateTime": when(at_ms)["dateTime"] + "Z",
        "sentDateTime": when(at_ms - 1000)["dateTime"] + "Z",
        "body": {"contentType": "text", "content": f"body {n}"},
        "from": {"emailAddress": {"address": sender}},
        "toRecipients": [{"emailAddress": {"address": a}} for a in to]})


async def test_a_mailbox_and_the_platform_all_four_modules(e2e: E2E) -> None:
    p, g = e2e.platform, e2e.graph
    p.add_user("ptok", user_id="u1", email="pat@platform.test")
    me = g.me["mail"]
    now = int(time.time() * 1000)
    ada = p.add("contact", firstName="Ada", lastName="Lovelace", email="ada@example.test",
                phone="1")
    p.add("contact", firstName="Sam", lastName="Smith", email="sam@example.test",
          title="CEO")
    deal = p.add("opportunity", name="Big deal", contactIds=[ada["id"]])
    p.add("opportunity", name="Old deal", contactIds=[ada["id"]], closed=True)
    p.add("task", title="Call Ada", notes="about the deal")
    p.add("event", subject="Kickoff", startAt=now + DAY_MS, endAt=now + DAY_MS + 3_600_000)
    g.add("contacts", {"givenName": "Sam", "surname": "Smith", "displayName": "Sam Smith",
                       "emailAddresses": [{"address": "SAM@example.test"}]})
    g.add("contacts", {"givenName": "Mia", "surname": "Wong", "displayName": "Mia Wong",
                       "emailAddresses": [{"address": "mia@example.test"}]})
    g.add("tasks", {"title": "Buy milk"})
    g.add("events", {"subject": "Lunch", "start": when(now + 2 * DAY_MS),
                     "end": when(now + 2 * DAY_MS + 3_600_000)})
    mail(g, 1, "ada@example.test", [me], now - 60_000)
    mail(g, 2, me, ["mia@example.test"], now - 50_000)  # Mia: a contact of this run's
    mail(g, 3, "promo@news.spam.test", [me], now - 40_000)  # a skipped domain
    mail(g, 4, "stranger@nowhere.test", [me], now - 30_000)  # nobody's: not logged

    url = await e2e.create({
        "name": "Outlook ⇄ CRM",
        "portal": e2e.portal("ptok"),
        "mailbox": {"kind": "graph", "configuration": {},
                    "credentials": {"accessToken": g.token}},
        "modules": {
            "contacts": {"options": {"direction": "BOTH"}},
            # A meeting cancelled in Outlook is cancelled in the CRM too.
            "calendar": {"options": {"direction": "BOTH", "mailboxDeletes": True}},
            "tasks": {"options": {"direction": "BOTH"}},
            "email": {"options": {"direction": "TO_PORTAL",
                                  "email": {"skipDomains": ["spam.test"]}}}}})

    # Review: planned and reported, nothing written on either side.
    before = (copy.deepcopy(p.records), copy.deepcopy(g.items))
    status = await e2e.run(url, initial="true")
    assert all(m["reviewed"] for m in status["modules"].values()), status
    assert (p.records, g.items) == before
    r = await e2e.client.get(url + "/report", headers=e2e.auth)
    assert r.status_code == 200, r.text
    reports = r.json()["reports"]
    assert reports["contacts"]["wouldCreate"] == {"portal": 1, "mailbox": 1}
    assert reports["contacts"]["wouldMatch"] == 1
    for module in ("calendar", "tasks"):
        assert reports[module]["wouldCreate"] == {"portal": 1, "mailbox": 1}, module
    # Mia is not on the platform yet: only Ada's mail would be logged.
    assert reports["email"]["wouldCreate"] == {"portal": 1, "mailbox": 0}
    assert reports["email"]["samples"][0]["label"] == "mail 1"

    r = await e2e.client.put(url + "/allowSync", json={}, headers=e2e.auth)
    assert r.status_code == 200 and r.json()["needReview"] == [], r.text
    status = await e2e.run(url)
    progress = status["progress"]
    assert progress["done"] == progress["total"] == ops(status) > 0, status
    assert progress["etaMs"] == 0 and progress["recordsPerSecond"] > 0

    # Converged: the same people, meetings and to-dos on both sides.
    people = by_email(p.live("contact"))
    assert set(people) == set(graph_contacts(g)) == {
        "ada@example.test", "sam@example.test", "mia@example.test"}
    assert people["sam@example.test"]["title"] == "CEO"
    assert graph_contacts(g)["sam@example.test"]["jobTitle"] == "CEO"
    assert graph_contacts(g)["ada@example.test"]["businessPhones"] == ["1"]
    assert {e["subject"] for e in p.live("event")} == {e["subject"] for e in g.live(
        "events")} == {"Kickoff", "Lunch"}
    # The mailbox's own UID and organizer came back with the created meeting.
    kickoff = next(e for e in p.live("event") if e["subject"] == "Kickoff")
    g_kickoff = next(e for e in g.live("events") if e["subject"] == "Kickoff")
    assert kickoff["icalUid"] == g_kickoff["iCalUId"]
    assert {t["title"] for t in p.live("task")} == {t["title"] for t in g.live("tasks")} \
        == {"Call Ada", "Buy milk"}
    # E-mail logged once each, matched to its contacts and Ada's open deal.
    logged = {e["subject"]: e for e in p.live("email")}
    assert set(logged) == {"mail 1", "mail 2"}, logged
    assert logged["mail 1"]["contactIds"] == [ada["id"]]
    assert logged["mail 1"]["opportunityIds"] == [deal["id"]]
    assert logged["mail 2"]["contactIds"] == [people["mia@example.test"]["id"]]
    assert logged["mail 2"]["direction"] == "out"

    # A second run changes nothing, anywhere.
    before = (copy.deepcopy(p.records), copy.deepcopy(g.items))
    status = await e2e.run(url)
    assert ops(status) == 0, status
    assert (p.records, g.items) == before

    # Edits on each side flow to the other.
    p.edit("contact", ada["id"], phone="2")
    mia_g = graph_contacts(g)["mia@example.test"]
    g.edit("contacts", mia_g["id"], jobTitle="CTO")
    buy = next(t for t in g.live("tasks") if t["title"] == "Buy milk")
    g.edit("tasks", buy["id"], status="completed")
    mail(g, 5, "sam@example.test", [me], int(time.time() * 1000))
    status = await e2e.run(url)
    assert graph_contacts(g)["ada@example.test"]["businessPhones"] == ["2"]
    assert by_email(p.live("contact"))["mia@example.test"]["title"] == "CTO"
    assert next(t for t in p.live("task") if t["title"] == "Buy milk")["status"] == "done"
    assert {e["subject"] for e in p.live("email")} == {"mail 1", "mail 2", "mail 5"}

    # Deletes: the portal's reach the mailbox; the mailbox's contacts do not reach the
    # portal (mailboxDeletes is off there), and the survivor is not recreated; its
    # meetings do (on for the calendar: Graph's deletes are read from the delta links
    # the last run kept).
    sam_p = by_email(p.live("contact"))["sam@example.test"]
    p.remove("contact", sam_p["id"])
    g.remove("contacts", graph_contacts(g)["mia@example.test"]["id"])
    g.remove("events", next(e for e in g.live("events") if e["subject"] == "Lunch")["id"])
    status = await e2e.run(url)
    assert set(graph_contacts(g)) == {"ada@example.test"}
    assert set(by_email(p.live("contact"))) == {"ada@example.test", "mia@example.test"}
    assert {e["subject"] for e in p.live("event")} == {"Kickoff"}
    assert status["modules"]["calendar"]["deleted"] == 1, status

    # A replay from the beginning logs nothing twice and recreates nothing.
    status = await e2e.run(url, dtStartUTC=0)
    assert ops(status) == 0, status
    assert len(p.live("email")) == 3
    assert set(graph_contacts(g)) == {"ada@example.test"}


async def test_syncro_and_the_platform_accounts_and_contacts(e2e: E2E) -> None:
    p, s = e2e.platform, e2e.syncro
    p.add_user("ptok2", user_id="u2", email="pat@platform.test")
    account = s.add_account("e2e" + uuid.uuid4().hex[:6], "stok")
    unfiled = s.add_customer(account, business_name="Unfiled", email=None)
    acme = p.add("account", owner_id="u2", name="Acme", domain="acme.test", phone="1")
    ada = p.add("contact", owner_id="u2", firstName="Ada", lastName="Lovelace",
                email="ada@acme.test", accountId=acme["id"])
    s_acme = s.add_customer(account, business_name="ACME Corp", email="boss@acme.test",
                            address="1 Road")
    globex = s.add_customer(account, business_name="Globex", email="info@globex.test")
    s.add_customer(account, business_name="Initech", email=None)  # no domain: by name
    account.contacts.append({"id": 9001, "name": "Bob Byte", "email": "bob@globex.test",
                             "phone": None, "mobile": None, "title": "CTO",
                             "customer_id": globex["id"],
                             "created_at": globex["created_at"],
                             "updated_at": globex["updated_at"]})

    url = await e2e.create({
        "name": "Syncro ⇄ CRM",
        "portal": e2e.portal("ptok2"),
        "mailbox": {"kind": "syncro",
                    "configuration": {"subdomain": account.subdomain,
                                      "defaultCustomerId": unfiled["id"]},
                    "credentials": {"apiToken": "stok"}},
        "modules": {"accounts": {"options": {"direction": "BOTH"}},
                    "contacts": {"options": {"direction": "BOTH"}}}})

    before = (copy.deepcopy(p.records), copy.deepcopy(account.customers),
              copy.deepcopy(account.contacts))
    status = await e2e.run(url, initial=True)
    assert status["modules"]["accounts"]["reviewed"], status
    assert (p.records, account.customers, account.contacts) == before
    reports = (await e2e.client.get(url + "/report", headers=e2e.auth)).json()["reports"]
    # Acme matched by domain; Globex, Initech and Unfiled would reach the platform.
    assert reports["accounts"]["wouldMatch"] == 1
    assert reports["accounts"]["wouldCreate"] == {"portal": 3, "mailbox": 0}
    assert reports["contacts"]["wouldCreate"] == {"portal": 1, "mailbox": 1}

    r = await e2e.client.put(url + "/allowSync", headers=e2e.auth)
    assert r.status_code == 200, r.text
    status = await e2e.run(url)
    assert status["modules"]["accounts"]["matched"] == 1, status

    mine = [a for a in p.live("account") if a.get("ownerId") == "u2"]
    names = {a["name"]: a for a in mine}
    assert set(names) == {"Acme", "Globex", "Initech", "Unfiled"}
    assert len([c for c in account.customers if "acme" in c["business_name"].casefold()]
               ) == 1
    assert names["Acme"]["address"] == "1 Road"  # the gap filled from Syncro
    # References: each side's contact under its own id of the paired account.
    people = by_email([c for c in p.live("contact") if c.get("ownerId") == "u2"])
    assert set(people) == {"ada@acme.test", "bob@globex.test"}
    assert people["bob@globex.test"]["accountId"] == names["Globex"]["id"]
    assert people["bob@globex.test"]["title"] == "CTO"
    s_people = {c["email"]: c for c in account.contacts}
    assert s_people["ada@acme.test"]["customer_id"] == s_acme["id"]
    assert s_people["ada@acme.test"]["name"] == "Ada Lovelace"

    before = (copy.deepcopy(p.records), copy.deepcopy(account.customers),
              copy.deepcopy(account.contacts))
    status = await e2e.run(url)
    assert ops(status) == 0, status
    assert (p.records, account.customers, account.contacts) == before

    # Bob moves to Acme in Syncro; Ada's title changes on the platform.
    bob = next(c for c in account.contacts if c["email"] == "bob@globex.test")
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2))
    bob.update(customer_id=s_acme["id"], updated_at=later + ".000-00:00")
    p.edit("contact", ada["id"], title="Countess")
    status = await e2e.run(url)
    people = by_email([c for c in p.live("contact") if c.get("ownerId") == "u2"])
    assert people["bob@globex.test"]["accountId"] == acme["id"]
    assert next(c for c in account.contacts if c["email"] == "ada@acme.test"
                )["title"] == "Countess"

    # A delete on the platform reaches Syncro (BOTH, portalDeletes on by default); a
    # customer disabled in Syncro does not reach the platform (mailboxDeletes is off).
    p.remove("contact", ada["id"])
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3))
    globex.update(disabled=True, updated_at=later + ".000-00:00")
    status = await e2e.run(url)
    assert [c["email"] for c in account.contacts] == ["bob@globex.test"]
    assert "Globex" in {a["name"] for a in p.live("account")}
    status = await e2e.run(url)
    assert ops(status) == 0, status
    assert "Globex" in {a["name"] for a in p.live("account")}


async def test_connector_configuration_is_checked_when_a_profile_is_made(e2e: E2E) -> None:
    base = {"name": "x", "modules": {"contacts": {}},
            "mailbox": {"kind": "graph", "credentials": {"accessToken": "t"}}}
    for portal, field in (
            ({"kind": "platform", "configuration": {}, "credentials": {"apiToken": "t"}},
             "portal.configuration.instanceUrl"),
            ({"kind": "platform", "configuration": {"instanceUrl": "gopher://x"},
              "credentials": {"apiToken": "t"}}, "portal.configuration.instanceUrl"),
            ({"kind": "platform", "configuration": {"instanceUrl": e2e.platform.url}},
             "portal.credentials.accessToken"),
            ({"kind": "syncro", "configuration": {"subdomain": "a/b"},
              "credentials": {"apiToken": "t"}}, "portal.configuration.subdomain")):
        r = await e2e.client.post(f"/api/v1/hubs/{e2e.hub_id}/syncProfiles",
                                  json={**base, "portal": portal}, headers=e2e.auth)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["field"] == field, r.text


async def test_email_logging_makes_leads_and_companies_for_unknown_senders(e2e: E2E) -> None:
    p, g = e2e.platform, e2e.graph
    p.add_user("ptok3", user_id="u3", email="pat@platform.test")
    me = g.me["mail"]
    now = int(time.time() * 1000)
    initech = p.add("account", owner_id="u3", name="Initech", domain="initech.test")
    mail(g, 1, "zed@initech.test", [me], now - 40_000)
    mail(g, 2, "kim@globex.test", [me, "lee@globex.test"], now - 30_000)
    mail(g, 3, "joe@gmail.com", [me], now - 20_000)
    mail(g, 4, "ads@mail.spam.test", [me], now - 10_000)
    url = await e2e.create({
        "name": "Outlook → CRM, e-mail only",
        "portal": e2e.portal("ptok3"),
        "mailbox": {"kind": "graph", "credentials": {"accessToken": g.token}},
        "modules": {"email": {"needReview": False, "options": {"email": {
            "skipDomains": ["spam.test"], "createLeads": True, "createCompany": True}}}}})

    status = await e2e.run(url, initial=True)
    assert status["modules"]["email"]["created"] == 3, status
    people = by_email([c for c in p.live("contact") if c.get("ownerId") == "u3"])
    assert set(people) == {"zed@initech.test", "kim@globex.test", "lee@globex.test",
                           "joe@gmail.com"}
    assert all(c["tags"] == ["lead"] for c in people.values())
    accounts = {a["domain"]: a for a in p.live("account") if a.get("ownerId") == "u3"}
    # Found by domain, or made once per domain; none for a public mail domain.
    assert set(accounts) == {"initech.test", "globex.test"}
    assert people["zed@initech.test"]["accountId"] == initech["id"]
    assert people["kim@globex.test"]["accountId"] == people["lee@globex.test"][
        "accountId"] == accounts["globex.test"]["id"]
    assert "accountId" not in people["joe@gmail.com"]
    logged = {e["subject"]: e for e in p.live("email")}
    assert set(logged) == {"mail 1", "mail 2", "mail 3"}
    assert set(logged["mail 2"]["contactIds"]) == {people["kim@globex.test"]["id"],
                                                   people["lee@globex.test"]["id"]}
    assert logged["mail 2"]["accountId"] == accounts["globex.test"]["id"]

    before = copy.deepcopy(p.records)
    status = await e2e.run(url, initial=True)
    assert ops(status) == 0, status
    assert p.records == before
