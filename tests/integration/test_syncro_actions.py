"""Syncro's modules through the hub's REST API and CLI, against the loopback Syncro:
every search parameter reaches Syncro as its own query parameter, customers, tickets and
leads make full round trips, listings follow pages up to a limit, creates happen once,
Syncro's refusals come back in our error shape, an unreachable Syncro is a 503, another
hub's integration is a 404, and the raw call never lets the token leave the account's
own API base."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from switchboard.brokers import free_port
from tests.conftest import RunningHub
from tests.integration.test_syncro import Env, Tenant, env, tenant

__all__ = ["env"]  # the module's own hub and fake (a module-scoped fixture)


def base(t: Tenant) -> str:
    return f"/api/v1/integrations/{t.integration['integrationId']}/syncro"


def queries(t: Tenant, path: str) -> list[dict[str, str]]:
    """The query of every request Syncro got at `path`, in order."""
    return [q for method, p, q in t.account.calls if method == "GET" and p == path]


def error(r: Any) -> dict[str, Any]:
    [err] = r.json()["errors"]
    assert r.json()["status"] == r.status_code
    return err  # type: ignore[no-any-return]


# ---- searches ----------------------------------------------------------------------------


async def test_every_customer_search_parameter_reaches_syncro(env: Env) -> None:
    t = await tenant(env)
    c = env.hub.client
    r = await c.get(f"{base(t)}/customers", headers=t.auth, params={
        "sort": "lastname", "order": "desc", "query": "ada", "firstname": "Ada",
        "lastname": "Lovelace", "business_name": "Engines", "id": "12", "id_not": "13",
        "email": "ada@example.test", "include_disabled": "true", "limit": "5"})
    assert r.status_code == 200, r.text
    assert queries(t, "/customers")[-1] == {
        "sort": "lastname DESC", "query": "ada", "firstname": "Ada", "lastname": "Lovelace",
        "business_name": "Engines", "id": "12", "id_not": "13", "email": "ada@example.test",
        "include_disabled": "true"}  # limit is ours: it stops the paging
    # The filters apply at Syncro.
    ada = env.syncro.add_customer(t.account, firstname="Ada", lastname="Lovelace",
                                  business_name="Analytical Engines", email="ada@example.test")
    env.syncro.add_customer(t.account, firstname="Charles", lastname="Babbage",
                            business_name="Difference Engines")
    gone = env.syncro.add_customer(t.account, firstname="Old", lastname="Lovelace",
                                   disabled=True)
    r = await c.get(f"{base(t)}/customers", headers=t.auth, params={"lastname": "lovelace"})
    assert [x["id"] for x in r.json()["customers"]] == [ada["id"]]
    assert r.json()["count"] == 1 and r.json()["more"] is False
    r = await c.get(f"{base(t)}/customers", headers=t.auth,
                    params={"lastname": "lovelace", "include_disabled": "yes"})
    assert [x["id"] for x in r.json()["customers"]] == [ada["id"], gone["id"]]
    r = await c.get(f"{base(t)}/customers", headers=t.auth,
                    params={"query": "engines", "sort": "firstname", "order": "asc"})
    assert [x["firstname"] for x in r.json()["customers"]] == ["Ada", "Charles"]
    r = await c.get(f"{base(t)}/customers", headers=t.auth,
                    params={"query": "engines", "id_not": str(ada["id"])})
    assert [x["firstname"] for x in r.json()["customers"]] == ["Charles"]


async def test_every_ticket_search_parameter_reaches_syncro(env: Env) -> None:
    t = await tenant(env)
    c = env.hub.client
    params = {"customer_id": "4", "contact_id": "5", "number": "1001",
              "resolved_after": "2026-11-01", "created_after": "2026-10-01T08:00:00Z",
              "since_updated_at": "2026-11-15", "status": "Not Closed", "query": "printer",
              "user_id": "7", "mine": "1", "ticket_search_id": "31"}
    r = await c.get(f"{base(t)}/tickets", headers=t.auth, params={**params, "limit": "1"})
    assert r.status_code == 200, r.text
    assert queries(t, "/tickets")[-1] == {**params, "mine": "true"}
    customer = env.syncro.add_customer(t.account)
    for subject, status, user in (("Printer jams", "New", 7), ("Printer ink", "Resolved", 7),
                                  ("Mail down", "New", 8)):
        r = await c.post(f"{base(t)}/tickets", headers=t.auth, json={
            "customer_id": customer["id"], "subject": subject, "status": status,
            "user_id": user})
        assert r.status_code == 201, r.text
    r = await c.get(f"{base(t)}/tickets", headers=t.auth,
                    params={"status": "Not Closed", "mine": "true"})
    assert [x["subject"] for x in r.json()["tickets"]] == ["Printer jams"]
    r = await c.get(f"{base(t)}/tickets", headers=t.auth, params={"query": "printer"})
    assert [x["subject"] for x in r.json()["tickets"]] == ["Printer jams", "Printer ink"]
    r = await c.get(f"{base(t)}/tickets", headers=t.auth,
                    params={"since_updated_at": "2999-01-01"})
    assert r.json()["tickets"] == []


async def test_every_lead_search_parameter_reaches_syncro(env: Env) -> None:
    t = await tenant(env)
    c = env.hub.client
    r = await c.get(f"{base(t)}/leads", headers=t.auth, params=[
        ("status_list", "New"), ("status_list", "Contacted"), ("query", "ada"),
        ("users", "7,8"), ("mailbox_ids", "3"), ("has_ticket", "false")])
    assert r.status_code == 200, r.text
    assert queries(t, "/leads")[-1] == {"status_list": "New,Contacted", "query": "ada",
                                        "users": "7,8", "mailbox_ids": "3",
                                        "has_ticket": "false"}
    for body in ({"first_name": "Ada", "status": "New", "user_id": 7, "mailbox_id": 3},
                 {"first_name": "Bob", "status": "Won", "user_id": 8, "ticket_id": 9}):
        assert (await c.post(f"{base(t)}/leads", headers=t.auth, json=body)).status_code == 201
    r = await c.get(f"{base(t)}/leads", headers=t.auth, params={"has_ticket": "true"})
    assert [x["first_name"] for x in r.json()["leads"]] == ["Bob"]
    r = await c.get(f"{base(t)}/leads", headers=t.auth, params={"status_list": "New,Lost"})
    assert [x["first_name"] for x in r.json()["leads"]] == ["Ada"]


async def test_listings_follow_pages_up_to_the_limit(env: Env) -> None:
    t = await tenant(env)
    made = [env.syncro.add_customer(t.account, firstname=f"c{i}") for i in range(60)]
    c = env.hub.client
    before = len(queries(t, "/customers"))
    r = await c.get(f"{base(t)}/customers", headers=t.auth, params={"limit": "30"})
    out = r.json()
    assert [x["id"] for x in out["customers"]] == [m["id"] for m in made[:30]]
    assert out["count"] == 30 and out["more"] is True
    asked = queries(t, "/customers")[before:]
    assert asked == [{}, {"page": "2"}]  # 25 a page: two pages, not three
    r = await c.get(f"{base(t)}/customers", headers=t.auth)
    out = r.json()
    assert [x["id"] for x in out["customers"]] == [m["id"] for m in made]
    assert out["count"] == 60 and out["more"] is False
    assert queries(t, "/customers")[-1] == {"page": "3"}
    r = await c.get(f"{base(t)}/customers", headers=t.auth, params={"limit": "60"})
    assert r.json()["more"] is False and r.json()["count"] == 60


# ---- round trips -------------------------------------------------------------------------

CUSTOMER = {
    "business_name": "Analytical Engines", "firstname": "Ada", "lastname": "Lovelace",
    "email": "ada@example.test", "phone": "+44 20 7946 0000", "mobile": "+44 7700 900000",
    "address": "12 St James's Square", "address_2": "Floor 2", "city": "London",
    "state": "London", "zip": "SW1Y 4JH", "notes": "Prefers SMS", "get_sms": True,
    "opt_out": False, "no_email": False, "get_billing": True, "get_marketing": False,
    "get_reports": True, "ref_customer_id": 41, "referred_by": "Charles Babbage",
    "tax_rate_id": 3, "notification_email": ["billing@example.test", "ada@example.test"],
    "invoice_cc_emails": "cc@example.test", "invoice_term_id": 2,
    "properties": {"Contract": "Gold", "Seats": 12},
}


async def test_customers_round_trip(env: Env) -> None:
    t = await tenant(env)
    c = env.hub.client
    r = await c.post(f"{base(t)}/customers", headers=t.auth, json=CUSTOMER)
    assert r.status_code == 201, r.text
    made = r.json()["customer"]
    [stored] = t.account.customers
    assert made["id"] == stored["id"]
    for name, value in CUSTOMER.items():
        if name == "notes":  # the marker of a create made once
            assert stored["notes"].startswith("Prefers SMS\n\n[sb:")
        elif name == "notification_email":
            assert stored[name] == "billing@example.test, ada@example.test"
        else:
            assert stored[name] == value, name
    r = await c.get(f"{base(t)}/customers/{made['id']}", headers=t.auth)
    assert r.status_code == 200 and r.json()["customer"]["city"] == "London"
    r = await c.put(f"{base(t)}/customers/{made['id']}", headers=t.auth,
                    json={"city": "Oxford", "get_marketing": True, "tax_rate_id": None})
    assert r.status_code == 200, r.text
    assert r.json()["customer"]["city"] == "Oxford"
    assert stored["get_marketing"] is True and stored["tax_rate_id"] is None
    assert ("PUT", f"/customers/{made['id']}", {}) in t.account.calls
    r = await c.delete(f"{base(t)}/customers/{made['id']}", headers=t.auth)
    assert r.status_code == 204 and t.account.customers == []
    r = await c.get(f"{base(t)}/customers/{made['id']}", headers=t.auth)
    assert r.status_code == 404 and error(r)["code"] == "provider_not_found"
    assert "Not found" in error(r)["description"]


async def test_tickets_round_trip_with_a_comment(env: Env) -> None:
    t = await tenant(env, defaultTicketStatus="In Progress", problemType="Remote Support",
                      commentHidden=True)
    customer = env.syncro.add_customer(t.account)
    c = env.hub.client
    r = await c.post(f"{base(t)}/tickets", headers=t.auth, json={
        "customer_id": customer["id"], "subject": "Printer jams", "due_date": "2026-12-10",
        "start_at": "2026-12-03T09:00:00Z", "end_at": "2026-12-03T10:00:00Z",
        "ticket_type_id": 5, "location_id": 6, "user_id": 7, "priority": "1 High",
        "properties": {"Device Type": "Printer"}, "asset_ids": [100, 101],
        "signature_name": "Ada", "signature_data": "data:image/png;base64,AAAA",
        "sla_id": 2, "contact_id": 9, "outtake_form_name": "Ada",
        "outtake_form_date": "2026-12-03", "outtake_form_data": "done",
        "comments_attributes": [{"subject": "Initial Issue", "body": "It jams",
                                 "hidden": False, "do_not_email": True}]})
    assert r.status_code == 201, r.text
    ticket = r.json()["ticket"]
    [stored] = t.account.tickets
    assert ticket["id"] == stored["id"]
    # The integration's defaults fill what the caller left out.
    assert stored["status"] == "In Progress" and stored["problem_type"] == "Remote Support"
    assert stored["asset_ids"] == [100, 101] and stored["sla_id"] == 2
    assert stored["priority"] == "1 High" and stored["due_date"] == "2026-12-10"
    assert stored["comments"][0]["body"].startswith("It jams\n\n[sb:")
    tid = ticket["id"]
    r = await c.put(f"{base(t)}/tickets/{tid}", headers=t.auth, json={
        "status": "Resolved", "priority": "3 Low", "sla_id": None,
        "comments_attributes": [{"subject": "Fixed", "body": "New fuser"}]})
    assert r.status_code == 200, r.text
    assert r.json()["ticket"]["status"] == "Resolved" and stored["sla_id"] is None
    assert [x["subject"] for x in stored["comments"]] == ["Initial Issue", "Fixed"]
    r = await c.post(f"{base(t)}/tickets/{tid}/comments", headers=t.auth,
                     json={"subject": "Update", "body": "Back tomorrow"})
    assert r.status_code == 201, r.text
    comment = r.json()["comment"]
    assert comment["id"] == stored["comments"][-1]["id"]
    assert comment["hidden"] is True  # commentHidden
    r = await c.post(f"{base(t)}/tickets/{tid}/comments", headers=t.auth,
                     json={"subject": "Update", "body": "Done", "hidden": False})
    assert r.json()["comment"]["hidden"] is False
    r = await c.get(f"{base(t)}/tickets/{tid}", headers=t.auth)
    assert len(r.json()["ticket"]["comments"]) == 4
    r = await c.delete(f"{base(t)}/tickets/{tid}", headers=t.auth)
    assert r.status_code == 204 and t.account.tickets == []
    r = await c.post(f"{base(t)}/tickets/{tid}/comments", headers=t.auth,
                     json={"subject": "Update", "body": "Anyone?"})
    assert r.status_code == 404 and error(r)["code"] == "provider_not_found"


LEAD = {
    "business_name": "Engines Ltd", "first_name": "Ada", "last_name": "Lovelace",
    "email": "ada@example.test", "phone": "+1 555 0100", "mobile": "+1 555 0101",
    "address": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701",
    "converted": False, "message_read": True, "disabled": False,
    "ticket_subject": "New office network", "ticket_description": "12 seats",
    "ticket_problem_type": "Network", "ticket_type_id": 4,
    "ticket_properties": {"Seats": 12}, "location_id": 2, "from_check_in": False,
    "customer_id": 11, "ticket_id": 12, "contact_id": 13, "hidden_notes": "Met at expo",
    "appointment_time": "2026-12-05T15:00:00-05:00", "appointment_type_id": 3,
    "status": "New", "user_id": 7, "mailbox_id": 1, "opportunity_start_date": "2026-12-01",
    "opportunity_amount_dollars": 4999.5, "likelihood": 60, "properties": {"Source": "Expo"},
    "customer_purchase_id": 14, "signature_date": "2026-12-02", "signature_name": "Ada",
    "signature_data": "data:image/png;base64,AAAA",
}


async def test_leads_round_trip_and_are_not_deleted(env: Env) -> None:
    t = await tenant(env)
    c = env.hub.client
    r = await c.post(f"{base(t)}/leads", headers=t.auth, json=LEAD)
    assert r.status_code == 201, r.text
    lead = r.json()["lead"]
    [stored] = t.account.leads
    for name, value in LEAD.items():
        if name == "hidden_notes":
            assert stored[name].startswith("Met at expo\n\n[sb:")
        else:
            assert stored[name] == value, name
    r = await c.put(f"{base(t)}/leads/{lead['id']}", headers=t.auth,
                    json={"status": "Won", "likelihood": 100, "converted": True})
    assert r.status_code == 200 and r.json()["lead"]["status"] == "Won"
    r = await c.get(f"{base(t)}/leads/{lead['id']}", headers=t.auth)
    assert r.json()["lead"]["likelihood"] == 100
    calls = len(t.account.calls)
    r = await c.delete(f"{base(t)}/leads/{lead['id']}", headers=t.auth)
    assert r.status_code == 405 and error(r)["code"] == "not_supported"
    assert "does not delete leads" in error(r)["description"]
    assert len(t.account.calls) == calls and len(t.account.leads) == 1


# ---- made once ---------------------------------------------------------------------------


async def test_a_retry_with_the_same_idempotency_key_creates_nothing_more(env: Env) -> None:
    t = await tenant(env)
    customer = env.syncro.add_customer(t.account)
    c = env.hub.client
    ticket_body = {"customer_id": customer["id"], "subject": "Printer jams"}
    for kind, body in (("customers", {"firstname": "Ada", "lastname": "Lovelace",
                                      "email": "ada@example.test"}),
                       ("tickets", ticket_body),
                       ("leads", {"first_name": "Ada", "email": "ada@example.test"})):
        key = {"Idempotency-Key": f"retry-{kind}"}
        first = await c.post(f"{base(t)}/{kind}", headers={**t.auth, **key}, json=body)
        again = await c.post(f"{base(t)}/{kind}", headers={**t.auth, **key}, json=body)
        assert first.status_code == again.status_code == 201, again.text
        one = kind[:-1]
        assert again.json()[one]["id"] == first.json()[one]["id"]
        assert "body" not in again.json()[one] or kind == "tickets"
    assert len(t.account.customers) == 2 and len(t.account.tickets) == 1
    assert len(t.account.leads) == 1
    # A ticket without comments carries its marker in a hidden first comment.
    [note] = t.account.tickets[0]["comments"]
    assert note["subject"] == "Initial Issue" and note["hidden"] is True
    # A different key is a different create.
    r = await c.post(f"{base(t)}/tickets", headers={**t.auth, "Idempotency-Key": "other"},
                     json=ticket_body)
    assert r.status_code == 201 and len(t.account.tickets) == 2
    # A comment retried with its key.
    tid = t.account.tickets[0]["id"]
    for _ in range(2):
        r = await c.post(f"{base(t)}/tickets/{tid}/comments",
                         headers={**t.auth, "Idempotency-Key": "c1"},
                         json={"subject": "Update", "body": "On it"})
        assert r.status_code == 201
    assert len(t.account.tickets[0]["comments"]) == 2
    r = await c.post(f"{base(t)}/customers", headers={**t.auth, "Idempotency-Key": "a b"},
                     json={"lastname": "X"})
    assert r.status_code == 400 and error(r)["field"] == "Idempotency-Key"


async def test_a_create_that_times_out_after_syncro_made_it_exists_once(env: Env) -> None:
    t = await tenant(env)
    customer = env.syncro.add_customer(t.account)
    env.syncro.timeout_after_create, env.syncro.hold_s = 1, 2.0  # the hub waits 1 s
    try:
        r = await env.hub.client.post(f"{base(t)}/tickets", headers=t.auth, json={
            "customer_id": customer["id"], "subject": "Printer jams"})
    finally:
        env.syncro.timeout_after_create = 0
    assert r.status_code == 201, r.text
    assert len(t.account.tickets) == 1 and r.json()["ticket"]["id"] == t.account.tickets[0]["id"]
    env.syncro.timeout_after_create = 1
    try:
        r = await env.hub.client.post(f"{base(t)}/customers", headers=t.auth, json={
            "lastname": "Lovelace", "email": "ada@example.test"})
    finally:
        env.syncro.timeout_after_create = 0
    assert r.status_code == 201, r.text
    assert [x["email"] for x in t.account.customers[1:]] == ["ada@example.test"]
    assert r.json()["customer"]["id"] == t.account.customers[1]["id"]
    assert "body" not in r.json()["customer"]


# ---- refusals ----------------------------------------------------------------------------


async def test_syncros_refusals_come_back_in_our_shape(env: Env) -> None:
    t = await tenant(env)
    customer = env.syncro.add_customer(t.account)
    c = env.hub.client
    r = await c.post(f"{base(t)}/customers", headers=t.auth, json={"firstname": "Ada"})
    assert r.status_code == 400 and error(r)["code"] == "provider_error"
    assert "Last name can't be blank" in error(r)["description"]
    assert "(HTTP 422)" in error(r)["description"]
    r = await c.post(f"{base(t)}/tickets", headers=t.auth, json={
        "customer_id": customer["id"], "subject": "x"})
    tid = r.json()["ticket"]["id"]
    r = await c.put(f"{base(t)}/tickets/{tid}", headers=t.auth, json={"customer_id": 999999})
    assert r.status_code == 400 and "Customer must exist" in error(r)["description"]
    r = await c.put(f"{base(t)}/customers/999999", headers=t.auth, json={"city": "x"})
    assert r.status_code == 404 and error(r)["code"] == "provider_not_found"
    r = await c.get(f"{base(t)}/leads/999999", headers=t.auth)
    assert r.status_code == 404
    # Syncro failing is a 503 to retry.
    env.syncro.fail_with = 502
    try:
        r = await c.get(f"{base(t)}/customers/{customer['id']}", headers=t.auth)
    finally:
        env.syncro.fail_with = None
    assert r.status_code == 503 and r.headers["retry-after"]
    assert error(r)["code"] == "provider_unavailable"
    # The token Syncro no longer takes: Syncro's words, our 400.
    t.account.token = "revoked"
    r = await c.get(f"{base(t)}/customers", headers=t.auth)
    assert r.status_code == 400 and "Not authorized" in error(r)["description"]


async def test_an_unreachable_syncro_is_a_503(env: Env) -> None:
    t = await tenant(env)
    customer = env.syncro.add_customer(t.account)
    # Slower than the hub waits (1 s).
    env.syncro.delay_s = 1.5
    try:
        r = await env.hub.client.get(f"{base(t)}/customers/{customer['id']}", headers=t.auth)
    finally:
        env.syncro.delay_s = 0.0
    assert r.status_code == 503 and error(r)["code"] == "provider_unavailable"
    # Nothing listens: the same hub state (registry topic, keys) served by an API process
    # whose Syncro address is a closed port.
    settings = msgspec.structs.replace(env.hub.settings, syncro_api_url=(
        f"http://127.0.0.1:{free_port()}/{{subdomain}}/api/v1"))
    api = await RunningHub(settings, services=["api"]).start()
    try:
        for method, path, body in (("GET", "/customers", None),
                                   ("POST", "/tickets", {"customer_id": customer["id"],
                                                          "subject": "x"}),
                                   ("POST", "/call", {"method": "GET", "path": "/me"})):
            r = await api.client.request(method, base(t) + path, headers=t.auth, json=body)
            assert r.status_code == 503, (path, r.text)
            assert error(r)["code"] == "provider_unavailable" and r.headers["retry-after"]
    finally:
        await api.stop()


async def test_only_the_hubs_own_syncro_integrations(env: Env) -> None:
    t = await tenant(env)
    other = await tenant(env)
    c = env.hub.client
    calls = len(t.account.calls)
    for method, path in (("GET", "/customers"), ("GET", "/customers/1"),
                         ("POST", "/tickets/1/comments"), ("POST", "/call")):
        r = await c.request(method, base(t) + path, headers=other.auth, json={})
        assert r.status_code == 404 and error(r)["code"] == "integration_not_found", path
        r = await c.request(method, base(t) + path, json={})
        assert r.status_code == 401
    assert len(t.account.calls) == calls
    # The admin token may act for every hub.
    r = await c.get(f"{base(t)}/customers", headers=env.hub.admin)
    assert r.status_code == 200
    direct = await env.hub.create_integration(
        t.hub_id, t.auth, channelId="Direct", name="desk",
        configuration={"integrationType": "Agent"})
    r = await c.get(f"/api/v1/integrations/{direct['integrationId']}/syncro/customers",
                    headers=t.auth)
    assert r.status_code == 404 and error(r)["code"] == "not_syncro"
    assert "Direct" in error(r)["description"]


async def test_bad_input_is_a_400_naming_the_field(env: Env) -> None:
    t = await tenant(env)
    c = env.hub.client
    calls = len(t.account.calls)
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/customers", {"firstname": "Ada", "colour": "red"}, "colour"),
        ("POST", "/customers", {"email": "not-an-address"}, "email"),
        ("POST", "/customers", {"get_sms": "yes"}, "get_sms"),
        ("POST", "/customers", {"notification_email": ["a@b.c", "nope"]},
         "notification_email[1]"),
        ("PUT", "/customers/1", {"firstName": "Ada"}, "firstName"),
        ("PUT", "/customers/1", {}, ""),
        ("POST", "/tickets", {"subject": "x"}, "customer_id"),
        ("POST", "/tickets", {"customer_id": 1, "subject": "x", "due_date": "tomorrow"},
         "due_date"),
        ("POST", "/tickets", {"customer_id": 1, "subject": "x", "comments_attributes": [
            {"subject": "s", "body": "b", "sms": "x"}]}, "comments_attributes[0].sms"),
        ("PUT", "/tickets/1", {"asset_ids": [0]}, "asset_ids[0]"),
        ("POST", "/leads", {"likelihood": 101}, "likelihood"),
        ("POST", "/tickets/1/comments", {"body": "b"}, "subject"),
        ("POST", "/call", {"method": "TRACE", "path": "/me"}, "method"),
        ("POST", "/call", {"method": "GET", "path": "/me", "body": {"a": 1}}, "body"),
        ("GET", "/customers?colour=red", None, "colour"),
        ("GET", "/customers?order=asc", None, "order"),
        ("GET", "/customers?limit=0", None, "limit"),
        ("GET", "/customers?limit=99999999999999999999999", None, "limit"),
        ("GET", "/customers?id=abc", None, "id"),
        ("GET", "/customers?email=a&email=b", None, "email"),
        ("GET", "/tickets?resolved_after=yesterday", None, "resolved_after"),
        ("GET", "/tickets?mine=maybe", None, "mine"),
        ("GET", "/customers/abc", None, "customerId"),
        ("GET", "/tickets/0", None, "ticketId"),
        ("GET", "/leads/" + "9" * 5000, None, "leadId"),
    ]
    for method, path, body, field in cases:
        r = await c.request(method, base(t) + path, headers=t.auth, json=body)
        assert r.status_code == 400, (path, body, r.text)
        assert error(r).get("field", "") == field, (path, body, r.text)
    deep = b'{"notes": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = await c.post(f"{base(t)}/customers", headers={**t.auth,
                                                      "content-type": "application/json"},
                     content=deep)
    assert r.status_code == 400 and error(r)["code"] == "invalid_json"
    r = await c.post(f"{base(t)}/customers", headers={**t.auth, "content-type": "text/plain"},
                     content=b"{}")
    assert r.status_code == 415
    r = await c.post(f"{base(t)}/customers", headers={**t.auth,
                                                      "content-type": "application/json"},
                     content=b'{"firstname": "Ada",')
    assert r.status_code == 400 and error(r)["code"] == "invalid_json"
    assert len(t.account.calls) == calls  # nothing reached Syncro


# ---- the raw call ------------------------------------------------------------------------


async def test_the_raw_call_reaches_any_path_of_the_account(env: Env) -> None:
    t = await tenant(env)
    customer = env.syncro.add_customer(t.account, email="ada@example.test")
    c = env.hub.client
    r = await c.post(f"{base(t)}/call", headers=t.auth, json={
        "method": "GET", "path": "/v1/customers",
        "query": {"email": "ada@example.test", "include_disabled": True},
        "headers": {"Accept": "application/json"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == 200
    assert [x["id"] for x in out["body"]["customers"]] == [customer["id"]]
    assert t.account.calls[-1] == ("GET", "/customers", {"email": "ada@example.test",
                                                         "include_disabled": "true"})
    r = await c.post(f"{base(t)}/call", headers=t.auth, json={
        "method": "PUT", "path": f"/customers/{customer['id']}", "body": {"city": "Paris"}})
    assert r.json()["body"]["customer"]["city"] == "Paris"
    assert t.account.customers[0]["city"] == "Paris"
    r = await c.post(f"{base(t)}/call", headers=t.auth, json={"method": "GET", "path": "/me"})
    assert r.json() == {"status": 200, "body": {"user_id": 7, "user_name": "Tech Tina",
                                                "subdomain": t.account.subdomain}}
    r = await c.post(f"{base(t)}/call", headers=t.auth,
                     json={"method": "GET", "path": "/appointments"})  # not in the fake: 404
    assert r.status_code == 404 and error(r)["code"] == "provider_not_found"


async def test_the_raw_call_never_leaves_the_accounts_api_base(env: Env) -> None:
    t = await tenant(env)
    victim = env.syncro.add_account("victim" + t.tag, "victim-token")
    c = env.hub.client
    before = len(t.account.calls) + len(victim.calls)
    escapes = ["https://evil.example.test/x", "//evil.example.test/x", "evil.example.test/x",
               "/../../" + victim.subdomain + "/api/v1/me", "/customers/../../../x",
               "/./me", "/customers//1", "/customers%2F..%2F..", "/me?x=1", "/me#x",
               "/me\\..", "/me\r\nHost: evil", "/@evil.example.test", "/me:80", "/ me"]
    for path in escapes:
        r = await c.post(f"{base(t)}/call", headers=t.auth, json={"method": "GET",
                                                                  "path": path})
        assert r.status_code == 400, (path, r.text)
        assert error(r)["field"] == "path" and error(r)["code"] == "invalid_path"
    for name in ("Authorization", "host", "Proxy-Authorization", "Cookie"):
        r = await c.post(f"{base(t)}/call", headers=t.auth, json={
            "method": "GET", "path": "/me", "headers": {name: "Bearer victim-token"}})
        assert r.status_code == 400 and error(r)["code"] == "forbidden_header", name
        assert error(r)["field"] == f"headers.{name}"
    r = await c.post(f"{base(t)}/call", headers=t.auth, json={
        "method": "GET", "path": "/me", "headers": {"X-Custom": "1\r\nAuthorization: x"}})
    assert r.status_code == 400 and error(r)["code"] == "invalid_header"
    assert len(t.account.calls) + len(victim.calls) == before
    # The sentinel: a good call after all of them reaches the account, and only it, with
    # the caller's own header and the account's token.
    r = await c.post(f"{base(t)}/call", headers=t.auth, json={
        "method": "GET", "path": "/me", "headers": {"X-Custom": "1"}})
    assert r.status_code == 200
    assert len(t.account.calls) == before - len(victim.calls) + 1 and victim.calls == []
    sent = t.account.headers[-1]
    assert sent["x-custom"] == "1" and sent["authorization"] == f"Bearer {t.account.token}"


# ---- the CLI -----------------------------------------------------------------------------


async def test_the_cli(env: Env) -> None:
    t = await tenant(env)
    customer = env.syncro.add_customer(t.account, business_name="Analytical Engines",
                                       email="ada@example.test")
    iid = t.integration["integrationId"]
    exe = str(Path(sys.executable).parent / "switchboard")
    common = ["--url", env.hub.base_url, "--token", t.auth["Authorization"][7:]]

    async def run(*args: str) -> tuple[int, str]:
        # The hub runs on this event loop: the CLI must not block it.
        proc = await asyncio.create_subprocess_exec(
            exe, "syncro", *args, *common, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode()

    code, out = await run("customers", "list", iid, "--email", "ada@example.test",
                          "--include-disabled")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "EMAIL", "PHONE"]
    assert lines[1].split()[:1] == [str(customer["id"])] and "Analytical" in lines[1]
    assert t.account.calls[-1][2] == {"email": "ada@example.test", "include_disabled": "true"}

    code, out = await run("customers", "create", iid, "--set", "lastname=Babbage",
                          "--set", "get_sms:=true", "--set", 'properties:={"Seats": 3}',
                          "--idempotency-key", "cli-1")
    assert code == 0, out
    made = t.account.customers[-1]
    assert made["lastname"] == "Babbage" and made["get_sms"] is True
    assert made["properties"] == {"Seats": 3}
    assert out.splitlines()[0] == f"created customer {made['id']}"
    code, out = await run("customers", "create", iid, "--set", "lastname=Babbage",
                          "--idempotency-key", "cli-1")
    assert code == 0 and len(t.account.customers) == 2

    code, out = await run("tickets", "create", iid, "--data",
                          f'{{"customer_id": {customer["id"]}, "subject": "Printer jams"}}')
    assert code == 0, out
    ticket = t.account.tickets[-1]
    code, out = await run("tickets", "comment", iid, str(ticket["id"]), "--body", "On my way",
                          "--hidden")
    assert code == 0 and out.startswith("comment "), out
    assert ticket["comments"][-1]["hidden"] is True
    code, out = await run("tickets", "update", iid, str(ticket["id"]), "--set",
                          "status=Resolved")
    assert code == 0 and "status: Resolved" in out
    code, out = await run("tickets", "get", iid, str(ticket["id"]), "--json")
    assert code == 0 and msgspec.json.decode(out)["ticket"]["status"] == "Resolved"
    code, out = await run("tickets", "list", iid, "--status", "Resolved", "--json")
    assert code == 0 and [x["id"] for x in msgspec.json.decode(out)["tickets"]] == [
        ticket["id"]]
    code, out = await run("tickets", "delete", iid, str(ticket["id"]))
    assert code == 0 and out.strip() == f"deleted ticket {ticket['id']}"

    code, out = await run("call", iid, "GET", "/customers", "-q", "email=ada@example.test")
    assert code == 0 and out.splitlines()[0] == "HTTP 200"
    assert msgspec.json.decode("\n".join(out.splitlines()[1:]))["customers"][0]["id"] == \
        customer["id"]

    code, out = await run("customers", "get", iid, "999999")
    assert code == 1 and "404" in out
    code, out = await run("call", iid, "GET", "https://evil.example.test/")
    assert code == 1 and "400" in out and "path" in out
    code, out = await run("leads", "create", iid, "--set", "bogus=1")
    assert code == 1 and "unknown field 'bogus'" in out


@pytest.mark.parametrize("kind", ["customers", "tickets", "leads"])
async def test_the_openapi_document_describes_the_actions(env: Env, kind: str) -> None:
    spec = (await env.hub.client.get("/openapi.json")).json()
    one = f"/api/v1/integrations/{{integrationId}}/syncro/{kind}/{{recordId}}"
    listing = spec["paths"][f"/api/v1/integrations/{{integrationId}}/syncro/{kind}"]
    assert {"get", "post"} <= set(listing)
    assert {p["name"] for p in listing["get"]["parameters"]} >= {"limit", "query"}
    # Leads cannot be deleted: their DELETE is documented as what it answers, 405.
    deleting = spec["paths"][one]["delete"]["responses"]
    assert ("204" in deleting) == (kind != "leads") and ("405" in deleting) == (kind == "leads")
    body = listing["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.rsplit("/", 1)[1] in spec["components"]["schemas"]
    assert "RawCall" in spec["components"]["schemas"]
