"""WebChat's pure half: origin rules, session tokens, frames and normalization."""

from __future__ import annotations

import json

import msgspec
import pytest

from switchboard.channels import WebChatConfig, parse_config
from switchboard.errors import BadRequest
from switchboard.ids import customer_conversation_id
from switchboard.keys import PURPOSE_SECRETS, PURPOSE_SESSIONS, generate_secret_key_b64
from switchboard.model import (
    Activity,
    CardMessage,
    ChannelId,
    Delivery,
    Event,
    Sender,
    TextMessage,
)
from switchboard.providers import webchat as wc
from switchboard.sealer import Sealer

IID = "3f0c8d1e-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def sealer() -> Sealer:
    return Sealer.from_b64(generate_secret_key_b64(), purpose=PURPOSE_SESSIONS)


# ---- origins --------------------------------------------------------------------------


@pytest.mark.parametrize(("origin", "host"), [
    ("https://example.com", "example.com"),
    ("http://LOCALHOST:3000", "localhost"),
    ("https://shop.example.com.", "shop.example.com"),
    ("http://127.0.0.1:8080", "127.0.0.1"),
    ("https://example.com/", "example.com"),
    ("null", None),
    ("", None),
    (None, None),
    ("file://", None),
    ("chrome-extension://abc", None),
    ("https://example.com/path", None),
    ("https://user@example.com", None),
    ("https://example.com:99999", None),
    ("https://", None),
    ("x" * 3000, None),
])
def test_origin_host(origin: str | None, host: str | None) -> None:
    assert wc.origin_host(origin) == host


ALLOWED = ["localhost", "Example.com", "*.shop.test"]


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://localhost", True),
    ("https://localhost:8443", True),
    ("https://example.com", True),
    ("http://EXAMPLE.com:80", True),
    ("https://www.example.com", False),  # no implicit subdomains
    ("https://example.com.evil.test", False),
    ("https://evilexample.com", False),
    ("https://a.shop.test", True),
    ("https://a.b.shop.test", True),
    ("https://shop.test", False),  # "*." is subdomains only
    ("https://xshop.test", False),
    ("https://localhost.evil.test", False),
    ("null", False),
    (None, False),
])
def test_origin_allowed(origin: str | None, ok: bool) -> None:
    assert wc.origin_allowed(origin, ALLOWED) is ok


def test_the_hubs_own_origin_is_allowed_exactly() -> None:
    own = wc.public_origin("https://hub.acme.io/base/")
    assert own == "https://hub.acme.io"
    assert wc.origin_allowed("https://hub.acme.io", ["example.com"], [own])
    assert not wc.origin_allowed("http://hub.acme.io", ["example.com"], [own])
    assert not wc.origin_allowed("https://hub.acme.io:8443", ["example.com"], [own])
    assert wc.public_origin("not a url") is None


@pytest.mark.parametrize("entry", ["localhost", "example.com", "*.example.com", "10.0.0.5",
                                   "a-b.example.co.uk"])
def test_config_accepts_hostnames(entry: str) -> None:
    cfg = parse_config(ChannelId.WEBCHAT, {"allowedOrigins": [entry]})
    assert isinstance(cfg, WebChatConfig) and cfg.allowed_origins == [entry]
    assert cfg.echo is True


@pytest.mark.parametrize("entry", ["https://example.com", "example.com:3000", "*", "",
                                   "example.com/path", "*.*.example.com", "-bad.com",
                                   "exa mple.com"])
