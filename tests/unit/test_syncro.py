"""Syncro pure core: pagination, errors, webhooks, idempotency (the request budget:
`test_syncro_budget`)."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import orjson
import pytest

from switchboard import channels
from switchboard.channels import SYNCRO_EVENTS, SyncroConfig, parse_config
from switchboard.errors import BadRequest
from switchboard.model import CHANNEL_CODES, Activity, ChannelId, activity_decoder
from switchboard.providers import syncro, syncro_webhooks
from switchboard.providers import syncro_idempotency as idem
from switchboard.routing import matches_filter
from tests.fakes.syncro import FakeSyncro

# ---- API answers ------------------------------------------------------------------------


def test_base_url_from_the_template() -> None:
    assert syncro.api_base("https://{subdomain}.syncromsp.com/api/v1", "acme") == \
        "https://acme.syncromsp.com/api/v1"
    assert syncro.api_base("http://127.0.0.1:9/{subdomain}/api/v1/", "x") == \
        "http://127.0.0.1:9/x/api/v1"
    assert syncro.auth_headers("t0k")["authorization"] == "Bearer t0k"


def test_wrapped_records_and_pages() -> None:
    body = orjson.dumps({"customers": [{"id": 1}, {"id": 2}],
                         "meta": {"total_pages": 3, "total_entries": 52, "page": 1}})
    page = syncro.unwrap_page(body, "customers")
    assert [r["id"] for r in page.records] == [1, 2]
    assert syncro.next_page(page, 1) == 2
    last = syncro.unwrap_page(orjson.dumps({"customers": [{"id": 3}],
                                            "meta": {"total_pages": 3, "page": 3}}), "customers")
    assert syncro.next_page(last, 3) is None
    # No meta: one page. An empty page ends a listing that shrank. A page cap holds.
    single = syncro.unwrap_page(b'{"customers": [{"id": 1}]}', "customers")
    assert syncro.next_page(single, 1) is None
    empty = syncro.unwrap_page(b'{"customers": [], "meta": {"total_pages": 9, "page": 2}}',
                               "customers", 2)
    assert syncro.next_page(empty, 2) is None
    assert syncro.next_page(page, 5, max_pages=5) is None
    assert syncro.page_params({"customer_id": "4"}, 2) == {"customer_id": "4", "page": "2"}
    assert syncro.page_params({"page": "9"}, 1) == {}
    assert syncro.unwrap_one(b'{"customer": {"id": 5}}', "customer") == {"id": 5}
    for bad in (b'{"customer": 5}', b"[]", b"nope", b"[" * 100 + b"]" * 100):
        with pytest.raises(BadRequest):
            syncro.unwrap_one(bad, "customer")
    for bad in (b'{"customers": {}}', b'{"customers": [1]}'):
        with pytest.raises(BadRequest):
            syncro.unwrap_page(bad, "customers")


def test_pages_of_the_fake_are_followed() -> None:
    # The fake's own page maker and the parser agree: every record once, in order.
    records = [{"id": i} for i in range(60)]
    got, number, read = [], 1, 0
    while number is not None:
        start = (number - 1) * 25
        body = orjson.dumps({"customers": records[start:start + 25],
                             "meta": {"total_pages": 3, "page": number}})
        page = syncro.unwrap_page(body, "customers", number)
        read += 1
        got += page.records
        number = syncro.next_page(page, read)
    assert got == records


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error": "Not authorized"}', "Not authorized"),
    (b'{"success": false, "message": ["Subject can\'t be blank"]}', "Subject can't be blank"),
    (b'{"errors": {"email": ["is invalid"]}}', "email is invalid"),
    (b"<html>", ""),
])
def test_errors_in_syncros_words(body: bytes, message: str) -> None:
    err = syncro.parse_error(401, body)
    assert err.message == message
    assert err.describe().startswith("Syncro: ")


def test_me() -> None:
    assert syncro.parse_me(b'{"user_id": 7, "user_name": "Tina"}') == "Tina"
    assert syncro.parse_me(b'{"user_id": 7}') == "7"


# ---- configuration ------------------------------------------------------------------------


def test_configuration() -> None:
    assert CHANNEL_CODES[2001] is ChannelId.SYNCRO
    cfg = parse_config(ChannelId.SYNCRO, {"subdomain": "acme", "apiToken": "T"})
    assert isinstance(cfg, SyncroConfig)
    assert cfg.events == ["syncro:*"] and cfg.comment_hidden is False
    assert channels.integration_type_of(cfg).value == "Agent"
    assert SyncroConfig.SECRET_FIELDS == ("api_token", "inbound_secret")
    for bad, field in (({"subdomain": "a b", "apiToken": "T"}, "configuration.subdomain"),
                       ({"subdomain": "acme"}, "configuration"),
                       ({"subdomain": "acme", "apiToken": "T", "events": ["ticket"]},
                        "configuration.events")):
        with pytest.raises(BadRequest) as e:
            parse_config(ChannelId.SYNCRO, bad)
        assert e.value.field == field
    # System integrations may filter Syncro's events.
    parse_config(ChannelId.SYSTEM, {"webhookUrl": "https://x.example/", "events": [
        "syncro:*", "syncro:ticket.*", *SYNCRO_EVENTS]})


def test_filters() -> None:
    assert matches_filter("syncro:ticket.updated", ["syncro:*"])
    assert matches_filter("syncro:ticket.updated", ["syncro:ticket.*"])
    assert not matches_filter("syncro:invoice.created", ["syncro:ticket.*"])
    assert not matches_filter("syncro:ticket.updated", ["event:*"])
    assert matches_filter("syncro:ticket.resolved", ["*"])


# ---- webhooks ----------------------------------------------------------------------------

TICKET = {"id": 31, "number": 1031, "subject": "Printer", "status": "In Progress",
          "customer_id": 4, "updated_at": "2026-12-02T10:00:00.000-00:00",
          "comments": [{"id": 1, "body": "jammed", "hidden": False}]}
RECORDS: dict[str, dict[str, Any]] = {
    "customer.created": {"id": 4, "firstname": "Ada", "created_at": "2026-12-01T09:00:00Z"},
    "ticket.created": {**TICKET, "status": "New"},
    "ticket.updated": TICKET,
    "ticket.comment": TICKET,
    "ticket.resolved": {**TICKET, "status": "Resolved"},
    "invoice.created": {"id": 8, "number": "1008", "total": "99.00", "customer_id": 4},
    "payment.created": {"id": 9, "payment_amount": 99.0, "invoice_ids": [8]},
    "rmm_alert.created": {"id": 12, "description": "Disk low", "customer_id": 4,
                          "properties": {"drive": "C:", "free": {"gb": 1}}},
}
EXPECTED = {
    "customer.created": "syncro:customer.created", "ticket.created": "syncro:ticket.created",
    "ticket.updated": "syncro:ticket.updated", "ticket.comment": "syncro:ticket.updated",
    "ticket.resolved": "syncro:ticket.resolved", "invoice.created": "syncro:invoice.created",
    "payment.created": "syncro:payment.created",
    "rmm_alert.created": "syncro:rmm_alert.created",
}


def activity_of(trigger: str, record: dict[str, Any] | None = None) -> Activity | None:
    body = orjson.dumps(FakeSyncro.webhook_body("acme", trigger, record or RECORDS[trigger]))
    return syncro_webhooks.normalize(syncro_webhooks.parse_webhook(body), hub_id="h",
                                     integration_id="i", subdomain="acme", now_ms=1)


@pytest.mark.parametrize("trigger", sorted(EXPECTED))
def test_every_trigger_becomes_its_event(trigger: str) -> None:
    activity = activity_of(trigger)
    assert activity is not None
    assert activity.type == EXPECTED[trigger]
    assert activity.event is not None
    assert activity.event.data["record"] == RECORDS[trigger]  # nested, as Syncro sent it
    assert activity.event.data["id"] == str(RECORDS[trigger]["id"])
    # The router reads back what the ingress writes.
    assert activity_decoder.decode(msgspec.json.encode(activity)) == activity


def test_the_headline_decides_when_the_link_says_nothing() -> None:
    for text, expected in (("A Ticket was created", "syncro:ticket.created"),
                           ("New comment on Ticket #12 by Customer Ada", "syncro:ticket.updated"),
                           ("Payment added to Invoice 12", "syncro:payment.created"),
                           ("RMM Alert: disk low for customer Ada", "syncro:rmm_alert.created"),
                           ("A Customer was created", "syncro:customer.created"),
                           ("Something else entirely", None)):
        hook = syncro_webhooks.SyncroWebhook(attributes={"id": 1}, text=text)
        assert syncro_webhooks.event_type(hook) == expected, text


def test_ids_are_stable_per_record_version() -> None:
    a, b = activity_of("ticket.updated"), activity_of("ticket.updated")
    assert a is not None and b is not None and a.activity_id == b.activity_id
    later = activity_of("ticket.updated", {**TICKET, "updated_at": "2026-12-02T10:05:00Z"})
    assert later is not None and later.activity_id != a.activity_id
    assert later.conversation_id == a.conversation_id  # one ticket, one lane
    resolved = activity_of("ticket.resolved")
    assert resolved is not None and resolved.activity_id != a.activity_id


@pytest.mark.parametrize("body", [
    b"", b"[]", b'{"text": "A Ticket was created"}', b'{"attributes": []}',
    b'{"attributes": {"a":' * 70 + b"1" + b"}" * 70 + b"}",
])
def test_bad_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequest):
        syncro_webhooks.parse_webhook(body)


def test_a_record_without_id_is_refused() -> None:
    hook = syncro_webhooks.parse_webhook(
        orjson.dumps({"text": "A Ticket was created", "attributes": {"subject": "x"}}))
    with pytest.raises(BadRequest):
        syncro_webhooks.normalize(hook, hub_id="h", integration_id="i", subdomain="a",
                                  now_ms=1)
    unknown = syncro_webhooks.parse_webhook(b'{"text": "Estimate sent", "attributes": {}}')
    assert syncro_webhooks.normalize(unknown, hub_id="h", integration_id="i",
                                     subdomain="a", now_ms=1) is None


# ---- idempotency ---------------------------------------------------------------------------


def test_markers() -> None:
    token = idem.token_for("delivery-1")
    assert token == idem.token_for("delivery-1") != idem.token_for("delivery-2")
    assert len(token) == 16
    body = idem.mark("hello", token)
    assert body.endswith(idem.marker(token)) and idem.mark(body, token) == body
    comments = [{"body": "other"}, {"body": body, "id": 5}]
    assert idem.find_marked(comments, token) == {"body": body, "id": 5}
    assert idem.find_marked(comments, idem.token_for("x")) is None
    tickets = [{"id": 1, "comments": [{"body": "a"}]}, {"id": 2, "comments": [{"body": body}]}]
    found = idem.find_marked(tickets, token)
    assert found is not None and found["id"] == 2


def test_classify() -> None:
    assert idem.classify(201, sent=True) is idem.PostResult.CREATED
    assert idem.classify(None, sent=True) is idem.PostResult.AMBIGUOUS
    assert idem.classify(None, sent=False) is idem.PostResult.NOT_SENT
    assert idem.classify(502, sent=True) is idem.PostResult.AMBIGUOUS
    assert idem.classify(429, sent=True) is idem.PostResult.NOT_SENT
    assert idem.classify(422, sent=True) is idem.PostResult.REFUSED


def test_decisions() -> None:
    s = idem.PostState(max_posts=2)
    assert idem.decide(s) is idem.Decision.POST
    # A timeout: look before posting again; found → done, no second POST.
    s = idem.after_post(s, idem.PostResult.AMBIGUOUS)
    assert idem.decide(s) is idem.Decision.LOOK
    assert idem.decide(idem.after_look(s, True)) is idem.Decision.DONE
    # Not found: the earlier try wrote nothing, so post again.
    s = idem.after_look(s, False)
    assert idem.decide(s) is idem.Decision.POST
    s = idem.after_post(s, idem.PostResult.NOT_SENT)
    assert idem.decide(s) is idem.Decision.FAIL  # out of tries, never looked needlessly
    assert idem.decide(idem.after_post(idem.PostState(), idem.PostResult.CREATED)) is \
        idem.Decision.DONE
    assert idem.decide(idem.after_post(idem.PostState(), idem.PostResult.REFUSED)) is \
        idem.Decision.FAIL
    # The last try ambiguous: still look (it may have written).
    last = idem.after_post(idem.PostState(max_posts=1), idem.PostResult.AMBIGUOUS)
    assert idem.decide(last) is idem.Decision.LOOK
    assert idem.decide(idem.after_look(last, False)) is idem.Decision.FAIL


# ---- hostile input and logs ---------------------------------------------------------------


def test_damaged_webhooks_are_ours_to_refuse() -> None:
    rng = random.Random(10)
    valid = orjson.dumps(FakeSyncro.webhook_body("acme", "ticket.updated", TICKET))
    for _ in range(2000):
        body = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            roll = rng.random()
            at = rng.randrange(len(body))
            if roll < 0.4:
                body[at] = rng.randrange(256)
            elif roll < 0.7:
                del body[at:at + rng.randrange(1, 20)]
            else:
                body[at:at] = rng.choice([b"[", b"{", b'"', b"\xff", b"1e999", b"\\ud800"])
        try:
            hook = syncro_webhooks.parse_webhook(bytes(body))
            syncro_webhooks.normalize(hook, hub_id="h", integration_id="i", subdomain="a",
                                      now_ms=1)
        except BadRequest:
            pass


def test_an_inbound_secret_never_reaches_a_log_line() -> None:
    from switchboard.logscrub import scrub

    line = '127.0.0.1:5 - "POST /ingress/0b1c-2/Zm9v_bar-9 HTTP/1.1" 200'
    assert scrub(line) == '127.0.0.1:5 - "POST /ingress/0b1c-2/[redacted] HTTP/1.1" 200'
    assert scrub("https://h.example/sb/ingress/i/s3cret?a=1") == \
        "https://h.example/sb/ingress/i/[redacted]?a=[redacted]"
    # Paths without a secret are left alone.
    for plain in ("POST /ingress/0b1c-2 HTTP/1.1", "POST /ingress/slack", "/ingress/meta"):
        assert scrub(plain) == plain
