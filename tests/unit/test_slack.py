"""Slack's pure half: signatures (against slack_sdk), event parsing, Web API bodies."""

from __future__ import annotations

import time

import msgspec
import orjson
import pytest
from slack_sdk.signature import SignatureVerifier

from switchboard.errors import BadRequest, Unauthorized, Unavailable
from switchboard.ids import activity_id
from switchboard.model import (
    Activity,
    Button,
    Card,
    CardMessage,
    CarouselMessage,
    FileMessage,
    ImageMessage,
    QuickReply,
    Sender,
    TextMessage,
    activity_decoder,
    activity_encoder,
)
from switchboard.providers import slack_events, slack_posts, slack_provisioning, slack_signature
from switchboard.retry import Outcome
from tests.fakes.slack import message_event, signed

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


# ---- signatures --------------------------------------------------------------------


def test_sign_matches_slack_sdk() -> None:
    body = b'{"type":"event_callback","team_id":"T1"}'
    ts = "1531420618"
    assert slack_signature.sign(SECRET, ts, body) == SignatureVerifier(SECRET).generate_signature(
        timestamp=ts, body=body)


def test_slack_sdk_accepts_what_we_accept() -> None:
    body, headers = signed(SECRET, {"type": "url_verification", "challenge": "c"})
    now = int(time.time())
    slack_signature.verify_request(SECRET, headers, body, now_s=now)
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    # Header names are case-insensitive.
    lower = {k.lower(): v for k, v in headers.items()}
    slack_signature.verify_request(SECRET, lower, body, now_s=now)


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda h, b: (h, b + b" "), "invalid_signature"),
    (lambda h, b: ({**h, "X-Slack-Signature": "v0=" + "0" * 64}, b), "invalid_signature"),
    (lambda h, b: ({**h, "X-Slack-Signature": "v0=" + "a" * 500}, b), "invalid_signature"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "X-Slack-Signature"}, b),
     "missing_signature"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "X-Slack-Request-Timestamp"}, b),
     "missing_signature"),
    (lambda h, b: ({**h, "X-Slack-Request-Timestamp": "12e3"}, b), "invalid_timestamp"),
])
def test_bad_signatures_are_refused(mutate, code) -> None:  # type: ignore[no-untyped-def]
    body, headers = signed(SECRET, {"type": "event_callback"})
    headers, body = mutate(headers, body)
    with pytest.raises(Unauthorized) as err:
        slack_signature.verify_request(SECRET, headers, body, now_s=int(time.time()))
    assert err.value.code == code


def test_replay_window() -> None:
    old = int(time.time()) - 301
    body, headers = signed(SECRET, {"type": "event_callback"}, timestamp=old)
    with pytest.raises(Unauthorized) as err:
        slack_signature.verify_request(SECRET, headers, body, now_s=int(time.time()))
    assert err.value.code == "stale_timestamp"
    # Inside the window (and slack_sdk agrees on the 5 minutes).
    slack_signature.verify_request(SECRET, headers, body, now_s=old + 300)
    future = int(time.time()) + 400
    body, headers = signed(SECRET, {"type": "event_callback"}, timestamp=future)
    with pytest.raises(Unauthorized):
        slack_signature.verify_request(SECRET, headers, body, now_s=int(time.time()))


def test_another_secret_or_none_fails() -> None:
    body, headers = signed("some-other-secret", {"type": "event_callback"})
    with pytest.raises(Unauthorized):
        slack_signature.verify_request(SECRET, headers, body, now_s=int(time.time()))
    with pytest.raises(Unauthorized) as err:
        slack_signature.verify_request("", headers, body, now_s=int(time.time()))
    assert err.value.code == "slack_not_configured"


# ---- events ------------------------------------------------------------------------


def _env(payload: dict) -> slack_events.Envelope:  # type: ignore[type-arg]
    return slack_events.parse_envelope(orjson.dumps(payload))


def test_url_verification_and_garbage() -> None:
    env = _env({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                "type": "url_verification"})
    assert env.type == "url_verification" and env.challenge.startswith("3eZb")  # type: ignore[union-attr]
    with pytest.raises(BadRequest):
        slack_events.parse_envelope(b"payload=%7B%7D")
    with pytest.raises(BadRequest):
        slack_events.parse_envelope(b'{"no_type": 1}')


def test_a_human_thread_reply_is_an_agent_reply() -> None:
    env = _env(message_event("T1", "C1", text="hi", thread_ts="1.000001", ts="2.000002"))
    event = slack_events.agent_reply(env)
    assert event is not None and event.user == "U0AGENT" and event.thread_ts == "1.000001"
    assert env.team == "T1"


