"""Fuzz: each provider's webhook parsing (Twilio form, Messenger JSON, Slack Events API)
and the provider API answers the hub reads back.

Invariant: accepted or refused with our error, nothing else; a correctly signed request
verifies and a changed one does not; and every activity a parser makes is one the router
can read (a published record the router cannot decode would be lost after the provider
was told 200).
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple
from urllib.parse import urlencode

from hypothesis import given

from switchboard.model import Activity, activity_decoder, activity_encoder
from switchboard.providers import (
    messenger_events,
    messenger_send,
    messenger_verification,
    slack_events,
    slack_posts,
    slack_provisioning,
    slack_signature,
    twilio_api,
    twilio_signature,
    twilio_webhooks,
)
from switchboard.retry import parse_retry_after
from tests.fuzz.strategies import (
    accepts,
    cases,
    damage,
    near_valid,
    ours_or_result,
    text_like,
    value,
)

NOW = 1_700_000_000
HUB, IID = "h-1", "i-1"


def readable_downstream(activity: Activity) -> None:
    assert activity_decoder.decode(activity_encoder.encode(activity)) == activity


# ---- Twilio ---------------------------------------------------------------------------

AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
SHARED_KEY = "shared-key-secret"
URL = "https://hub.example.com/ingress/i-1"
TWILIO_FORMS = [
    [("MessageSid", "SM0123456789abcdef"), ("AccountSid", "AC1"), ("From", "+15550001111"),
     ("To", "+15550002222"), ("Body", "hello"), ("NumMedia", "0"), ("MessageStatus", "received")],
    [("MessageSid", "MM1"), ("AccountSid", "AC1"), ("From", "+15550001111"), ("To", "+1555"),
     ("Body", ""), ("NumMedia", "2"), ("MediaUrl0", "https://api.twilio.com/m/0"),
     ("MediaContentType0", "image/jpeg"), ("MediaUrl1", "https://api.twilio.com/m/1"),
     ("MediaContentType1", "application/pdf")],
    [("MessageSid", "SM2"), ("AccountSid", "AC1"), ("To", "+15550001111"),
     ("MessageStatus", "undelivered"), ("ErrorCode", "30003")],
]


def _form_value(r: random.Random, old: str) -> str:
    v = value(r)
    if isinstance(v, str):
        return v
    return text_like(r, old, "10", "-1", "99999999999999999999", "\u0661", "1e3", "9" * 4301)


class TwilioCase(NamedTuple):
    body: bytes
    query: bytes
    headers: dict[str, str]
    signed: str  # "auth" | "shared" | "junk"


def twilio_case(r: random.Random) -> TwilioCase:
    form = list(r.choice(TWILIO_FORMS))
    for _ in range(r.choice([0, 1, 1, 2, 3])):
        i = r.randrange(len(form))
        op = r.randrange(4)
        if op == 0:
            form[i] = (form[i][0], _form_value(r, form[i][1]))
        elif op == 1:
            del form[i]
            if not form:
                break
        elif op == 2:
            form.insert(i, (text_like(r, "NumMedia", "MediaUrl9", "Body"), _form_value(r, "")))
        else:
            form.append(form[i])  # repeated name
    body = urlencode(form, errors="surrogatepass").encode() if r.random() < 0.9 \
        else r.randbytes(r.randrange(200))
    body = damage(r, body)
    query = r.choice([b"", b"ref=abc", b"ref=abc&part=2", b"ref=" + b"x" * 200 + b"&part=x",
                      urlencode([("ref", text_like(r, "abc")),
                                 ("part", text_like(r, "1", "9" * 4301))],
                                errors="surrogatepass").encode()])
    signed = r.choice(["auth", "shared", "junk"])
    headers: dict[str, str] = {}
    params = ours_or_result(twilio_signature.parse_form, body) or []
    url = URL + ("?" + query.decode("latin-1") if query else "")
    if signed == "auth":
        headers[twilio_signature.SIGNATURE_HEADER] = twilio_signature.compute_signature(
            AUTH_TOKEN, url, params)
    elif signed == "shared":
        algorithm = r.choice([twilio_signature.HMAC_SHA1, twilio_signature.HMAC_SHA256])
        headers[twilio_signature.SIGNATURE_HEADER] = twilio_signature.compute_signature(
            SHARED_KEY, url, params, algorithm)
        headers[twilio_signature.SIGNATURE_SETTINGS_HEADER] = f"algorithm={algorithm}"
    else:
        headers[twilio_signature.SIGNATURE_HEADER] = text_like(r, "abc=", "", "é")
        if r.random() < 0.3:
            headers[twilio_signature.SIGNATURE_SETTINGS_HEADER] = text_like(
                r, "algorithm=HMAC_SHA256", "algorithm=MD5", "x,algorithm=")
    return TwilioCase(body, query, headers, signed)


@given(cases(twilio_case))
def test_twilio_webhook(case: TwilioCase) -> None:
    params = ours_or_result(twilio_signature.parse_form, case.body)
    query = ours_or_result(twilio_signature.parse_form, case.query)
    if params is None or query is None:
        return
    url = URL + ("?" + case.query.decode("latin-1") if case.query else "")
    verified = accepts(twilio_signature.verify_signature, case.headers, url, params,
                       auth_token=AUTH_TOKEN, shared_key=SHARED_KEY)
    if case.signed != "junk":
        assert verified, "a correctly signed request verifies"
    ours_or_result(twilio_webhooks.check_account, params, "AC1")
    twilio_webhooks.is_status_callback(params)
    activities = ours_or_result(twilio_webhooks.normalize, params, hub_id=HUB, integration_id=IID,
                                query=query, now_ms=NOW * 1000)
    for activity in activities or []:
        readable_downstream(activity)


# ---- Messenger -------------------------------------------------------------------------

APP_SECRET = "meta-app-secret"
MESSENGER_TEMPLATES: list[Any] = [
    {"object": "page", "entry": [{"id": "PAGE1", "time": 1, "messaging": [
        {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE1"}, "timestamp": 1,
         "message": {"mid": "m.1", "text": "hi", "quick_reply": {"payload": "q"},
                     "attachments": [
                         {"type": "image", "payload": {"url": "https://x.test/a.png"}},
                         {"type": "video", "payload": {"url": "https://x.test/v", "title": "v"}},
                         {"type": "location", "payload": {"coordinates": {"lat": 1.5,
                                                                          "long": -2}}},
                         {"type": "fallback", "title": "t", "url": "https://x.test"}]}},
        {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE1"}, "timestamp": 2,
         "postback": {"payload": "p", "title": "t", "mid": "m.2"}},
        {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE1"}, "read": {"watermark": 5}},
        {"sender": {"id": "PAGE1"}, "message": {"mid": "m.3", "is_echo": True, "text": "e"}},
    ]}]},
    {"object": "page", "entry": [{"id": 1234567, "messaging": [
        {"sender": {"id": "P"}, "message": {"mid": "m", "sticker_id": 1,
                                            "attachments": [{"type": "image", "payload": {
                                                "sticker_id": 369239263222822,
                                                "url": "https://x.test/s"}}]}}]},
                                 {"id": "PAGE2", "messaging": []}]},
]


class MessengerCase(NamedTuple):
    body: bytes
    signature: str | None
    signed: bool
    params: dict[str, str]


def messenger_case(r: random.Random) -> MessengerCase:
    body = near_valid(r, *MESSENGER_TEMPLATES)
    signed = r.random() < 0.7
    if signed:
        signature: str | None = messenger_verification.sign(APP_SECRET, body)
        if r.random() < 0.2:
            signature = r.choice([signature.upper(), " " + signature + " "])
    else:
        signature = None if r.random() < 0.1 else text_like(
            r, "sha256=" + "0" * 64, "sha1=abc", "sha256=", "=", "sha256=é")
    params = {"hub.mode": text_like(r, "subscribe"), "hub.verify_token": text_like(r, "tok"),
              "hub.challenge": text_like(r, "12345", "x" * 300)}
    return MessengerCase(body, signature, signed, params)


@given(cases(messenger_case))
def test_messenger_webhook(case: MessengerCase) -> None:
    ours_or_result(messenger_verification.handshake, case.params, "tok")
    pages = messenger_verification.page_ids(case.body)
    assert all(isinstance(p, str) for p in pages)
    secret = ours_or_result(messenger_verification.verify_signature, case.signature, case.body,
                            ["", "other-secret", APP_SECRET])
    if case.signed:
        assert secret == APP_SECRET
    parsed = ours_or_result(messenger_events.parse_webhook, case.body)
    if parsed is None:
        return
    events, _skipped = parsed
    for ev in events:
        readable_downstream(messenger_events.to_activity(ev, integration_id=IID, hub_id=HUB,
                                                         now_ms=NOW * 1000))


# ---- Slack -------------------------------------------------------------------------------

SIGNING_SECRET = "slack-signing-secret"
SLACK_TEMPLATES: list[Any] = [
    {"type": "url_verification", "challenge": "abc", "token": "t"},
    {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1",
     "event_time": 1, "authorizations": [{"team_id": "T1", "user_id": "U0"}],
     "event": {"type": "message", "channel": "C1", "user": "U2", "text": "<@U1|ann> hi &amp;",
               "ts": "2.0", "thread_ts": "1.0", "team": "T1",
               "user_profile": {"display_name": "Ann", "real_name": "A"},
               "files": [{"id": "F1", "name": "a.png", "mimetype": "image/png",
                          "url_private": "https://files.slack.test/a.png"},
                         {"id": "F2", "title": "doc", "permalink": "https://s.test/d"}],
               "blocks": [{"type": "rich_text", "elements": [{"type": "rich_text_section",
                                                              "elements": []}]}]}},
    {"type": "event_callback", "event_id": "Ev2",
     "event": {"type": "message", "subtype": "thread_broadcast", "channel": "C1",
               "user": "U2", "ts": "3.0", "thread_ts": "1.0", "text": "x"}},
]


class SlackCase(NamedTuple):
    body: bytes
    headers: dict[str, str]
    signed: bool


def slack_case(r: random.Random) -> SlackCase:
    body = near_valid(r, *SLACK_TEMPLATES)
    timestamp = (str(NOW + r.randint(-400, 400)) if r.random() < 0.8
                 else text_like(r, str(NOW), "1e9", "-1", "9" * 25))
    signed = r.random() < 0.7 and timestamp.isascii()
    signature = (slack_signature.sign(SIGNING_SECRET, timestamp, body) if signed
                 else text_like(r, "v0=" + "0" * 64, "v0=", "v1=abc", "é"))
    headers = {slack_signature.TIMESTAMP_HEADER: timestamp,
               slack_signature.SIGNATURE_HEADER: signature}
    if r.random() < 0.1:
        del headers[r.choice(list(headers))]
        signed = False
    fresh = timestamp.isascii() and timestamp.isdigit() and abs(int(timestamp) - NOW) <= 300
    return SlackCase(body, headers, signed and fresh and len(timestamp) <= 20)


@given(cases(slack_case))
def test_slack_events(case: SlackCase) -> None:
    verified = accepts(slack_signature.verify_request, SIGNING_SECRET, case.headers,
                       case.body, now_s=NOW)
    assert verified or not case.signed, "a correctly signed, fresh request verifies"
    env = ours_or_result(slack_events.parse_envelope, case.body)
    if env is None:
        return
    assert env.team is None or isinstance(env.team, str)
    event = slack_events.agent_reply(env, bot_user_id="U0")
    if event is None:
        return
    for activity in slack_events.reply_activities(hub_id=HUB, integration_id=IID,
                                                  conversation_id="conv-1", env=env,
                                                  event=event, now_ms=NOW * 1000):
        readable_downstream(activity)


# ---- provider API answers -------------------------------------------------------------

ANSWERS: list[Any] = [
    {"code": 21211, "message": "The 'To' number is not valid", "more_info": "x", "status": 400},
    {"sid": "PN1", "phone_number": "+15550001111",
     "capabilities": {"sms": True, "mms": False, "voice": True, "MMS": True}},
    {"error": {"message": "bad", "type": "OAuthException", "code": 190, "error_subcode": 460,
               "fbtrace_id": "x"}},
    {"recipient_id": "1", "message_id": "m"},
    {"ok": False, "error": "ratelimited"},
    {"ok": True, "channel": "C1", "ts": "1.0", "message": {"text": "x"}},
    {"ok": True, "access_token": "xoxb-1", "token_type": "bot", "bot_user_id": "U0",
     "app_id": "A1", "team": {"id": "T1", "name": "t"},
     "authed_user": {"id": "U1", "access_token": "xoxp"}},
    {"ok": True, "team_id": "T1", "user": "bot", "user_id": "U0", "bot_id": "B1"},
]


class Answer(NamedTuple):
    status: int
    body: bytes
    retry_after: float | None
    retry_after_header: str | None


def answer_case(r: random.Random) -> Answer:
    header = None if r.random() < 0.1 else text_like(
        r, "120", "0", "Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 99 Foo 99999 99:99:99 GMT",
        "9" * 4301, "-1", "1.5", "Tue, 01 Jan 10000 00:00:00 GMT")
    return Answer(r.choice([200, 201, 204, 400, 401, 404, 408, 425, 429, 500, 503, 0, 999]),
                  near_valid(r, *ANSWERS), r.choice([None, 0.0, 1.5, 1e9]), header)


@given(cases(answer_case))
def test_provider_answers(case: Answer) -> None:
    status, body = case.status, case.body
    # A Retry-After from a provider or a tenant's endpoint is advice: a number or None.
    wait = parse_retry_after(case.retry_after_header, NOW)
    assert wait is None or wait >= 0
    err = twilio_api.parse_error(status, body)
    assert isinstance(err.reason, str) and isinstance(err.describe(), str)
    ours_or_result(twilio_api.parse_number, body)
    messenger_send.graph_error(body)
    assert isinstance(messenger_send.graph_error_message(status, body), str)
    messenger_send.classify_send(status, body, case.retry_after)
    slack_posts.parse_post_response(status, body, case.retry_after)
    ours_or_result(slack_provisioning.parse_oauth_response, status, body)
    ours_or_result(slack_provisioning.parse_auth_test, status, body)

