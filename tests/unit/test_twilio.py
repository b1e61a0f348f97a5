"""TwilioSMS pure core: signatures (against the twilio SDK), normalization, payloads."""

from __future__ import annotations

import msgspec
import pytest
from twilio.request_validator import RequestValidator

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
)
from switchboard.providers import twilio_api, twilio_signature, twilio_webhooks

TOKEN = "12345678901234567890123456789012"
URL = "https://hub.example.com/ingress/abc"
HUB, INTEGRATION = "hub-1", "int-1"


def inbound(**extra: str) -> dict[str, str]:
    params = {"MessageSid": "SM1", "SmsSid": "SM1", "AccountSid": "AC1", "From": "+15550001111",
              "To": "+15557654321", "Body": "hello", "NumMedia": "0", "SmsStatus": "received",
              "ApiVersion": "2010-04-01"}
    params.update(extra)
    return params


def pairs(params: dict[str, str]) -> list[tuple[str, str]]:
    return list(params.items())


# ---- signatures -------------------------------------------------------------------------


def test_signature_matches_the_sdk() -> None:
    params = inbound(Body="héllo & ünïcode +1 = ?")
    oracle = RequestValidator(TOKEN)
    ours = twilio_signature.compute_signature(TOKEN, URL, pairs(params))
    assert ours == oracle.compute_signature(URL, params)
    assert oracle.validate(URL, params, ours)


def test_repeated_parameters_sign_like_the_sdk() -> None:
    class Multi(dict[str, str]):
        def __init__(self, items: list[tuple[str, str]]) -> None:
            super().__init__(items)
            self.items_ = items

        def getall(self, name: str) -> list[str]:
            return [v for k, v in self.items_ if k == name]

    items = [("b", "2"), ("a", "z"), ("a", "y"), ("a", "y")]
    assert twilio_signature.compute_signature(TOKEN, URL, items) == \
        RequestValidator(TOKEN).compute_signature(URL, Multi(items))


def test_hmac_sha256_shared_key_matches_the_sdk() -> None:
    params = inbound()
    expected = RequestValidator("shared").compute_signature(URL, params, "HMAC_SHA256")
    assert twilio_signature.compute_signature("shared", URL, pairs(params),
                                              "HMAC_SHA256") == expected
    headers = {"X-Twilio-Signature": expected,
               "X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=HMAC_SHA256"}
    twilio_signature.verify_signature(headers, URL, pairs(params), auth_token=TOKEN,
                                      shared_key="shared")
    with pytest.raises(Forbidden) as exc:
        twilio_signature.verify_signature(headers, URL, pairs(params), auth_token=TOKEN)
    assert exc.value.code == "shared_key_not_configured"
    bad = {**headers, "X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=HMAC_MD5"}
    with pytest.raises(Forbidden):
        twilio_signature.verify_signature(bad, URL, pairs(params), auth_token=TOKEN,
                                          shared_key="shared")


def test_verify_accepts_sdk_signed_and_rejects_others() -> None:
    params = inbound()
    good = RequestValidator(TOKEN).compute_signature(URL, params)
    twilio_signature.verify_signature({"x-twilio-signature": good}, URL, pairs(params),
                                      auth_token=TOKEN)
    with pytest.raises(Unauthorized):
        twilio_signature.verify_signature({}, URL, pairs(params), auth_token=TOKEN)
    with pytest.raises(Forbidden):
        twilio_signature.verify_signature({"x-twilio-signature": good}, URL, pairs(params),
                                          auth_token="another-token")
    tampered = pairs({**params, "Body": "hellO"})
    with pytest.raises(Forbidden):
        twilio_signature.verify_signature({"x-twilio-signature": good}, URL, tampered,
                                          auth_token=TOKEN)
    # The URL is part of what is signed: the bind address is not the public URL.
    with pytest.raises(Forbidden):
        twilio_signature.verify_signature({"x-twilio-signature": good},
                                          "http://127.0.0.1:8080/ingress/abc", pairs(params),
                                          auth_token=TOKEN)


def test_default_port_is_accepted_either_way() -> None:
    params = inbound()
    with_port = RequestValidator(TOKEN).compute_signature(
        "https://hub.example.com:443/ingress/abc", params)
    twilio_signature.verify_signature({"x-twilio-signature": with_port}, URL, pairs(params),
                                      auth_token=TOKEN)
    plain = RequestValidator(TOKEN).compute_signature(URL, params)
    twilio_signature.verify_signature({"x-twilio-signature": plain},
                                      "https://hub.example.com:443/ingress/abc", pairs(params),
                                      auth_token=TOKEN)


def test_full_url_uses_the_public_base() -> None:
    assert twilio_signature.full_url("https://sms.example.com/sb/", "/ingress/x", "") == \
        "https://sms.example.com/sb/ingress/x"
    assert twilio_signature.full_url("https://h", "/ingress/x", "ref=1&part=2") == \
        "https://h/ingress/x?ref=1&part=2"
    assert twilio_api.ingress_url("https://h/", "i") == "https://h/ingress/i"
    assert twilio_api.status_callback_url("https://h", "i", "r", 2) == \
        "https://h/ingress/i?ref=r&part=2"


