"""Every parser refuses deep nesting with our error, and what the fuzz suite found stays
fixed (each of these escaped as a bare exception, a 500 or a crashed socket, before)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from switchboard import jsonsafe
from switchboard.channels import parse_config
from switchboard.destinations import validate_webhook_url
from switchboard.errors import BadRequest, Forbidden, PayloadTooLarge, SwitchboardError
from switchboard.inbound import check_content_length
from switchboard.integration_wire import parse_channel, parse_integration_type
from switchboard.model import ChannelId
from switchboard.providers import (
    messenger_events,
    messenger_send,
    messenger_verification,
    slack_events,
    slack_posts,
    twilio_api,
    twilio_webhooks,
)
from switchboard.providers import webchat as wc
from switchboard.services.deliveries_api import _int_param
from switchboard.services.stream_protocol import client_decoder

DEEP = b"[" * 10_000 + b"]" * 10_000


def test_every_json_parser_refuses_deep_nesting_with_our_error() -> None:
    with pytest.raises(BadRequest) as caught:
        messenger_events.parse_webhook(b'{"object":"page","x":' + DEEP + b"}")
    assert caught.value.code == "invalid_json"
    # Before the signature is checked, a deep body simply names no pages.
    assert messenger_verification.page_ids(b'{"entry":[{"id":"1","x":' + DEEP + b"}]}") == []
    assert messenger_send.graph_error(b'{"error":' + DEEP + b"}") is None
    with pytest.raises(BadRequest) as caught:
        slack_events.parse_envelope(b'{"type":"event_callback","x":' + DEEP + b"}")
    assert caught.value.code == "invalid_json"
    assert slack_posts.parse_post_response(200, b'{"ok":true,"x":' + DEEP + b"}", None).reason \
        == "slack_invalid_response"
    assert twilio_api.parse_error(400, b'{"x":' + DEEP + b"}").code == 0
    with pytest.raises(wc.FrameError) as frame_error:
        wc.parse_client_frame('{"type":"message","x":' + DEEP.decode() + "}")
    assert frame_error.value.status == 400 and frame_error.value.code == "invalid_frame"
    with pytest.raises(BadRequest):
        jsonsafe.decode(b'{"type":"ack","x":' + DEEP + b"}", client_decoder)


def test_a_frame_with_a_lone_surrogate_is_refused_not_crashed() -> None:
    with pytest.raises(wc.FrameError):
        wc.parse_client_frame('{"type":"message","id":"a","text":"\udcc8"}')
    with pytest.raises(BadRequest) as caught:
        jsonsafe.decode('{"type":"ack","cursor":"\ud800"}', client_decoder)
    assert caught.value.code == "invalid_json"


def test_the_meta_handshake_survives_a_lone_surrogate() -> None:
    with pytest.raises(Forbidden):
        messenger_verification.handshake({"hub.mode": "subscribe", "hub.verify_token": "\udfff",
                                          "hub.challenge": "1"}, "tok")


LONG_DIGITS = "9" * 4301  # int() refuses more than 4,300 digits with ValueError


def test_digit_strings_past_ints_limit_are_refused_as_bad_input() -> None:
    with pytest.raises(BadRequest):
        parse_channel(LONG_DIGITS)
    with pytest.raises(BadRequest):
        parse_integration_type(LONG_DIGITS)
    with pytest.raises(PayloadTooLarge):
        check_content_length(LONG_DIGITS, 1024)
    assert check_content_length("0" * 40 + "12", 1024) == 12
    request = Request({"type": "http", "query_string": f"since={LONG_DIGITS}".encode(),
                       "headers": []})
    with pytest.raises(BadRequest):
        _int_param(request, "since", 0)
    status = [("MessageSid", "SM1"), ("To", "+1"), ("MessageStatus", "failed"),
              ("ErrorCode", LONG_DIGITS)]
    (activity,) = twilio_webhooks.normalize(status, hub_id="h", integration_id="i",
                                            query=[("ref", "r"), ("part", LONG_DIGITS)], now_ms=0)
    assert activity.event is not None and "part" not in activity.event.data
    assert activity.event.data["errorCode"] == LONG_DIGITS[:32]


@pytest.mark.parametrize("url", [
    "https://example.com/a\u2028b", "https://example.com/\u00a0", "https://example.com/\u200b",
    "https://example.com/\u3000", "https://example.com/\udcff",
])
def test_webhook_urls_refuse_every_unicode_space_and_unprintable(url: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_webhook_url(url, allow_private=True, field="f")
    assert caught.value.code == "invalid_url"


def test_a_webhook_url_of_the_wrong_scheme_or_length_is_invalid_url() -> None:
    for url in ("ftp://example.com/", "https://example.com/" + "a" * 2048, 7):
        with pytest.raises(SwitchboardError) as caught:
            parse_config(ChannelId.DIRECT, {"integrationType": "Agent", "webhookUrl": url})
        assert (caught.value.code, caught.value.field) == ("invalid_url",
                                                           "configuration.webhookUrl")
