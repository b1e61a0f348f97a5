"""Fuzz: the API's request bodies and what validates them (channels, configurations,
statuses, retry schedules, webhook URLs), and the JSON decode helper under them all.

Invariant: every body is accepted or refused with our error, nothing else (a
RecursionError or ValueError here is a 500); a configuration the API accepts is one the
registry can store and every process read back; an accepted webhook URL obeys the rules
the README states.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import msgspec
from hypothesis import given
from starlette.requests import Request

from switchboard import integration_wire, jsonsafe
from switchboard.channels import integration_type_of, parse_config
from switchboard.destinations import MAX_URL_CHARS, forbidden_address, validate_webhook_url
from switchboard.model import ChannelId
from switchboard.registry import IntegrationRecord, record_decoder, record_encoder
from switchboard.services.deliveries_api import RedeliverRequest, ReplayRequest, _int_param
from switchboard.services.hubs_api import HubCreate, HubUpdate, _retry_schedule
from tests.fuzz.strategies import cases, damage, near_valid, ours_or_result, text_like

CONFIGS: dict[str, Any] = {
    "Direct": {"integrationType": "Customer", "webhookUrl": "https://x.test/hook", "echo": True,
               "hmacSigning": False, "maxDeliveriesPerSecond": 5,
               "start": [{"type": "text", "text": "hi", "quickReplies": [{"title": "a"}]}]},
    "System": {"webhookUrl": "https://x.test/sys", "events": ["message:*", "event:seen"]},
    "TwilioSMS": {"accountSid": "AC1", "authToken": "t", "numberSid": "PN1",
                  "sharedKeySecret": "k", "echo": False},
    "Messenger": {"pageAccessToken": "x", "appSecret": "s", "pageId": "1"},
    "WebChat": {"allowedOrigins": ["example.com", "*.x.test"], "echo": True},
    "Slack": {"code": "c", "defaultPublicChannel": "general", "botAccessToken": "xoxb"},
    "Syncro": {"subdomain": "acme", "apiToken": "T0k3n", "defaultTicketStatus": "New",
               "problemType": "Other", "commentHidden": True,
               "events": ["syncro:ticket.*", "syncro:customer.created"]},
}
BODIES: list[Any] = [
    *({"channelId": channel, "name": "n", "configuration": config, "statusId": 3000,
       "integrationTypeId": "Customer"} for channel, config in CONFIGS.items()),
    {"channelId": 1, "name": "n", "configuration": {"integrationType": "Agent",
                                                     "regenerateKeys": True}},
    {"name": "renamed", "statusId": 3002, "configuration": CONFIGS["Direct"]},
    {"name": "acme", "retrySchedule": "0,1,5,30"},
    {"retrySchedule": None},
    {"deliveryId": "d-1", "status": "failed", "since": 0},
    {"since": 0, "until": 1_700_000_000_000},
]
TYPES = [integration_wire.IntegrationCreate, integration_wire.IntegrationUpdate, HubCreate,
         HubUpdate, RedeliverRequest, ReplayRequest]


class Body(NamedTuple):
    raw: bytes
    allow_private: bool
    query: bytes


def body_case(r: random.Random) -> Body:
    names = ["since", "until", "limit", "status", "cursor", "x"]
    pairs = [(r.choice(names), text_like(r, "0", "1700000000000", "-1", "50", "9" * 4301,
                                         "1e3", "\u0661"))
             for _ in range(r.randrange(4))]
    query = damage(r, urlencode(pairs, errors="surrogatepass").encode())
    return Body(near_valid(r, *BODIES), r.random() < 0.5, query)


def _stored(channel: ChannelId, config: Any) -> None:
    """The registry must be able to read back what the API writes."""
    rec = IntegrationRecord(
        integration_id="i-1", hub_id="h-1", channel_id=channel,
        integration_type=integration_type_of(config), name="n", status_id=3000,
        configuration=config, version=1, created_at=0, updated_at=0)
    assert record_decoder.decode(record_encoder.encode(rec)) == rec


@given(cases(body_case))
def test_api_bodies(case: Body) -> None:
    # The deliveries API's integer query parameters (a Request over a bare scope: no I/O).
    request = Request({"type": "http", "query_string": case.query, "headers": []})
    for name in ("since", "until", "limit"):
        number = ours_or_result(_int_param, request, name, 0, 10**13)
        assert number is None or 0 <= number <= 10**13
    for into in TYPES:
        body = ours_or_result(jsonsafe.decode, case.raw, jsonsafe.decoder_for(into))
        if isinstance(body, integration_wire.IntegrationCreate):
            channel = ours_or_result(integration_wire.parse_channel, body.channel_id)
            if channel is not None:
                config = ours_or_result(parse_config, channel, body.configuration,
                                        allow_private=case.allow_private)
                if config is not None:
                    _stored(channel, config)
            if body.integration_type_id is not None:
                ours_or_result(integration_wire.parse_integration_type, body.integration_type_id)
            ours_or_result(integration_wire.parse_status, body.status_id)
        elif isinstance(body, integration_wire.IntegrationUpdate):
            if body.status_id is not None:
                ours_or_result(integration_wire.parse_status, body.status_id)
            if body.configuration is not None:
                for channel in ChannelId:
                    config = ours_or_result(parse_config, channel, body.configuration,
                                            allow_private=case.allow_private)
                    if config is not None:
                        _stored(channel, config)
        elif isinstance(body, HubCreate | HubUpdate):
            schedule = body.retry_schedule
            if isinstance(schedule, str):
                ours_or_result(_retry_schedule, schedule)


class Url(NamedTuple):
    url: str
    allow_private: bool
    address: str


def url_case(r: random.Random) -> Url:
    url = text_like(
        r, "https://example.com/hook", "http://example.com", "http://", "http://exa mple.com/",
        "http://user:pass@example.com/", "https://[2606:4700::1111]:8443/a?b#c",
        "http://127.0.0.1:9/x", "https://bücher.example/", "http://[fe80::1%25eth0]/",
        "http://0x7f.1/", "https://a." + "b" * 63 + ".com/", "HTTP://EXAMPLE.COM",
        "https://example.com/" + "a" * (MAX_URL_CHARS - 20), max_size=MAX_URL_CHARS + 50)
    roll = r.random()
    if roll < 0.4:
        address = str(ipaddress.IPv4Address(r.getrandbits(32)))
    elif roll < 0.8:
        address = str(ipaddress.IPv6Address(r.getrandbits(128)))
    else:
        address = text_like(r, "127.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "1.1.1.1",
                            "2002::1", "::", "0.0.0.0")
    return Url(url, r.random() < 0.5, address)


@given(cases(url_case))
def test_webhook_url_validation(case: Url) -> None:
    # The address policy under it, for any address: a bool, never an exception.
    assert isinstance(forbidden_address(case.address), bool)
    url = ours_or_result(validate_webhook_url, case.url, allow_private=case.allow_private,
                         field="configuration.webhookUrl")
    if url is None:
        return
    # What the README promises of every accepted URL.
    parts = urlsplit(url)
    assert url == case.url and len(url) <= MAX_URL_CHARS
    assert parts.scheme in ("http", "https") and parts.hostname
    assert "@" not in parts.netloc and parts.port != 0
    assert not any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in url)
    try:
        literal = str(ipaddress.ip_address(parts.hostname))
    except ValueError:
        return
    if not case.allow_private:
        assert not forbidden_address(literal)


class Json(NamedTuple):
    raw: bytes


@given(cases(lambda r: Json(near_valid(r, *BODIES, *CONFIGS.values()))))
def test_json_decode(case: Json) -> None:
    # The helper under every entry point: any bytes, decoded in full (no field skipped).
    ours_or_result(jsonsafe.decode, case.raw, jsonsafe.decoder_for(Any))
    ours_or_result(jsonsafe.decode, case.raw, jsonsafe.decoder_for(dict[str, Any]))
    too_deep = jsonsafe.depth_exceeds(case.raw)
    try:
        msgspec.json.decode(case.raw)
    except RecursionError:
        assert too_deep, "msgspec recursed too deep on a document the check let through"
    except msgspec.DecodeError:
        pass