def test_parse_form_keeps_order_repeats_and_blanks() -> None:
    assert twilio_signature.parse_form(b"Body=a+b%26c&MediaUrl=1&MediaUrl=2&Empty=") == [
        ("Body", "a b&c"), ("MediaUrl", "1"), ("MediaUrl", "2"), ("Empty", "")]
    with pytest.raises(BadRequest):
        twilio_signature.parse_form(b"\xff\xfe")
    with pytest.raises(BadRequest):
        twilio_signature.parse_form(
            b"&".join(b"a=1" for _ in range(twilio_signature.MAX_PARAMS + 1)))


def test_check_account() -> None:
    twilio_webhooks.check_account(pairs(inbound()), "AC1")
    with pytest.raises(Forbidden):
        twilio_webhooks.check_account(pairs(inbound()), "AC2")


# ---- normalization --------------------------------------------------------------------------


def test_incoming_text() -> None:
    [a] = twilio_webhooks.normalize(pairs(inbound()), hub_id=HUB, integration_id=INTEGRATION,
                                    now_ms=5)
    assert a.type == "message:customer"
    assert a.message == TextMessage(text="hello")
    assert a.sender.id == "+15550001111"
    assert a.conversation_id == customer_conversation_id(INTEGRATION, "+15550001111")
    assert a.activity_id == activity_id(INTEGRATION, "SM1")
    assert a.metadata == {"messageSid": "SM1", "to": "+15557654321"}
    assert a.channel_id == "TwilioSMS" and a.hub_id == HUB and a.timestamp == 5
    # The same MessageSid is the same activity: a provider retry is recognised.
    [again] = twilio_webhooks.normalize(pairs(inbound()), hub_id=HUB, integration_id=INTEGRATION,
                                        now_ms=9)
    assert again.activity_id == a.activity_id


def test_incoming_mms_is_text_then_each_media() -> None:
    params = inbound(Body="see these", NumMedia="2",
                     MediaUrl0="https://api.twilio.com/media/ME1",
                     MediaContentType0="image/jpeg",
                     MediaUrl1="https://api.twilio.com/media/ME2",
                     MediaContentType1="application/pdf")
    acts = twilio_webhooks.normalize(pairs(params), hub_id=HUB, integration_id=INTEGRATION,
                                     now_ms=1)
    assert [a.message for a in acts] == [
        TextMessage(text="see these"),
        ImageMessage(url="https://api.twilio.com/media/ME1"),
        FileMessage(url="https://api.twilio.com/media/ME2", mime_type="application/pdf"),
    ]
    assert len({a.activity_id for a in acts}) == 3
    assert {a.conversation_id for a in acts} == {acts[0].conversation_id}
    # Media only: no empty text message.
    only = twilio_webhooks.normalize(pairs({**params, "Body": ""}), hub_id=HUB,
                                     integration_id=INTEGRATION, now_ms=1)
    assert [type(a.message) for a in only] == [ImageMessage, FileMessage]


