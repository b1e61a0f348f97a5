"""Fuzz: the Syncro channel's parsers, its Notification Center webhooks
(`syncro_webhooks.parse_webhook` / `normalize`) and the REST answers the hub reads back
(`syncro.unwrap_one`, `unwrap_page`, `parse_error`, `parse_me`).

Invariant: accepted or refused with our error, nothing else; every activity a webhook
becomes is one of `SYNCRO_EVENTS` and one the router can read (the plugin answers 200
after publishing it); what the answers yield stays within the bounds the callers rely on.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from hypothesis import given

from switchboard.channels import SYNCRO_EVENTS
from switchboard.providers import syncro, syncro_webhooks
from tests.fuzz.strategies import cases, near_valid, ours_or_result
from tests.fuzz.test_fuzz_providers import HUB, IID, readable_downstream

LINK = "https://acme.syncromsp.com/tickets/4242"
TICKET = {"id": 4242, "number": 1001, "subject": "Printer on fire", "status": "New",
          "customer_id": 7, "created_at": "2026-01-02T03:04:05.000-05:00",
          "updated_at": "2026-01-02T03:04:05.000-05:00",
          "comments": [{"id": 1, "subject": "Initial Issue", "body": "it burns"}]}
WEBHOOKS: list[Any] = [
    {"text": f"A Ticket was created\n{LINK}", "link": LINK, "attributes": TICKET},
    {"text": "A comment was added to a Ticket", "link": LINK,
     "attributes": {**TICKET, "status": "Resolved", "updated_at": 1_767_000_000}},
    {"text": "Ticket resolved", "link": "", "attributes": {**TICKET, "id": "T-1"}},
    {"text": "A Customer was created", "link": "https://acme.syncromsp.com/customers/7",
     "attributes": {"id": 7, "business_name": "Acme", "email": "a@x.test"}},
    {"text": "A payment was added to invoice 12",
     "link": "https://acme.syncromsp.com/invoices/12/payments/3",
     "attributes": {"id": 3, "payment_amount": 10.5, "created_at": "2026-01-01"}},
    {"text": "An RMM Alert was created", "link": "https://acme.syncromsp.com/rmm_alerts/9",
     "attributes": {"id": 9, "description": "disk full"}},
    {"text": "Invoice created", "attributes": {"id": 12, "total": "10.00"}},
]
ANSWERS: list[Any] = [
    {"ticket": TICKET},
    {"comment": {"id": 5, "body": "done"}},
    {"tickets": [TICKET, {"id": 2}], "meta": {"page": 1, "total_pages": 3, "total_entries": 51}},
    {"customers": [], "meta": {"page": "2", "total_pages": "2"}},
    {"tickets": [TICKET]},
    {"user_id": 17, "user_name": "Tech Tina", "email": "tina@x.test"},
    {"user_id": "17"},
    {"error": "Not authorized"},
    {"errors": {"subject": ["can't be blank"], "base": "nope"}},
    {"message": ["Record not found", {"detail": "x"}]},
]
KEYS = ["ticket", "tickets", "comment", "customers", "customer", "meta", ""]


class WebhookCase(NamedTuple):
    body: bytes
    subdomain: str


def webhook_case(r: random.Random) -> WebhookCase:
    # The subdomain comes from a stored configuration (`Subdomain`): valid, any length.
    return WebhookCase(near_valid(r, *WEBHOOKS), r.choice(["acme", "a", "a-9", "x" * 63]))


@given(cases(webhook_case))
def test_syncro_webhook(case: WebhookCase) -> None:
    hook = ours_or_result(syncro_webhooks.parse_webhook, case.body)
    if hook is None:
        return
    kind = syncro_webhooks.event_type(hook)
    assert kind is None or kind in SYNCRO_EVENTS
    activity = ours_or_result(syncro_webhooks.normalize, hook, hub_id=HUB, integration_id=IID,
                              subdomain=case.subdomain, now_ms=1_700_000_000_000)
    if activity is None:
        return
    assert activity.type == kind and activity.channel_id == "Syncro"
    assert activity.metadata is not None and 0 < len(activity.metadata["syncroId"]) <= 64
    readable_downstream(activity)


class AnswerCase(NamedTuple):
    body: bytes
    status: int
    key: str
    requested: int


def answer_case(r: random.Random) -> AnswerCase:
    return AnswerCase(near_valid(r, *ANSWERS), r.choice([200, 401, 404, 422, 429, 500, 0]),
                      r.choice(KEYS), r.choice([1, 2, 100]))


@given(cases(answer_case))
def test_syncro_answers(case: AnswerCase) -> None:
    record = ours_or_result(syncro.unwrap_one, case.body, case.key)
    assert record is None or isinstance(record, dict)
    page = ours_or_result(syncro.unwrap_page, case.body, case.key, case.requested)
    if page is not None:
        assert all(isinstance(rec, dict) for rec in page.records)
        after = syncro.next_page(page, 1)
        assert after is None or after == page.page + 1 <= page.total_pages
    me = ours_or_result(syncro.parse_me, case.body)
    assert me is None or len(me) <= 200
    # Never refuses: an error answer in any shape becomes a short description.
    error = syncro.parse_error(case.status, case.body)
    assert error.status == case.status and len(error.message) <= 512
    assert isinstance(error.describe(), str)
