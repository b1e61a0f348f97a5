"""Messenger's pure half: handshake, signatures, webhook parsing, Send API bodies."""

from __future__ import annotations

import hashlib
import hmac

import msgspec
import orjson
import pytest

from switchboard.errors import BadRequest, Forbidden, Unauthorized
from switchboard.ids import activity_id, customer_conversation_id
from switchboard.model import (
    Button,
    Card,
    CardMessage,
    CarouselMessage,
    FileMessage,
    ImageMessage,
    QuickReply,
    TextMessage,
    activity_decoder,
    activity_encoder,
)
from switchboard.providers import messenger_events, messenger_send, messenger_verification
from switchboard.retry import Outcome
from tests.fakes.messenger import (
    echo_event,
    entry,
    image_event,
    postback_event,
    read_event,
    text_event,
    webhook,
)

SECRET = "app-secret-1"


def _sig(secret: str, body: bytes) -> str:
    # Independent of the module under test.
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---- handshake --------------------------------------------------------------------------


def test_handshake_echoes_the_challenge() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"}
    assert messenger_verification.handshake(params, "tok") == "1158201444"


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": "tok", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.verify_token": "tok"},
    {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "x" * 1000},
])
def test_handshake_refuses(params: dict[str, str]) -> None:
    with pytest.raises(Forbidden):
        messenger_verification.handshake(params, "tok")


def test_handshake_with_no_configured_token_refuses_an_empty_one() -> None:
    with pytest.raises(Forbidden):
        messenger_verification.handshake(
            {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}, "")


# ---- signatures -------------------------------------------------------------------------


def test_signature_matches_an_independent_hmac() -> None:
    body = webhook(entry("p1", text_event("u1", "p1", "hi")))
    assert messenger_verification.sign(SECRET, body) == _sig(SECRET, body)
    assert messenger_verification.verify_signature(_sig(SECRET, body), body, [SECRET]) == SECRET
    assert messenger_verification.verify_signature(
        _sig(SECRET, body).upper().replace("SHA256", "sha256"), body, [SECRET]) == SECRET


def test_signature_names_the_secret_that_signed() -> None:
    body = b'{"object":"page","entry":[]}'
    assert messenger_verification.verify_signature(_sig("b", body), body, ["a", "b", "c"]) == "b"


