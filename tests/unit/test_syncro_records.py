"""Syncro's records as the REST actions take them (syncro_records, syncro_search,
syncro_call): bodies (Syncro's field names, unknown ones refused), search parameters as
Syncro's query, creates marked once, raw call checks."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from switchboard.errors import BadRequest
from switchboard.providers import syncro_call as call
from switchboard.providers import syncro_idempotency as idem
from switchboard.providers import syncro_records as r
from switchboard.providers import syncro_search as search

CUSTOMERS, TICKETS, LEADS = r.KINDS["customers"], r.KINDS["tickets"], r.KINDS["leads"]

# Every field of the seed's modules, as Syncro's API names them.
SEED_FIELDS = {
    "customers": {
        "business_name", "firstname", "lastname", "email", "phone", "mobile", "address",
        "address_2", "city", "state", "zip", "notes", "get_sms", "opt_out", "no_email",
        "get_billing", "get_marketing", "get_reports", "ref_customer_id", "referred_by",
        "tax_rate_id", "notification_email", "invoice_cc_emails", "invoice_term_id",
        "properties"},
    "tickets": {
        "customer_id", "subject", "number", "due_date", "start_at", "end_at",
        "ticket_type_id", "location_id", "problem_type", "status", "user_id", "properties",
        "asset_ids", "signature_name", "signature_data", "sla_id", "contact_id", "priority",
        "outtake_form_data", "outtake_form_date", "outtake_form_name", "comments_attributes"},
    "leads": {
        "address", "business_name", "city", "zip", "converted", "message_read", "disabled",
        "email", "first_name", "last_name", "mobile", "phone", "state", "ticket_description",
        "ticket_problem_type", "ticket_subject", "location_id", "from_check_in",
        "customer_id", "ticket_id", "hidden_notes", "contact_id", "appointment_time",
        "status", "user_id", "ticket_type_id", "mailbox_id", "opportunity_start_date",
        "opportunity_amount_dollars", "likelihood", "properties", "ticket_properties",
        "customer_purchase_id", "signature_date", "signature_name", "signature_data",
        "appointment_type_id"},
}


@pytest.mark.parametrize("kind", ["customers", "tickets", "leads"])
def test_the_bodies_have_every_field_of_the_seed(kind: str) -> None:
    k = r.KINDS[kind]
    assert set(k.create.__struct_fields__) == SEED_FIELDS[kind]
    assert set(k.update.__struct_fields__) == SEED_FIELDS[kind]


def decode(raw: Any, into: Any) -> Any:
    return r.decode_body(orjson.dumps(raw), into)


def test_only_given_fields_are_sent_and_null_clears() -> None:
    body = decode({"firstname": "Ada", "tax_rate_id": None, "get_sms": False},
                  r.CustomerFields)
    assert r.to_wire(body) == {"firstname": "Ada", "tax_rate_id": None, "get_sms": False}
    assert r.to_wire(decode({}, r.TicketUpdate)) == {}


def test_address_lists_are_joined_as_syncro_keeps_them() -> None:
    body = decode({"notification_email": ["a@x.test", "b@x.test"],
                   "invoice_cc_emails": "c@x.test"}, r.CustomerFields)
    assert r.to_wire(body) == {"notification_email": "a@x.test, b@x.test",
                               "invoice_cc_emails": "c@x.test"}


@pytest.mark.parametrize(("raw", "into", "code", "field"), [
    ({"firstname": "A", "colour": 1}, r.CustomerFields, "unknown_field", "colour"),
    ({"firstName": "A"}, r.CustomerFields, "unknown_field", "firstName"),
    ({"customer_id": 1, "subject": "s", "comments_attributes": [
        {"subject": "s", "body": "b", "x": 1}]}, r.TicketCreate, "unknown_field",
     "comments_attributes[0].x"),
    ({"subject": "s"}, r.TicketCreate, "missing_field", "customer_id"),
    ({"customer_id": 1}, r.TicketCreate, "missing_field", "subject"),
    ({"customer_id": 0, "subject": "s"}, r.TicketCreate, "invalid_request", "customer_id"),
    ({"customer_id": True, "subject": "s"}, r.TicketCreate, "invalid_request", "customer_id"),
    ({"due_date": "next week"}, r.TicketUpdate, "invalid_request", "due_date"),
    ({"email": "no-at-sign"}, r.LeadFields, "invalid_request", "email"),
    ({"likelihood": 150}, r.LeadFields, "invalid_request", "likelihood"),
    ({"properties": {"a": [1]}}, r.LeadFields, "invalid_request", "properties[...]"),
    ({"subject": "", "body": "b"}, r.CommentCreate, "invalid_request", "subject"),
    ({"method": "GET"}, call.RawCall, "missing_field", "path"),
    ({"method": "CONNECT", "path": "/"}, call.RawCall, "invalid_request", "method"),
])
def test_bad_bodies_are_400s_naming_the_field(raw: Any, into: Any, code: str,
                                              field: str) -> None:
    with pytest.raises(BadRequest) as e:
        decode(raw, into)
    assert (e.value.code, e.value.field) == (code, field)


def test_dates_take_iso_8601_dates_and_times() -> None:
    for value in ("2026-12-02", "2026-12-02T10:00", "2026-12-02T10:00:00Z",
                  "2026-12-02 10:00:00.123-05:00", "2026-12-02T10:00:00+0100"):
        assert r.to_wire(decode({"due_date": value}, r.TicketUpdate)) == {"due_date": value}


def test_the_json_depth_limit_holds_inside_any_field() -> None:
    with pytest.raises(BadRequest) as e:
        r.decode_body(b'{"properties": {"a": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
                      r.CustomerFields)
    assert e.value.code == "invalid_json"


# ---- searches ----------------------------------------------------------------------------


def test_customer_search_as_syncros_query() -> None:
    s = search.parse_search(CUSTOMERS, [
        ("sort", "lastname"), ("order", "desc"), ("query", "ada"), ("firstname", "Ada"),
        ("lastname", "L"), ("business_name", "Engines"), ("id", "012"), ("id_not", "13"),
        ("email", "a@x.test"), ("include_disabled", "YES"), ("limit", "20")])
    assert s.params == {"sort": "lastname DESC", "query": "ada", "firstname": "Ada",
                        "lastname": "L", "business_name": "Engines", "id": "12",
                        "id_not": "13", "email": "a@x.test", "include_disabled": "true"}
    assert s.limit == 20
    assert search.parse_search(CUSTOMERS, [("sort", "city")]).params == {"sort": "city"}
    assert search.parse_search(CUSTOMERS, []) == search.Search(params={},
                                                               limit=search.DEFAULT_LIMIT)
    assert search.parse_search(CUSTOMERS, [("query", "")]).params == {}


def test_ticket_and_lead_searches() -> None:
    s = search.parse_search(TICKETS, [("mine", "0"), ("status", "Not Closed"),
                                 ("since_updated_at", "2026-11-01T00:00:00Z"),
                                 ("ticket_search_id", "7")])
    assert s.params == {"mine": "false", "status": "Not Closed",
                        "since_updated_at": "2026-11-01T00:00:00Z", "ticket_search_id": "7"}
    s = search.parse_search(LEADS, [("status_list", "New, Won"), ("status_list", "Lost"),
                               ("mailbox_ids", "1,2"), ("has_ticket", "true")])
    assert s.params == {"status_list": "New,Won,Lost", "mailbox_ids": "1,2",
                        "has_ticket": "true"}


@pytest.mark.parametrize(("kind", "items", "field"), [
    ("customers", [("colour", "red")], "colour"),
    ("customers", [("order", "asc")], "order"),
    ("customers", [("sort", "name; drop")], "sort"),
    ("customers", [("sort", "x"), ("order", "up")], "order"),
    ("customers", [("id", "-1")], "id"),
    ("customers", [("id", "1" * 40)], "id"),
    ("customers", [("email", "a"), ("email", "b")], "email"),
    ("customers", [("limit", str(search.MAX_LIMIT + 1))], "limit"),
    ("customers", [("limit", "9" * 5000)], "limit"),
    ("customers", [("query", "x" * 1001)], "query"),
    ("tickets", [("resolved_after", "2026-13-45")], "resolved_after"),
    ("tickets", [("mine", "maybe")], "mine"),
    ("tickets", [("sort", "id")], "sort"),  # not a ticket search parameter
    ("leads", [("users", ",".join(["1"] * 101))], "users"),
])
def test_bad_search_parameters_are_named(kind: str, items: list[tuple[str, str]],
                                         field: str) -> None:
    with pytest.raises(BadRequest) as e:
        search.parse_search(r.KINDS[kind], items)
    assert e.value.field == field


def test_record_ids() -> None:
    assert r.record_id("0042", "customerId") == "42"
    for bad in ("0", "-3", "abc", "1e3", "٣", "9" * 17, ""):
        with pytest.raises(BadRequest) as e:
            r.record_id(bad, "customerId")
        assert e.value.field == "customerId"


# ---- creating once -----------------------------------------------------------------------


def test_creates_carry_the_marker_where_the_lookup_finds_it() -> None:
    token = idem.token_for("k")
    tag = idem.marker(token)
    customer = r.mark_create(CUSTOMERS, {"lastname": "L", "notes": "VIP"}, token)
    assert customer["notes"] == f"VIP\n\n{tag}"
    assert r.mark_create(CUSTOMERS, {"lastname": "L"}, token)["notes"] == tag
    lead = r.mark_create(LEADS, {"first_name": "A"}, token)
    assert lead["hidden_notes"] == tag and "notes" not in lead
    found = idem.find_marked(r.marked_as_body(CUSTOMERS, [{"id": 1, "notes": "x"},
                                                         customer | {"id": 2}]), token)
    assert found is not None and found["id"] == 2
    # A ticket: its first comment, or a hidden "Initial Issue" one.
    given = r.mark_create(TICKETS, {"subject": "S", "comments_attributes": [
        {"subject": "a", "body": "first"}, {"subject": "b", "body": "second"}]}, token)
    assert [c["body"] for c in given["comments_attributes"]] == [f"first\n\n{tag}", "second"]
    made = r.mark_create(TICKETS, {"subject": "Printer"}, token)
    assert made["comments_attributes"] == [{"subject": "Initial Issue",
                                            "body": f"Printer\n\n{tag}", "hidden": True,
                                            "do_not_email": True}]
    assert idem.find_marked([{"id": 9, "comments": made["comments_attributes"]}], token)


def test_where_a_create_is_looked_for() -> None:
    assert r.lookup_params(CUSTOMERS, {"email": "a@x.test", "lastname": "L"}) == {
        "email": "a@x.test"}
    assert r.lookup_params(CUSTOMERS, {"lastname": "L"}) == {"lastname": "L"}
    assert r.lookup_params(LEADS, {"business_name": "B"}) == {"query": "B"}
    assert r.lookup_params(TICKETS, {"customer_id": 4}) == {"customer_id": "4"}
    assert r.lookup_params(CUSTOMERS, {"get_sms": True}) == {}


def test_ticket_defaults_fill_only_what_is_missing() -> None:
    assert r.ticket_defaults({"subject": "s"}, "New", "Remote") == {
        "subject": "s", "status": "New", "problem_type": "Remote"}
    assert r.ticket_defaults({"status": "Hold"}, "New", None) == {"status": "Hold"}


def test_idempotency_keys() -> None:
    assert r.idempotency_key(None) is None
    assert r.idempotency_key("order-42/retry") == "order-42/retry"
    for bad in ("", "a b", "x" * 201, "é", "a\nb"):
        with pytest.raises(BadRequest):
            r.idempotency_key(bad)


# ---- the raw call ------------------------------------------------------------------------


def test_call_paths_stay_under_the_api_base() -> None:
    assert call.call_path("/customers") == "/customers"
    assert call.call_path("/v1/customers/12") == "/customers/12"
    assert call.call_path("/tickets/12/comment") == "/tickets/12/comment"
    assert call.call_path("/customers/autocomplete.json") == "/customers/autocomplete.json"
    for bad in ("customers", "//evil.test/x", "https://evil.test/", "/../x", "/a/../../x",
                "/./me", "/a//b", "/a/", "/me?x=1", "/me#f", "/%2e%2e/x", "/a\\..\\b",
                "/@evil.test", "/me:443", "/ me", "/me\r\n", "/me\n", "/v1/../x", "/.."):
        with pytest.raises(BadRequest) as e:
            call.call_path(bad)
        assert e.value.field == "path", bad


def test_call_headers() -> None:
    call.check_call_headers(None)
    call.check_call_headers({"Accept": "application/json",
                          "Content-Type": "application/json; charset=utf-8"})
    for name in ("Authorization", "HOST", "proxy-authorization", "Cookie", "Content-Length"):
        with pytest.raises(BadRequest) as e:
            call.check_call_headers({name: "x"})
        assert e.value.code == "forbidden_header" and e.value.field == f"headers.{name}"
    assert call.check_call_headers({"X-Anything": "1", "If-None-Match": '"e1"'}) == {
        "X-Anything": "1", "If-None-Match": '"e1"'}
    for headers in ({"Accept": "text/html"}, {"content-type": "text/plain"}):
        with pytest.raises(BadRequest) as e:
            call.check_call_headers(headers)
        assert e.value.code == "unsupported_header"
    for headers in ({"X-A": "1\r\nAuthorization: Bearer x"}, {"Bad Name": "1"},
                    {"X-A\n": "1"}, {"X-A": "\x00"}):
        with pytest.raises(BadRequest) as e:
            call.check_call_headers(headers)
        assert e.value.code == "invalid_header"


def test_call_query() -> None:
    assert call.call_query({"a": True, "b": False, "c": 3, "d": "x"}) == {
        "a": "true", "b": "false", "c": "3", "d": "x"}
    raw = decode({"method": "POST", "path": "/x", "query": {"n": 1.5}, "body": [1]},
                 call.RawCall)
    assert msgspec.to_builtins(raw)["body"] == [1]