@pytest.mark.parametrize("kwargs", [
    {"thread_ts": None},                                  # top-level message
    {"thread_ts": "5.5", "ts": "5.5"},                    # the thread parent itself
    {"thread_ts": "1.1", "bot_id": "B1"},                 # a bot (our own posts)
    {"thread_ts": "1.1", "subtype": "bot_message"},
    {"thread_ts": "1.1", "subtype": "message_changed"},   # an edit
    {"thread_ts": "1.1", "subtype": "channel_join"},
    {"thread_ts": "1.1", "user": "U0BOT"},                # our bot user, without bot_id
])
def test_not_agent_replies(kwargs) -> None:  # type: ignore[no-untyped-def]
    args = {"text": "x", "ts": "9.9", **kwargs}
    env = _env(message_event("T1", "C1", **args))
    assert slack_events.agent_reply(env, bot_user_id="U0BOT") is None


def test_other_event_shapes_are_ignored_not_errors() -> None:
    env = _env({"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
                "event": {"type": "channel_created", "channel": {"id": "C9", "name": "x"}}})
    assert slack_events.agent_reply(env) is None
    env = _env({"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
                "event": {"type": "message", "channel": 5}})
    assert slack_events.agent_reply(env) is None
    # Broadcast replies and replies with files are people writing.
    env = _env(message_event("T1", "C1", text="all", thread_ts="1.1", ts="2.2",
                             subtype="thread_broadcast"))
    assert slack_events.agent_reply(env) is not None


def test_reply_activities_are_stable_and_readable() -> None:
    payload = message_event(
        "T1", "C1", thread_ts="1.1", ts="2.2", event_id="Ev42", display_name="Dana",
        text="See <https://x.io/a|the docs> &amp; ask <@U123|bob> in <#C9|help> &lt;3 <!here>")
    payload["event"]["subtype"] = "file_share"
    payload["event"]["files"] = [
        {"id": "F1", "name": "shot.png", "title": "Screenshot", "mimetype": "image/png",
         "url_private": "https://files.slack.com/files-pri/T1-F1/shot.png"},
        {"id": "F2", "name": "a.pdf", "mimetype": "application/pdf",
         "url_private": "https://files.slack.com/files-pri/T1-F2/a.pdf",
         "permalink_public": "https://slack-files.com/T1-F2-abc"},
        {"id": "F3", "name": "hidden", "mode": "hidden_by_limit"},
    ]
    env = _env(payload)
    event = slack_events.agent_reply(env)
    assert event is not None
    acts = slack_events.reply_activities(hub_id="h", integration_id="i", conversation_id="c",
                                         env=env, event=event, now_ms=1)
    assert [a.activity_id for a in acts] == [
        activity_id("i", "Ev42:2.2"), activity_id("i", "Ev42:2.2:1"),
        activity_id("i", "Ev42:2.2:2")]
    assert all(a.type == "message:agent" and a.conversation_id == "c" for a in acts)
    assert acts[0].sender == Sender(id="U0AGENT", name="Dana")
    assert acts[0].message == TextMessage(
        text="See the docs (https://x.io/a) & ask @bob in #help <3 @here")
    assert acts[1].message == ImageMessage(
        url="https://files.slack.com/files-pri/T1-F1/shot.png", caption="Screenshot")
    assert acts[2].message == FileMessage(url="https://slack-files.com/T1-F2-abc", name="a.pdf",
                                          mime_type="application/pdf")
    assert acts[0].metadata["slackThreadTs"] == "1.1"
    # Same event again (a Slack retry): same ids.
    again = slack_events.reply_activities(hub_id="h", integration_id="i", conversation_id="c",
                                          env=env, event=event, now_ms=2)
    assert [a.activity_id for a in again] == [a.activity_id for a in acts]
    # They pass the model's own validation.
    for a in acts:
        assert activity_decoder.decode(activity_encoder.encode(a)) == a


def test_long_and_empty_replies() -> None:
    env = _env(message_event("T1", "C1", thread_ts="1.1", ts="2.2", text="x" * 40000))
    event = slack_events.agent_reply(env)
    assert event is not None
    (act,) = slack_events.reply_activities(hub_id="h", integration_id="i", conversation_id="c",
                                           env=env, event=event, now_ms=1)
    activity_decoder.decode(activity_encoder.encode(act))
    env = _env(message_event("T1", "C1", thread_ts="1.1", ts="2.2", text="  "))
    event = slack_events.agent_reply(env)
    assert event is not None
    assert slack_events.reply_activities(hub_id="h", integration_id="i", conversation_id="c",
                                         env=env, event=event, now_ms=1) == []


