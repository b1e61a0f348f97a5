"""Contacts filed under their company (``contCreateCompany``) on a real broker: an
Outlook contact of a company the portal has no account for makes that account on the
reference platform and is filed under it; a second contact of the company is filed
under the same account (no second one); an account the platform already has, by name,
is used, not duplicated; a re-run writes nothing; with the option off no account is
made."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.graph import FakeGraph
from tests.integration.graph_platform import GraphPlatform as Setup
from tests.integration.graph_platform import create_profile, graph_platform, writes
from tests.integration.test_sync_runs import run_and_wait


@pytest.fixture
async def setup(broker: Any) -> AsyncIterator[Setup]:
    async with graph_platform(broker) as s:
        yield s


def person(graph: FakeGraph, first: str, email: str, company: str | None) -> None:
    graph.add("contacts", {"givenName": first, "surname": "Doe", "companyName": company,
                           "emailAddresses": [{"address": email}]})


async def test_contacts_are_filed_under_one_account_per_company(setup: Setup) -> None:
    s, c = setup, setup.hub.client
    hub_id, auth = await s.hub.create_hub("companies")
    s.platform.add_user("ptok", email="pat@platform.test")
    initech = s.platform.add("account", name="Initech", domain="initech.test")
    person(s.graph, "Ann", "ann@globex.test", "Globex")
    person(s.graph, "Ian", "ian@initech.test", "  initech ")
    person(s.graph, "Nia", "nia@gmail.com", None)

    url = await create_profile(s, hub_id, auth, "contacts", "BOTH", ["accounts_by_domain"])
    r = await c.put(url + "/syncSettings", headers=auth, json={"contCreateCompany": True})
    assert r.status_code == 200 and r.json()["contCreateCompany"] is True, r.text
    r = await c.get(url, headers=auth)
    assert r.json()["modules"]["contacts"]["options"]["createCompany"] is True

    done = await run_and_wait(c, url, auth, initial=True, timeout=180.0)
    assert done["status"].get("errMessage") is None, done["status"]
    accounts = {a["name"]: a for a in s.platform.live("account")}
    assert set(accounts) == {"Globex", "Initech"}
    globex = accounts["Globex"]
    assert globex["domain"] == "globex.test"
    people = {p["firstName"]: p for p in s.platform.live("contact")}
    assert people["Ann"]["accountId"] == globex["id"]
    assert people["Ian"]["accountId"] == initech["id"]  # found by name, not made
    assert people["Nia"].get("accountId") is None  # no company: not filed
    assert done["status"]["modules"]["contacts"]["companies"] == {"found": 1, "created": 1}

    # A second contact of the same company: filed under the same account.
    person(s.graph, "Bob", "bob@globex.test", "GLOBEX")
    done = await run_and_wait(c, url, auth, timeout=180.0)
    assert done["status"].get("errMessage") is None, done["status"]
    assert len(s.platform.live("account")) == 2
    people = {p["firstName"]: p for p in s.platform.live("contact")}
    assert people["Bob"]["accountId"] == globex["id"]
    assert done["status"]["modules"]["contacts"]["companies"] == {"found": 0, "created": 0}

    # A re-run reading everything again writes nothing anywhere.
    before, contacts = len(writes(s.platform)), len(s.graph.live("contacts"))
    done = await run_and_wait(c, url, auth, initial=True, timeout=180.0)
    assert done["status"]["modules"]["contacts"]["created"] == 0, done["status"]
    assert len(writes(s.platform)) == before and len(s.graph.live("contacts")) == contacts

    # With the option off, a contact of a new company is synced without an account.
    r = await c.put(url + "/syncSettings", headers=auth, json={"contCreateCompany": False})
    assert r.status_code == 200 and r.json()["contCreateCompany"] is False, r.text
    person(s.graph, "Uma", "uma@umbrella.test", "Umbrella")
    done = await run_and_wait(c, url, auth, timeout=180.0)
    assert done["status"].get("errMessage") is None, done["status"]
    people = {p["firstName"]: p for p in s.platform.live("contact")}
    assert people["Uma"]["companyName"] == "Umbrella"
    assert people["Uma"].get("accountId") is None
    assert "companies" not in done["status"]["modules"]["contacts"]
    assert {a["name"] for a in s.platform.live("account")} == {"Globex", "Initech"}