@pytest.mark.parametrize("header", [None, ""])
def test_missing_signature_is_unauthorized(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        messenger_verification.verify_signature(header, b"{}", [SECRET])


@pytest.mark.parametrize("header", ["sha1=abcd", "sha256=", "abcdef", "sha256"])
def test_malformed_signature_is_unauthorized(header: str) -> None:
    with pytest.raises(Unauthorized):
        messenger_verification.verify_signature(header, b"{}", [SECRET])


def test_wrong_signature_is_unauthorized() -> None:
    body = b'{"object":"page"}'
    with pytest.raises(Unauthorized, match="does not match"):
        messenger_verification.verify_signature(_sig("other", body), body, [SECRET])
    with pytest.raises(Unauthorized):  # body changed after signing
        messenger_verification.verify_signature(_sig(SECRET, body), body + b" ", [SECRET])
    with pytest.raises(Unauthorized):  # nothing configured verifies nothing
        messenger_verification.verify_signature(_sig("", body), body, [])
    with pytest.raises(Unauthorized):
        messenger_verification.verify_signature(_sig("", body), body, [""])
    with pytest.raises(Unauthorized):
        messenger_verification.verify_signature("sha256=zz\u00e9", body, [SECRET])


def test_appsecret_proof() -> None:
    want = hmac.new(b"s", b"EAAtoken", hashlib.sha256).hexdigest()
    assert messenger_send.appsecret_proof("s", "EAAtoken") == want


def test_page_ids_reads_only_structure() -> None:
    body = webhook(entry("p1", text_event("u", "p1", "a")), entry("p2"), entry("p1"))
    assert messenger_verification.page_ids(body) == ["p1", "p2"]
    assert messenger_verification.page_ids(b'{"entry":[{"id":123}]}') == ["123"]
    assert messenger_verification.page_ids(b"not json") == []
    assert messenger_verification.page_ids(b'{"entry":"x"}') == []


# ---- parsing ----------------------------------------------------------------------------


def test_text_message() -> None:
    events, skipped = messenger_events.parse_webhook(
        webhook(entry("p1", text_event("u1", "p1", "hello", mid="m_1"))))
    assert skipped == []
    [ev] = events
    assert ev.page_id == "p1" and ev.psid == "u1" and ev.type == "message:customer"
    assert ev.message == TextMessage(text="hello")
    assert ev.provider_id == "mid:m_1"
    assert ev.metadata == {"mid": "m_1"}


def test_quick_reply_payload_is_kept() -> None:
    ev_body = text_event("u1", "p1", "Yes", mid="m_q")
    ev_body["message"]["quick_reply"] = {"payload": "YES_PAYLOAD"}
    [ev], _ = messenger_events.parse_webhook(webhook(entry("p1", ev_body)))
    assert ev.metadata["quickReplyPayload"] == "YES_PAYLOAD"


def test_attachments() -> None:
    msg = {"mid": "m_a", "text": "look", "attachments": [
        {"type": "image", "payload": {"url": "https://cdn.fb/i.jpg"}},
        {"type": "video", "payload": {"url": "https://cdn.fb/v.mp4"}},
        {"type": "audio", "payload": {"url": "https://cdn.fb/a.mp4"}},
        {"type": "file", "payload": {"url": "https://cdn.fb/f.pdf"}},
        {"type": "image", "payload": {"url": "https://cdn.fb/s.png",
                                      "sticker_id": 369239263222822}},
        {"type": "fallback", "title": "A link", "url": "https://example.com", "payload": None},
        {"type": "location", "payload": {"coordinates": {"lat": 1.5, "long": 2.5}}},
        {"type": "template", "payload": {"template_type": "generic", "elements": []}},
        {"type": "image", "payload": {"url": "ftp://nope"}},
    ]}
    events, skipped = messenger_events.parse_webhook(webhook(entry("p1", {
        "sender": {"id": "u1"}, "recipient": {"id": "p1"}, "timestamp": 1, "message": msg})))
    assert skipped == []
    assert [e.message for e in events] == [
        TextMessage(text="look"),
        ImageMessage(url="https://cdn.fb/i.jpg"),
        FileMessage(url="https://cdn.fb/v.mp4", mime_type="video/*"),
        FileMessage(url="https://cdn.fb/a.mp4", mime_type="audio/*"),
        FileMessage(url="https://cdn.fb/f.pdf"),
        ImageMessage(url="https://cdn.fb/s.png"),
        TextMessage(text="A link https://example.com"),
        TextMessage(text="Location: 1.5, 2.5"),
    ]
    ids = [e.provider_id for e in events]
    assert ids == ["mid:m_a", "mid:m_a#0", "mid:m_a#1", "mid:m_a#2", "mid:m_a#3", "mid:m_a#4",
                   "mid:m_a#5", "mid:m_a#6"]
    # Without text, the first attachment keeps the bare mid.
    [only], _ = messenger_events.parse_webhook(webhook(entry("p1", image_event("u", "p1", "https://x/i",
                                                                               mid="m_i"))))
    assert only.provider_id == "mid:m_i"


def test_echo_postback_read_and_unknown() -> None:
    body = webhook(entry(
        "p1",
        echo_event("p1", "u1", "our own reply", app_id="42"),
        postback_event("u1", "p1", "GET_STARTED", "Get Started", mid="m_pb"),
        read_event("u1", "p1", 1458668856253),
        {"sender": {"id": "u1"}, "recipient": {"id": "p1"}, "timestamp": 5,
         "delivery": {"mids": ["m_x"], "watermark": 5}},
        {"sender": "not an object"},
    ))
    events, skipped = messenger_events.parse_webhook(body)
    assert [s.reason for s in skipped] == ["echo", "unsupported", "malformed"]
    pb, rd = events
    assert pb.type == "event:postback" and pb.provider_id == "postback:m_pb"
    assert pb.event is not None and pb.event.name == "postback"
    assert pb.event.data == {"payload": "GET_STARTED", "title": "Get Started"}
    assert rd.type == "event:seen" and rd.provider_id == "read:u1:1458668856253"
    assert rd.event is not None and rd.event.data == {"watermark": 1458668856253}


def test_postback_without_mid_uses_payload_and_timestamp() -> None:
    ev_body = postback_event("u1", "p1", "BUY", "Buy")
    del ev_body["postback"]["mid"]
    ev_body["timestamp"] = 1700000000000
    [ev], _ = messenger_events.parse_webhook(webhook(entry("p1", ev_body)))
    assert ev.provider_id == "postback:u1:1700000000000:BUY"


def test_batches_keep_order_and_pages() -> None:
    body = webhook(entry("p1", text_event("u1", "p1", "a"), text_event("u1", "p1", "b")),
                   entry("p2", text_event("u2", "p2", "c")))
    events, _ = messenger_events.parse_webhook(body)
    assert [(e.page_id, e.psid) for e in events] == [("p1", "u1"), ("p1", "u1"), ("p2", "u2")]
    assert [e.message.text for e in events if isinstance(e.message, TextMessage)] == \
        ["a", "b", "c"]


def test_other_objects_and_bad_bodies() -> None:
    events, skipped = messenger_events.parse_webhook(
        orjson.dumps({"object": "instagram", "entry": []}))
    assert events == [] and skipped[0].reason == "object:instagram"
    with pytest.raises(BadRequest):
        messenger_events.parse_webhook(b"{nope")
    with pytest.raises(BadRequest):
        messenger_events.parse_webhook(b'{"object":"page","entry":"x"}')


def test_to_activity_is_stable_and_valid() -> None:
    [ev], _ = messenger_events.parse_webhook(
        webhook(entry("p1", text_event("u1", "p1", "hi", mid="m_1"))))
    a1 = messenger_events.to_activity(ev, integration_id="i1", hub_id="h1", now_ms=1)
    a2 = messenger_events.to_activity(ev, integration_id="i1", hub_id="h1", now_ms=2)
    assert a1.activity_id == a2.activity_id == activity_id("i1", "mid:m_1")
    assert a1.conversation_id == customer_conversation_id("i1", "u1")
    assert a1.channel_id == "Messenger" and a1.sender.id == "u1"
    assert a1.metadata == {"mid": "m_1", "pageId": "p1"}
    # What goes to Kafka decodes (validated) on the other side.
    assert activity_decoder.decode(activity_encoder.encode(a1)) == a1


# ---- outbound -----------------------------------------------------------------------------


def _messages(bodies: list[dict]) -> list[dict]:
    for b in bodies:
        assert b["recipient"] == {"id": "psid"} and b["messaging_type"] == "RESPONSE"
    return [b["message"] for b in bodies]


def test_text_and_quick_replies() -> None:
    msg = TextMessage(text="Pick one", quick_replies=[
        QuickReply(title="Yes"), QuickReply(title="A very long quick reply title", payload="P")])
    [m] = _messages(messenger_send.send_bodies(msg, "psid"))
    assert m == {"text": "Pick one", "quick_replies": [
        {"content_type": "text", "title": "Yes", "payload": "Yes"},
        {"content_type": "text", "title": "A very long quick r…", "payload": "P"}]}
    many = TextMessage(text="x", quick_replies=[QuickReply(title=str(i)) for i in range(20)])
    assert len(_messages(messenger_send.send_bodies(many, "psid"))[0]["quick_replies"]) == 13
    assert messenger_send.send_bodies(TextMessage(text="  "), "psid") == []


def test_long_text_is_split_at_words() -> None:
    text = " ".join(f"word{i}" for i in range(1000))  # ~6.9k characters
    msgs = _messages(messenger_send.send_bodies(TextMessage(text=text, quick_replies=[
        QuickReply(title="ok")]), "psid"))
    assert len(msgs) == 4
    assert all(len(m["text"]) <= 2000 for m in msgs)
    assert " ".join(m["text"] for m in msgs) == text
    assert "quick_replies" in msgs[-1] and all("quick_replies" not in m for m in msgs[:-1])


def test_split_counts_utf16_units() -> None:
    parts = messenger_send.split_text("😀" * 1500)  # 3000 UTF-16 units, no spaces
    assert [len(p) for p in parts] == [1000, 500]
    assert messenger_send.split_text("short") == ["short"]
    assert messenger_send.split_text("") == [""]


def test_media() -> None:
    [img, caption] = _messages(messenger_send.send_bodies(
        ImageMessage(url="https://x/i.png", caption="look"), "psid"))
    assert img == {"attachment": {"type": "image", "payload": {"url": "https://x/i.png",
                                                                "is_reusable": True}}}
    assert caption == {"text": "look"}
    kinds = [_messages(messenger_send.send_bodies(FileMessage(url="https://x/f", mime_type=m),
                                                  "psid"))[0]
             ["attachment"]["type"] for m in (None, "application/pdf", "video/mp4",
                                              "audio/mpeg", "image/png")]
    assert kinds == ["file", "file", "video", "audio", "image"]


def test_card_and_carousel() -> None:
    card = CardMessage(title="Shoes", subtitle="Red", image_url="https://x/s.png", buttons=[
        Button(title="Buy", payload="BUY"), Button(title="Site", type="url", url="https://x"),
        Button(title="b3"), Button(title="b4")])
    [m] = _messages(messenger_send.send_bodies(card, "psid"))
    assert m == {"attachment": {"type": "template", "payload": {
        "template_type": "generic", "elements": [{
            "title": "Shoes", "subtitle": "Red", "image_url": "https://x/s.png", "buttons": [
                {"type": "postback", "title": "Buy", "payload": "BUY"},
                {"type": "web_url", "url": "https://x", "title": "Site"},
                {"type": "postback", "title": "b3", "payload": "b3"}]}]}}}
    carousel = CarouselMessage(cards=[Card(title="A", subtitle="a"),
                                      Card(title="B", image_url="https://x/b")])
    [c] = _messages(messenger_send.send_bodies(carousel, "psid"))
    assert [e["title"] for e in c["attachment"]["payload"]["elements"]] == ["A", "B"]
    # Title-only cards cannot be a template: they become readable text.
    [t] = _messages(messenger_send.send_bodies(CardMessage(title="Just a title"), "psid"))
    assert t == {"text": "Just a title"}
    [t2] = _messages(messenger_send.send_bodies(CarouselMessage(cards=[
        Card(title="A", subtitle="a"), Card(title="B", buttons=[])]), "psid"))
    assert t2["text"] == "A\na\n\nB"


def test_metadata_marks_our_sends() -> None:
    [m] = _messages(messenger_send.send_bodies(TextMessage(text="x"), "psid",
                                               metadata="switchboard:1"))
    assert m["metadata"] == "switchboard:1"


def test_bodies_are_json() -> None:
    for b in messenger_send.send_bodies(CardMessage(title="t", subtitle="s"), "psid"):
        msgspec.json.encode(b)


# ---- Graph answers --------------------------------------------------------------------------


def _err(code: int, subcode: int | None = None) -> bytes:
    e: dict = {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "x"}
    if subcode:
        e["error_subcode"] = subcode
    return orjson.dumps({"error": e})


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), [
    (200, b'{"recipient_id":"1","message_id":"m"}', Outcome.DELIVERED, "sent"),
    (429, b"", Outcome.RETRY, "http_429"),
    (500, _err(2), Outcome.RETRY, "graph_2"),
    (503, b"<html>", Outcome.RETRY, "http_503"),
    (400, _err(613), Outcome.RETRY, "graph_613"),
    (403, _err(4), Outcome.RETRY, "graph_4"),
    (400, _err(17), Outcome.RETRY, "graph_17"),
    (400, _err(32), Outcome.RETRY, "graph_32"),
    (400, _err(1200), Outcome.RETRY, "graph_1200"),
    (400, _err(100, 2018001), Outcome.PERMANENT, "graph_100_2018001"),
    (400, _err(551, 1545041), Outcome.PERMANENT, "graph_551_1545041"),
    (400, _err(190), Outcome.PERMANENT, "graph_190"),
    (400, b"", Outcome.PERMANENT, "http_400"),
    (404, b"nope", Outcome.PERMANENT, "http_404"),
])
def test_classify_send(status: int, body: bytes, outcome: Outcome, reason: str) -> None:
    attempt = messenger_send.classify_send(status, body, retry_after=3.0)
    assert attempt.outcome is outcome and attempt.reason == reason
    assert attempt.status == status


def test_graph_error_message() -> None:
    body = orjson.dumps({"error": {"message": "Invalid OAuth access token.",
                                   "type": "OAuthException", "code": 190}})
    assert messenger_send.graph_error_message(400, body) == "Invalid OAuth access token."
    assert messenger_send.graph_error_message(502, b"<html>") == "the Graph API answered HTTP 502"
    assert messenger_send.graph_url("https://graph.facebook.com/", "v19.0", "/me/messages") == \
        "https://graph.facebook.com/v19.0/me/messages"