@pytest.mark.parametrize(("mrkdwn", "plain"), [
    ("<https://a.b>", "https://a.b"),
    ("<https://a.b|https://a.b>", "https://a.b"),
    ("<mailto:x@y.z|x@y.z>", "x@y.z"),
    ("<@U1>", "@U1"),
    ("<!channel>", "@channel"),
    ("<!subteam^S1|@ops>", "@ops"),
    ("<!date^1392734382^{date}|Feb 18, 2014>", "Feb 18, 2014"),
    ("a &amp;lt; b", "a &lt; b"),
])
def test_from_mrkdwn(mrkdwn: str, plain: str) -> None:
    assert slack_events.from_mrkdwn(mrkdwn) == plain


def test_thread_keys() -> None:
    key = slack_events.thread_key("C1", "1712.000100")
    assert key == "C1:1712.000100"
    assert slack_events.split_thread(key) == ("C1", "1712.000100")
    assert slack_events.split_thread("1712.000100") is None


# ---- outbound ------------------------------------------------------------------------


def _activity(message, type_: str = "message:customer", name: str | None = "Alice"
              ) -> Activity:  # type: ignore[no-untyped-def]
    return Activity(activity_id="a1", hub_id="h", integration_id="cust", channel_id="Direct",
                    type=type_, conversation_id="conv-1", sender=Sender(id="+15550001",
                                                                        name=name),
                    timestamp=1, message=message)


def test_text_is_escaped_not_interpreted() -> None:
    blocks = slack_posts.blocks_for(TextMessage(text="<!channel> 5 > 3 & <@U1>"))
    assert blocks == [{"type": "section", "text": {
        "type": "mrkdwn", "text": "&lt;!channel&gt; 5 &gt; 3 &amp; &lt;@U1&gt;"}}]


def test_long_text_is_split_into_sections_without_breaking_entities() -> None:
    text = "a" * 2998 + "&" + "b" * 7000
    blocks = slack_posts.blocks_for(TextMessage(text=text))
    pieces = [b["text"]["text"] for b in blocks]
    assert all(len(p) <= slack_posts.SECTION_CHARS for p in pieces)
    assert "".join(pieces) == slack_posts.to_mrkdwn(text)
    assert pieces[1].startswith("&amp;")
    worst = slack_posts.blocks_for(TextMessage(text="&" * 16384))
    assert len(worst) < slack_posts.MAX_BLOCKS
    assert all(b["text"]["text"].startswith("&amp;") for b in worst)


def test_media_cards_and_quick_replies_are_readable() -> None:
    (img,) = slack_posts.blocks_for(ImageMessage(url="https://i.io/p.png", caption="a|b"))
    assert img["text"]["text"] == ":frame_with_picture: <https://i.io/p.png|a¦b>"
    (f,) = slack_posts.blocks_for(FileMessage(url="https://f.io/x>y.pdf", name="x.pdf",
                                              mime_type="application/pdf"))
    assert f["text"]["text"] == ":paperclip: <https://f.io/x%3Ey.pdf|x.pdf> (application/pdf)"
    text = slack_posts.blocks_for(TextMessage(text="Pick", quick_replies=[
        QuickReply(title="Yes"), QuickReply(title="No")]))
    assert text[1] == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "Quick replies: Yes · No"}]}
    card = CardMessage(title="Shoes", subtitle="Size 9", image_url="https://i.io/s.png",
                       buttons=[Button(title="Buy", type="url", url="https://shop.io/b"),
                                Button(title="Later", payload="LATER")])
    (c,) = slack_posts.blocks_for(card)
    assert c["text"]["text"] == ("*Shoes*\nSize 9\n<https://i.io/s.png|image>\n"
                                 "• <https://shop.io/b|Buy>\n• Later")
    carousel = slack_posts.blocks_for(CarouselMessage(cards=[Card(title="A"), Card(title="B")]))
    assert [b["type"] for b in carousel] == ["section", "divider", "section"]
    assert slack_posts.fallback_text(card) == "Card: Shoes — Size 9"


