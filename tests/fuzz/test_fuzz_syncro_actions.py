"""Fuzz: the Syncro actions' parsers, the request bodies (`syncro_records.decode_body`
for every record kind, comments and the raw call), the search parameters
(`syncro_search.parse_search`) and the raw call's path and header checks
(`syncro_call`).

Invariant: accepted or refused with our error, nothing else; what is accepted is what
the routes rely on: a body is JSON Syncro can take (and can be marked), a search is
Syncro's query of strings within the limit's bounds, and a path stays below the
account's API base.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

import msgspec
from hypothesis import given

from switchboard.providers import syncro_call, syncro_records, syncro_search
from switchboard.providers import syncro_idempotency as idem
from tests.fuzz.strategies import cases, near_valid, ours_or_result, text_like

BODIES: dict[str, list[Any]] = {
    "customers": [{"business_name": "Acme", "firstname": "Ada", "email": "a@x.test",
                   "get_sms": True, "tax_rate_id": None, "properties": {"Seats": 3},
                   "notification_email": ["a@x.test", "b@x.test"]}],
    "tickets": [{"customer_id": 7, "subject": "Printer", "due_date": "2026-12-02T10:00:00Z",
                 "asset_ids": [1, 2], "comments_attributes": [
                     {"subject": "Initial Issue", "body": "it jams", "hidden": True}]}],
    "leads": [{"first_name": "Ada", "likelihood": 50, "opportunity_amount_dollars": 10.5,
               "ticket_properties": {"a": "b"}, "appointment_time": "2026-12-05"}],
}
OTHERS: list[tuple[Any, list[Any]]] = [
    (syncro_records.CommentCreate, [{"subject": "Update", "body": "on it", "hidden": False}]),
    (syncro_call.RawCall, [{"method": "GET", "path": "/v1/customers",
                            "query": {"page": 2, "include_disabled": True},
                            "headers": {"Accept": "application/json"}, "body": None}]),
]
NAMES = sorted({n for k in syncro_records.KINDS.values() for n in k.search} | {"limit"})
PATHS = ["/customers", "/v1/tickets/12/comment", "/../x", "//evil.test", "/a/./b",
         "https://evil.test/", "/me?x=1", "/%2e%2e/", "/a\\b", "/customers.json"]


class BodyCase(NamedTuple):
    into: Any
    kind: str | None
    body: bytes


def body_case(r: random.Random) -> BodyCase:
    if r.random() < 0.7:
        kind = r.choice(list(BODIES))
        k = syncro_records.KINDS[kind]
        return BodyCase(r.choice([k.create, k.update]), kind, near_valid(r, *BODIES[kind]))
    into, templates = r.choice(OTHERS)
    return BodyCase(into, None, near_valid(r, *templates))


@given(cases(body_case))
def test_syncro_action_bodies(case: BodyCase) -> None:
    body = ours_or_result(syncro_records.decode_body, case.body, case.into)
    if body is None:
        return
    if isinstance(body, syncro_call.RawCall):
        ours_or_result(syncro_call.check_call_headers, body.headers)
        query = syncro_call.call_query(body.query)
        assert all(isinstance(v, str) for v in query.values())
        return
    wire = syncro_records.to_wire(body)
    msgspec.json.encode(wire)  # what goes to Syncro is JSON
    if case.kind is not None:
        kind = syncro_records.KINDS[case.kind]
        marked = syncro_records.mark_create(kind, wire, idem.token_for("k"))
        records = syncro_records.marked_as_body(kind, [{**marked, "comments": marked.get(
            "comments_attributes", [])}])
        assert idem.find_marked(records, idem.token_for("k")) is not None
        syncro_records.lookup_params(kind, wire)


class SearchCase(NamedTuple):
    kind: str
    items: list[tuple[str, str]]


def search_case(r: random.Random) -> SearchCase:
    items = [(text_like(r, *NAMES, max_size=40),
              text_like(r, "true", "12", "2026-11-01", "Not Closed", "firstname", "desc",
                        "New,Won", "", "9" * 30))
             for _ in range(r.randrange(0, 6))]
    return SearchCase(r.choice(list(syncro_records.KINDS)), items)


@given(cases(search_case))
def test_syncro_search_parameters(case: SearchCase) -> None:
    kind = syncro_records.KINDS[case.kind]
    search = ours_or_result(syncro_search.parse_search, kind, case.items)
    if search is None:
        return
    assert 1 <= search.limit <= syncro_search.MAX_LIMIT
    assert set(search.params) <= set(kind.search) - {"order"}
    assert all(isinstance(v, str) and len(v) <= 100_000 for v in search.params.values())


@given(cases(lambda r: text_like(r, *PATHS, max_size=200)))
def test_syncro_call_paths(path: str) -> None:
    checked = ours_or_result(syncro_call.call_path, path)
    if checked is None:
        return
    base = "https://acme.syncromsp.com/api/v1"
    url = base + checked
    assert url == base + "/" or url.startswith(base + "/")
    segments = checked.split("/")[1:]
    assert ".." not in segments and "." not in segments
    assert all(c.isascii() and (c.isalnum() or c in "_-./") for c in checked)