@pytest.mark.parametrize("broken", [
    {"MessageSid": ""}, {"From": ""}, {"NumMedia": "x"},
    {"NumMedia": "1"},  # no MediaUrl0
    {"NumMedia": "1", "MediaUrl0": "ftp://nope", "MediaContentType0": "image/png"},
])
def test_unusable_webhooks_are_refused(broken: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        twilio_webhooks.normalize(pairs(inbound(**broken)), hub_id=HUB, integration_id=INTEGRATION,
                                  now_ms=1)


def test_status_callback_becomes_message_status_event() -> None:
    params = {"MessageSid": "SM9", "SmsSid": "SM9", "MessageStatus": "undelivered",
              "SmsStatus": "undelivered", "ErrorCode": "30003", "To": "+15550001111",
              "From": "+15557654321", "AccountSid": "AC1"}
    assert twilio_webhooks.is_status_callback(pairs(params))
    assert not twilio_webhooks.is_status_callback(pairs(inbound()))
    assert not twilio_webhooks.is_status_callback(pairs(inbound(MessageStatus="received")))
    [e] = twilio_webhooks.normalize(pairs(params), hub_id=HUB, integration_id=INTEGRATION,
                                    query=[("ref", "act-1"), ("part", "2")], now_ms=1)
    assert e.type == "event:message_status"
    assert e.event is not None and e.event.name == "message_status"
    assert e.event.ref == "act-1"
    assert e.event.data == {"messageSid": "SM9", "status": "undelivered", "to": "+15550001111",
                            "errorCode": 30003, "part": 2}
    assert e.conversation_id == customer_conversation_id(INTEGRATION, "+15550001111")
    assert e.activity_id == activity_id(INTEGRATION, "SM9:status:undelivered")
    # Each status of a message is its own event; the same one again is the same id.
    [d] = twilio_webhooks.normalize(pairs({**params, "MessageStatus": "delivered"}), hub_id=HUB,
                                    integration_id=INTEGRATION, now_ms=1)
    assert d.activity_id != e.activity_id and d.event is not None and d.event.ref is None


# ---- outbound ---------------------------------------------------------------------------------


def test_split_keeps_short_texts_whole() -> None:
    assert twilio_api.split_text("x" * 1600) == ["x" * 1600]
    assert twilio_api.split_text("") == [""]


def test_split_long_texts_at_word_boundaries_in_order() -> None:
    words = [f"word{i}" for i in range(700)]
    text = " ".join(words)
    parts = twilio_api.split_text(text)
    assert len(parts) > 1
    assert all(len(p) <= 1600 for p in parts)
    assert " ".join(parts).split() == words


def test_split_counts_utf16_units_and_hard_cuts() -> None:
    emoji = "\U0001f600" * 1000  # 2000 UTF-16 units, no spaces
    parts = twilio_api.split_text(emoji)
    assert "".join(parts) == emoji
    assert all(len(p.encode("utf-16-le")) // 2 <= 1600 for p in parts)
    assert twilio_api.split_text("a" * 3500) == ["a" * 1600, "a" * 1600, "a" * 300]


def test_text_forms() -> None:
    qr = TextMessage(text="Pick one", quick_replies=[QuickReply(title="Billing"),
                                                     QuickReply(title="Support")])
    assert twilio_api.text_form(qr, mms=True) == (
        "Pick one\n\nReply with one of:\n- Billing\n- Support", [])
    card = CardMessage(title="Plan A", subtitle="$5", image_url="https://x/a.png",
                       buttons=[Button(title="Buy", type="url", url="https://x/buy"),
                                Button(title="Later", payload="later")])
    assert twilio_api.text_form(card, mms=True) == (
        "Plan A\n$5\n- Buy: https://x/buy\n- Later", ["https://x/a.png"])
    assert twilio_api.text_form(card, mms=False) == (
        "Plan A\n$5\nhttps://x/a.png\n- Buy: https://x/buy\n- Later", [])
    carousel = CarouselMessage(cards=[Card(title="A", image_url="https://x/a.png"),
                                      Card(title="B", subtitle="b")])
    assert twilio_api.text_form(carousel, mms=True) == ("1) A\n\n2) B\nb", ["https://x/a.png"])
    image = ImageMessage(url="https://x/i.png", caption="look")
    assert twilio_api.text_form(image, mms=True) == ("look", ["https://x/i.png"])
    assert twilio_api.text_form(image, mms=False) == ("look\nhttps://x/i.png", [])
    file = FileMessage(url="https://x/f.pdf", name="invoice.pdf")
    assert twilio_api.text_form(file, mms=True) == ("invoice.pdf", ["https://x/f.pdf"])


def test_message_requests() -> None:
    def cb(part: int | None) -> str:
        return f"https://h/ingress/i?ref=r{'' if part is None else f'&part={part}'}"

    [one] = twilio_api.message_requests(TextMessage(text="hi"), from_number="+1", to="+2",
                                        mms=True, status_callback=cb)
    assert one == [("To", "+2"), ("From", "+1"), ("Body", "hi"),
                   ("StatusCallback", "https://h/ingress/i?ref=r")]
    long = twilio_api.message_requests(TextMessage(text="y " * 1000), from_number="+1", to="+2",
                                       mms=True, status_callback=cb)
    assert [dict(r)["StatusCallback"][-6:] for r in long] == ["part=1", "part=2"]
    [media] = twilio_api.message_requests(ImageMessage(url="https://x/i.png"), from_number="+1",
                                          to="+2", mms=True, status_callback=cb)
    assert ("MediaUrl", "https://x/i.png") in media and "Body" not in dict(media)
    assert twilio_api.message_requests(TextMessage(text=""), from_number="+1", to="+2", mms=True,
                                       status_callback=cb) == []


def test_errors_and_numbers() -> None:
    body = b'{"code": 21211, "message": "The \'To\' number 123 is not a valid phone number.",' \
        b' "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}'
    err = twilio_api.parse_error(400, body)
    assert err.code == 21211 and err.reason == "twilio_21211"
    assert err.describe() == \
        "Twilio: The 'To' number 123 is not a valid phone number. (code 21211)"
    assert twilio_api.parse_error(502, b"<html>").reason == "http_502"
    phone, caps = twilio_api.parse_number(msgspec.json.encode({
        "phone_number": "+16476960000", "sid": "PN1",
        "capabilities": {"mms": True, "sms": True, "voice": False, "fax": False}}))
    assert phone == "+16476960000" and (caps.mms, caps.sms, caps.voice) == (True, True, False)
    with pytest.raises(BadRequest):
        twilio_api.parse_number(b"{}")
    assert twilio_api.number_url("https://api.twilio.com/", "AC1", "PN1") == \
        "https://api.twilio.com/2010-04-01/Accounts/AC1/IncomingPhoneNumbers/PN1.json"
    assert twilio_api.messages_url("https://api.twilio.com", "AC1") == \
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
    assert twilio_api.sms_url_update("https://h", "i") == [
        ("SmsUrl", "https://h/ingress/i"), ("SmsMethod", "POST")]