def test_parent_and_thread_requests() -> None:
    act = _activity(TextMessage(text="my order is late"))
    parent = slack_posts.parent_request("general", act, source_channel="TwilioSMS",
                                        source_name="support line")
    assert parent["channel"] == "general" and "thread_ts" not in parent
    header = parent["blocks"][0]["elements"][0]["text"]
    assert header == "*Alice* (+15550001) · TwilioSMS · _support line_"
    assert parent["blocks"][0]["elements"][1]["text"] == "conversation `conv-1`"
    assert parent["blocks"][1]["text"]["text"] == "my order is late"
    assert parent["text"] == "Alice via TwilioSMS: my order is late"
    reply = slack_posts.thread_request("C1", "1.1", act)
    assert reply["channel"] == "C1" and reply["thread_ts"] == "1.1"
    assert reply["blocks"] == [{"type": "section", "text": {"type": "mrkdwn",
                                                            "text": "my order is late"}}]
    # Not the customer (a bot's message, say): marked as such.
    bot = slack_posts.thread_request("C1", "1.1", _activity(TextMessage(text="hi"), "message:bot",
                                                            name="Greeter"))
    assert bot["blocks"][0]["elements"][0]["text"] == "*Greeter* · bot"
    anon = slack_posts.parent_request("general", _activity(TextMessage(text="x"), name=None),
                                      source_channel="Direct", source_name=None)
    assert anon["blocks"][0]["elements"][0]["text"] == "*+15550001* · Direct"


def _answer(body: dict) -> bytes:  # type: ignore[type-arg]
    return orjson.dumps(body)


def test_post_answers() -> None:
    ok = slack_posts.parse_post_response(200, _answer({"ok": True, "channel": "C1", "ts": "1.2"}),
                                         None)
    assert (ok.outcome, ok.channel, ok.ts) == (Outcome.DELIVERED, "C1", "1.2")
    limited = slack_posts.parse_post_response(429, _answer({"ok": False, "error": "ratelimited"}),
                                              30.0)
    assert (limited.outcome, limited.retry_after) == (Outcome.RETRY, 30.0)
    for error in ("channel_not_found", "not_in_channel", "invalid_auth", "account_inactive",
                  "something_new"):
        r = slack_posts.parse_post_response(200, _answer({"ok": False, "error": error}), None)
        assert r.outcome is Outcome.PERMANENT and r.reason == f"slack_{error}"
    for error in ("ratelimited", "internal_error", "service_unavailable"):
        r = slack_posts.parse_post_response(200, _answer({"ok": False, "error": error}), None)
        assert r.outcome is Outcome.RETRY
    assert slack_posts.parse_post_response(503, b"", None).outcome is Outcome.RETRY
    assert slack_posts.parse_post_response(200, b"<html>", None).outcome is Outcome.RETRY
    assert (slack_posts.parse_post_response(200, _answer({"ok": True}), None).outcome
            is Outcome.RETRY)
    assert slack_posts.parse_post_response(404, b"", None).outcome is Outcome.PERMANENT


def test_oauth_answers() -> None:
    granted = slack_provisioning.parse_oauth_response(200, _answer({
        "ok": True, "access_token": "xoxb-1", "token_type": "bot", "scope": "chat:write",
        "bot_user_id": "U0BOT", "app_id": "A1", "team": {"name": "Acme", "id": "T1"},
        "enterprise": None, "authed_user": {"id": "U1", "access_token": "xoxp-9"}}))
    assert granted == slack_provisioning.OAuthResult(
        bot_access_token="xoxb-1", team_id="T1", team_name="Acme", bot_user_id="U0BOT",
        app_id="A1", user_access_token="xoxp-9")
    with pytest.raises(BadRequest) as err:
        slack_provisioning.parse_oauth_response(
            200, _answer({"ok": False, "error": "invalid_code"}))
    assert "invalid_code" in err.value.description and err.value.field == "configuration.code"
    with pytest.raises(BadRequest):
        slack_provisioning.parse_oauth_response(200, _answer({"ok": True, "team": {"id": "T1"}}))
    with pytest.raises(Unavailable):
        slack_provisioning.parse_oauth_response(502, b"bad gateway")
    form = slack_provisioning.oauth_access_form("c", "id", "sec")
    assert form == {"code": "c", "client_id": "id", "client_secret": "sec"}


def test_auth_test_answers() -> None:
    who = slack_provisioning.parse_auth_test(200, _answer({
        "ok": True, "team_id": "T1", "user": "bot", "user_id": "U0BOT", "bot_id": "B1"}))
    assert (who.team_id, who.user, who.user_id) == ("T1", "bot", "U0BOT")
    with pytest.raises(BadRequest):
        slack_provisioning.parse_auth_test(200, _answer({"ok": False, "error": "invalid_auth"}))


def test_envelope_roundtrip_tolerates_unknown_fields() -> None:
    raw = message_event("T1", "C1", text="x", thread_ts="1.1", ts="2.2")
    raw["event"]["attachments"] = [{"fallback": "x"}]
    raw["extra"] = {"deep": [1, 2]}
    env = slack_events.parse_envelope(orjson.dumps(raw))
    assert isinstance(env.event, msgspec.Raw)
    assert slack_events.agent_reply(env) is not None
