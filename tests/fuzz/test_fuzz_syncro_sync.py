"""Fuzz: the sync decisions over what Syncro sends and answers (a ticket webhook's record
with its comments, customer searches) — any JSON a webhook carries or Syncro answers.

Invariant: they never raise; what they build is bounded and readable by the router (the
plugin publishes it before answering Syncro, so a crash here would be a 500).
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from hypothesis import given

from switchboard.providers import syncro
from switchboard.providers import syncro_sync as sync
from switchboard.providers.syncro_webhooks import parse_webhook
from tests.fuzz.strategies import cases, near_valid, ours_or_result
from tests.fuzz.test_fuzz_providers import HUB, IID, readable_downstream

HUB_BODY = "My printer is on fire\n\n[sb:0123456789abcdef]"
TICKET = {"id": 4242, "number": 1001, "status": "New", "customer_id": 7, "comments": [
    {"id": 1, "subject": "SMS from +1416", "body": HUB_BODY, "hidden": False, "tech": "Hub"},
    {"id": 2, "subject": "Update", "body": "On my way", "hidden": False, "tech": "Tina",
     "user_id": 7},
    {"id": "3", "subject": "Note", "body": "private", "hidden": True},
]}
HOOKS: list[Any] = [
    {"text": "A new comment was added to a Ticket", "link": "https://a.syncromsp.com/tickets/4242",
     "attributes": TICKET},
    {"text": "Ticket was resolved", "attributes": {**TICKET, "status": "Resolved"}},
]
CUSTOMERS: list[Any] = [
    {"id": 1, "firstname": "Ada", "lastname": "Lovelace", "mobile": "(416) 555-0123",
     "phone": None, "email": "ada@example.com", "business_name": None},
    {"id": 2, "business_name": "Acme", "phone": "+14165550999", "disabled": True},
]
LOOKUPS = [sync.CustomerLookup(phone="+14165550123"), sync.CustomerLookup(email="ada@example.com"),
           sync.CustomerLookup(name="Ada Lovelace"), sync.CustomerLookup(name="acme")]


class Case(NamedTuple):
    hook: bytes
    customers: bytes
    cursor: int
    lookup: sync.CustomerLookup


def case(r: random.Random) -> Case:
    return Case(near_valid(r, *HOOKS), near_valid(r, {"customers": CUSTOMERS}),
                r.choice([0, 1, 2, 10**20, -5]), r.choice(LOOKUPS))


@given(cases(case))
def test_ticket_webhooks_and_customer_searches(c: Case) -> None:
    hook = ours_or_result(parse_webhook, c.hook)
    if hook is not None:
        ticket = hook.attributes
        comments = sync.new_technician_comments(ticket, c.cursor)
        assert [x.id for x in comments] == sorted(x.id for x in comments)
        assert all(x.id > c.cursor and not sync.is_hub_text(x.body) for x in comments)
        after = sync.cursor_after(ticket, c.cursor)
        assert after >= c.cursor and sync.new_technician_comments(ticket, after) == []
        for activity in sync.agent_activities(comments, hub_id=HUB, integration_id=IID,
                                              conversation_id="c", ticket_id="4242",
                                              now_ms=1):
            readable_downstream(activity)
        if sync.is_resolution("syncro:ticket.updated", ticket):
            readable_downstream(sync.closed_activity(
                hub_id=HUB, integration_id=IID, conversation_id="c", opened_at=1,
                ticket=ticket, ticket_id="4242", now_ms=1))
        sync.pick_reopen([ticket])
        assert sync.latest_comment_id(ticket) >= 0
    # A search's answer, as the client reads it (depth-limited, records are objects).
    page = ours_or_result(syncro.unwrap_page, c.customers, "customers")
    if page is not None:
        hit = sync.match_customer(page.records, c.lookup)
        assert hit is None or hit in page.records
