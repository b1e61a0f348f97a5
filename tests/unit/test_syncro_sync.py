"""Syncro tickets ⇄ conversations, the pure decisions: what a customer's message does,
who the customer is in Syncro, which comments of a ticket webhook go to the customer,
and when a conversation closes."""

from __future__ import annotations

from typing import Any

from switchboard.conversations import CONVERSATION_CLOSED, ConversationRecord, reopened_by
from switchboard.model import Activity, Event, FileMessage, ImageMessage, Sender, TextMessage
from switchboard.providers import syncro_sync as sync
from switchboard.providers.syncro_idempotency import mark, token_for


def activity(type_: str = "message:customer", channel: str = "TwilioSMS",
             sender: Sender | None = None, text: str = "My printer is on fire",
             metadata: dict[str, str] | None = None) -> Activity:
    return Activity(activity_id="a1", hub_id="h", integration_id="sms", channel_id=channel,
                    type=type_, conversation_id="c1",
                    sender=sender or Sender(id="+14165550123"), timestamp=1,
                    message=TextMessage(text=text) if type_.startswith("message:") else None,
                    event=None if type_.startswith("message:") else Event(name="x"),
                    metadata=metadata or {})


def comment(cid: int, body: str, *, hidden: bool = False, tech: str = "Tina") -> dict[str, Any]:
    return {"id": cid, "subject": "Update", "body": body, "hidden": hidden, "tech": tech,
            "user_id": 7}


HUB = mark("My printer is on fire", token_for("msg_1"))


# ---- customer messages → Syncro ------------------------------------------------------


def test_first_message_opens_a_later_one_comments_others_are_skipped() -> None:
    assert sync.plan_customer_message(activity(), None) is sync.Step.OPEN
    assert sync.plan_customer_message(activity(), "123") is sync.Step.COMMENT
    assert sync.plan_customer_message(activity("message:agent"), None) is sync.Step.SKIP
    assert sync.plan_customer_message(activity("event:seen"), "123") is sync.Step.SKIP


def test_who_wrote_by_channel() -> None:
    sms = sync.customer_lookup(activity())
    assert sms == sync.CustomerLookup(phone="+14165550123")
    assert sync.search_params(sms) == {"query": "4165550123"}
    mail = sync.customer_lookup(activity(channel="Direct",
                                         sender=Sender(id="Ada@Example.com", name="Ada L")))
    assert mail == sync.CustomerLookup(email="ada@example.com", name="Ada L")
    assert sync.search_params(mail) == {"email": "ada@example.com"}
    named = sync.customer_lookup(activity(channel="Messenger",
                                          sender=Sender(id="psid-1", name=" Bob Stone ")))
    assert named == sync.CustomerLookup(name="Bob Stone")
    assert sync.search_params(named) == {"query": "Bob Stone"}
    meta = sync.customer_lookup(activity(channel="WebChat", sender=Sender(id="w1"),
                                         metadata={"email": "x@y.io", "phone": "+15550001"}))
    assert meta == sync.CustomerLookup(phone="+15550001", email="x@y.io")
    nothing = sync.customer_lookup(activity(channel="Direct", sender=Sender(id="cust-9")))
    assert nothing == sync.CustomerLookup() and sync.search_params(nothing) is None


def test_the_customer_is_matched_on_phone_email_or_name() -> None:
    records = [
        {"id": 1, "firstname": "Ada", "lastname": "Lovelace", "phone": "(416) 555-0999",
         "email": "ada@example.com"},
        {"id": 2, "business_name": "Acme", "mobile": "416-555-0123", "disabled": True},
        {"id": 3, "business_name": "Acme", "mobile": "+1 416 555 0123"},
    ]
    assert sync.match_customer(records, sync.CustomerLookup(phone="+14165550123"))["id"] == 3
    assert sync.match_customer(records, sync.CustomerLookup(phone="+14165550999"))["id"] == 1
    assert sync.match_customer(records, sync.CustomerLookup(phone="+14165550000")) is None
    assert sync.match_customer(records, sync.CustomerLookup(email="ada@example.com"))["id"] == 1
    assert sync.match_customer(records, sync.CustomerLookup(name="ada lovelace"))["id"] == 1
    assert sync.match_customer(records, sync.CustomerLookup(name="ACME"))["id"] == 3
    # A phone that matches nobody is not then matched by a name.
    assert sync.match_customer(records, sync.CustomerLookup(phone="+19995550000",
                                                            name="Ada Lovelace")) is None


def test_a_new_customer_has_a_name_syncro_accepts() -> None:
    by_phone = sync.new_customer(sync.CustomerLookup(phone="+14165550123"), "x", "n")
    assert by_phone == {"notes": "n", "business_name": "+14165550123",
                        "mobile": "+14165550123", "phone": "+14165550123"}
    named = sync.new_customer(sync.CustomerLookup(name="Ada", email="a@b.co"), "x", "n")
    assert named == {"notes": "n", "firstname": "Ada", "lastname": "-", "email": "a@b.co"}