def test_config_rejects_what_can_never_match(entry: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_config(ChannelId.WEBCHAT, {"AllowedOrigins": [entry]})
    assert info.value.field is not None
    assert info.value.field.startswith("configuration.allowedOrigins")


# ---- sessions ---------------------------------------------------------------------------


DAY_MS = 24 * 3600 * 1000


def _open(sealer: Sealer, token: str, iid: str = IID, now_ms: int = 1234) -> wc.Session | None:
    return wc.open_session(sealer, token, iid, now_ms=now_ms, max_age_ms=30 * DAY_MS)


def test_session_round_trip(sealer: Sealer) -> None:
    vid = wc.new_visitor_id()
    token = wc.issue_session(sealer, IID, vid, 1234)
    assert token.startswith("sealed:v2:") and vid not in token  # opaque to the browser
    assert _open(sealer, token) == wc.Session(IID, vid, 1234)
    assert wc.issue_session(sealer, IID, vid, 1234) != token  # fresh nonce each time
    assert wc.new_visitor_id() != vid


def test_sessions_expire(sealer: Sealer) -> None:
    token = wc.issue_session(sealer, IID, "wv_someone", 0)
    assert _open(sealer, token, now_ms=30 * DAY_MS) is not None
    assert _open(sealer, token, now_ms=30 * DAY_MS + 1) is None
    # Issued in the future (beyond clock skew): not ours to trust.
    assert _open(sealer, wc.issue_session(sealer, IID, "wv_x", 10 * 60_000), now_ms=0) is None


def test_any_change_to_a_token_is_refused(sealer: Sealer) -> None:
    token = wc.issue_session(sealer, IID, "wv_someone", 1)
    body = token.rindex(":") + 1
    for i in range(body, len(token) - 2):  # the last chars may be base64 padding
        c = token[i]
        flipped = token[:i] + ("A" if c != "A" else "B") + token[i + 1:]
        assert _open(sealer, flipped) is None, i
    assert _open(sealer, token[:-8]) is None
    assert _open(sealer, token + "AAAA") is None


def test_foreign_tokens_are_refused(sealer: Sealer) -> None:
    token = wc.issue_session(sealer, IID, "wv_someone", 1)
    assert _open(sealer, token, "another-integration") is None
    other = Sealer.from_b64(generate_secret_key_b64())
    assert _open(other, token) is None
    # A sealed provider secret is not a session, even for the right deployment: another
    # purpose's key, and (for legacy v1 values, one key for all) the session prefix.
    secrets_sealer = sealer.for_purpose(PURPOSE_SECRETS)
    forged = b'{"i":"x","u":"y","t":1}'
    assert _open(sealer, secrets_sealer.seal(forged, f"webchat-session:{IID}")) is None
    assert _open(sealer, sealer.seal_legacy(forged)) is None
    assert _open(sealer, "x" * 5000) is None
    assert _open(sealer, "") is None


# ---- client frames --------------------------------------------------------------------


def test_parse_client_frames() -> None:
    hello = wc.parse_client_frame('{"type":"hello","session":"s","cursor":"1:5","name":"Ada"}')
    assert hello == wc.HelloFrame(session="s", cursor="1:5", name="Ada")
    assert wc.parse_client_frame('{"type":"hello"}') == wc.HelloFrame()
    msg = wc.parse_client_frame(b'{"type":"message","id":"a1_B-2","text":"hi","payload":"P"}')
    assert msg == wc.MessageFrame(id="a1_B-2", text="hi", payload="P")
    assert wc.parse_client_frame('{"type":"ping"}') == wc.PingFrame()
    # Newer frame types and extra fields are tolerated.
    assert wc.parse_client_frame('{"type":"typing","on":true}') is None
    assert wc.parse_client_frame('{"type":"message","id":"a","text":"x","v":2}') is not None


@pytest.mark.parametrize("raw", [
    "not json", "[]", '{"type":"message","text":"no id"}',
    '{"type":"message","id":"has space","text":"x"}',
    '{"type":"message","id":"' + "a" * 65 + '","text":"x"}',
    '{"type":"message","id":"a","text":""}',
    '{"type":"message","id":"a","text":"' + "x" * (wc.MAX_TEXT_CHARS + 1) + '"}',
    '{"type":"hello","name":"' + "n" * (wc.MAX_NAME_CHARS + 1) + '"}',
    '{"type":"hello","session":5}',
    " " * (wc.MAX_CLIENT_FRAME_CHARS + 1),
])
def test_bad_client_frames(raw: str) -> None:
    with pytest.raises(wc.FrameError):
        wc.parse_client_frame(raw)


def test_a_maximal_escaped_text_fits_in_a_frame() -> None:
    raw = json.dumps({"type": "message", "id": "a", "text": "\u00e9" * wc.MAX_TEXT_CHARS})
    frame = wc.parse_client_frame(raw)
    assert isinstance(frame, wc.MessageFrame) and len(frame.text) == wc.MAX_TEXT_CHARS


# ---- normalization ----------------------------------------------------------------------


def _normalize(visitor: str = "wv_1", cid: str = "m1", text: str = "hello",
               payload: str | None = None, name: str | None = "Ada") -> Activity:
    return wc.normalize_message(hub_id="h1", integration_id=IID, visitor_id=visitor, name=name,
                                frame=wc.MessageFrame(id=cid, text=text, payload=payload),
                                now_ms=42)


def test_normalize_message() -> None:
    a = _normalize(payload="BUY")
    assert a.type == "message:customer"
    assert a.channel_id == "WebChat" and a.hub_id == "h1" and a.integration_id == IID
    assert a.conversation_id == customer_conversation_id(IID, "wv_1")
    assert a.sender == Sender(id="wv_1", name="Ada")
    assert a.message == TextMessage(text="hello")
    assert a.metadata == {"clientMessageId": "m1", "payload": "BUY"}
    assert a.timestamp == 42
    assert _normalize(name=None).sender == Sender(id="wv_1")
    assert _normalize(name="").sender == Sender(id="wv_1")


def test_message_ids_are_stable_per_visitor_and_client_id() -> None:
    assert _normalize().activity_id == _normalize(text="edited").activity_id  # a resend
    assert _normalize().activity_id != _normalize(cid="m2").activity_id
    assert _normalize().activity_id != _normalize(visitor="wv_2").activity_id
    assert _normalize().conversation_id == _normalize(cid="m2").conversation_id
    assert _normalize().conversation_id != _normalize(visitor="wv_2").conversation_id


# ---- server frames ----------------------------------------------------------------------


def _activity(kind: str, **kw: object) -> Activity:
    base: dict[str, object] = dict(
        activity_id="a1", hub_id="h1", integration_id="agent-int", channel_id="Direct",
        type=kind, conversation_id="c1", sender=Sender(id="agent-7", name="Sam"),
        timestamp=5, message=TextMessage(text="hi"), metadata={"slackTs": "1.2"})
    base.update(kw)
    return Activity(**base)  # type: ignore[arg-type]


def test_widget_activity_shows_only_what_a_visitor_may_see() -> None:
    agent = wc.widget_activity(_activity("message:agent"))
    assert agent == wc.WidgetActivity(activity_id="a1", role="agent",
                                      message=TextMessage(text="hi"), timestamp=5,
                                      sender_name="Sam")
    encoded = json.loads(msgspec.json.encode(agent))
    assert encoded == {"activityId": "a1", "role": "agent",
                       "message": {"type": "text", "text": "hi"}, "timestamp": 5,
                       "senderName": "Sam"}
    bot = wc.widget_activity(_activity("message:bot", message=CardMessage(title="T")))
    assert bot is not None and bot.role == "bot" and bot.message == CardMessage(title="T")
    mine = wc.widget_activity(_activity("message:customer", sender=Sender(id="wv_1", name="A"),
                                        metadata={"clientMessageId": "m1"}))
    assert mine is not None and mine.role == "visitor"
    assert mine.client_message_id == "m1" and mine.sender_name is None
    assert wc.widget_activity(_activity("event:seen", message=None,
                                        event=Event(name="seen"))) is None
    assert wc.widget_activity(_activity("message:agent", message=None)) is None


def test_frames_encode_as_documented() -> None:
    d = Delivery(delivery_id="msg_1", hub_id="h1", destination_id=IID, conversation_id="c1",
                 activity=_activity("message:agent"), created_at=1)
    frame = wc.delivery_frame(d, "3:17")
    assert frame is not None
    assert json.loads(wc.encode_frame(frame)) == {
        "type": "delivery", "cursor": "3:17",
        "activity": {"activityId": "a1", "role": "agent", "senderName": "Sam",
                     "message": {"type": "text", "text": "hi"}, "timestamp": 5}}
    assert json.loads(wc.encode_frame(wc.SessionFrame("tok", "wv_1", "c1", True))) == {
        "type": "session", "session": "tok", "visitorId": "wv_1", "conversationId": "c1",
        "resumed": True}
    assert json.loads(wc.encode_frame(wc.ReadyFrame())) == {"type": "ready"}
    assert json.loads(wc.encode_frame(wc.ReadyFrame("1:2", True))) == {
        "type": "ready", "cursor": "1:2", "truncated": True}
    assert json.loads(wc.encode_frame(wc.AckFrame("m1", "a1"))) == {
        "type": "ack", "id": "m1", "activityId": "a1"}
    assert json.loads(wc.encode_frame(wc.ErrorFrame("rate_limited", "wait", "m1"))) == {
        "type": "error", "code": "rate_limited", "description": "wait", "id": "m1"}
    assert json.loads(wc.encode_frame(wc.PingFrame())) == {"type": "ping"}
    event = Delivery(delivery_id="msg_2", hub_id="h1", destination_id=IID,
                     conversation_id="c1", created_at=1,
                     activity=_activity("event:seen", message=None, event=Event(name="seen")))
    assert wc.delivery_frame(event, "3:18") is None