def test_subject_and_comment_from_the_message() -> None:
    who = Sender(id="+1416", name="Ada")
    assert sync.ticket_subject(TextMessage(text="\n  Printer jam \nsecond line"), who) \
        == "Printer jam"
    long = sync.ticket_subject(TextMessage(text="x" * 200), who)
    assert len(long) == sync.SUBJECT_MAX and long.endswith("…")
    image = ImageMessage(url="https://m.example/1.jpg")
    assert sync.ticket_subject(image, who) == "Image from Ada"
    assert sync.comment_body(image) == "https://m.example/1.jpg"
    doc = FileMessage(url="https://m.example/f.pdf", name="invoice.pdf")
    assert sync.comment_body(doc) == "invoice.pdf\nhttps://m.example/f.pdf"
    assert sync.comment_subject("TwilioSMS", Sender(id="+1416")) == "SMS from +1416"
    assert sync.ticket_fields(5, "S", "New", None) == {"customer_id": 5, "subject": "S",
                                                       "status": "New"}


def test_reopen_picks_the_latest_ticket_the_hub_wrote_on() -> None:
    tickets = [
        {"id": 10, "status": "Resolved", "comments": [comment(11, HUB)]},
        {"id": 30, "status": "New", "comments": [comment(31, "written by a tech")]},
        {"id": 20, "status": "Resolved", "comments": [comment(21, HUB), comment(22, "ok")]},
    ]
    picked = sync.pick_reopen(tickets)
    assert picked is not None and picked["id"] == 20
    assert sync.needs_reopening(picked)
    assert sync.pick_reopen([tickets[1]]) is None
    assert sync.hub_ticket(tickets[0]) and not sync.hub_ticket(tickets[1])
    assert not sync.hub_ticket({"id": 1, "comments": "nope"})


# ---- Syncro → the conversation -----------------------------------------------------------


def test_only_new_public_technician_comments_are_relayed() -> None:
    ticket = {"id": 5, "comments": [
        comment(100, HUB, tech="Hub"),  # the hub's own: never echoed
        comment(101, "Have you tried turning it off?"),
        comment(102, "Customer seems annoyed", hidden=True),  # never leaves Syncro
        comment(103, "   "),
        comment(104, "On my way"),
    ]}
    got = sync.new_technician_comments(ticket, 0)
    assert [c.id for c in got] == [101, 104]
    assert got[0] == sync.Comment(id=101, body="Have you tried turning it off?", tech="Tina",
                                  user_id="7")
    # Once relayed up to 101, only 104 is new; after everything, nothing.
    assert [c.id for c in sync.new_technician_comments(ticket, 101)] == [104]
    assert sync.cursor_after(ticket, 0) == 104
    assert sync.new_technician_comments(ticket, sync.cursor_after(ticket, 0)) == []


def test_webhooks_in_any_order_relay_each_comment_once() -> None:
    early = {"id": 5, "comments": [comment(1, HUB), comment(2, "first")]}
    late = {"id": 5, "comments": [comment(1, HUB), comment(2, "first"), comment(3, "second")]}
    cursor = 0
    relayed: list[int] = []
    for hook in (late, early, late):  # the newer one first, then the older, then again
        relayed += [c.id for c in sync.new_technician_comments(hook, cursor)]
        cursor = sync.cursor_after(hook, cursor)
    assert relayed == [2, 3]


def test_agent_activities_have_ids_stable_per_comment() -> None:
    comments = sync.new_technician_comments({"id": 5, "comments": [comment(7, "Hi")]}, 0)
    args: dict[str, Any] = {"hub_id": "h", "integration_id": "psa", "conversation_id": "c1",
                            "ticket_id": "5"}
    (a,) = sync.agent_activities(comments, now_ms=1, **args)
    (b,) = sync.agent_activities(comments, now_ms=2, **args)
    assert a.activity_id == b.activity_id and a.type == "message:agent"
    assert a.message == TextMessage(text="Hi") and a.sender.name == "Tina"
    assert a.conversation_id == "c1" and a.metadata["syncroCommentId"] == "7"
    (other,) = sync.agent_activities(comments, now_ms=1, **{**args, "ticket_id": "6"})
    assert other.activity_id != a.activity_id


def test_resolution_closes_once_per_conversation_opening() -> None:
    assert sync.is_resolution("syncro:ticket.resolved", {})
    assert sync.is_resolution("syncro:ticket.updated", {"status": "Resolved"})
    assert not sync.is_resolution("syncro:ticket.updated", {"status": "In Progress"})
    kw: dict[str, Any] = {"hub_id": "h", "integration_id": "psa", "conversation_id": "c1",
                          "ticket": {"number": 1042, "status": "Resolved"}, "ticket_id": "5"}
    a = sync.closed_activity(opened_at=100, now_ms=1, **kw)
    assert a.type == CONVERSATION_CLOSED and a.event is not None
    assert a.event.data == {"reason": "syncro_ticket_resolved", "ticketId": "5",
                            "ticketNumber": "1042", "status": "Resolved"}
    assert sync.closed_activity(opened_at=100, now_ms=2, **kw).activity_id == a.activity_id
    assert sync.closed_activity(opened_at=200, now_ms=1, **kw).activity_id != a.activity_id


def test_a_customer_writing_after_the_close_opens_a_new_conversation() -> None:
    conv = ConversationRecord(conversation_id="c1", hub_id="h", customer_integration_id="s",
                              customer_id="+1", created_at=1)
    assert not reopened_by(conv, "message:customer")
    closed = ConversationRecord(conversation_id="c1", hub_id="h", customer_integration_id="s",
                                customer_id="+1", created_at=1, closed_at=2)
    assert reopened_by(closed, "message:customer")
    assert not reopened_by(closed, "message:agent")  # what is still on its way


def test_cursor_parsing_never_fails() -> None:
    assert sync.parse_cursor("42") == 42
    assert sync.parse_cursor(None) == 0 and sync.parse_cursor("x") == 0
