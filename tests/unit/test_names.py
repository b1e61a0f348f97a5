"""Our fixed names are accepted in any case and kept in their canonical spelling."""

from __future__ import annotations

import json

import msgspec
import pytest

from switchboard import hubster_compat, names
from switchboard.channels import DirectConfig, SyncroConfig, SystemConfig, parse_config
from switchboard.errors import BadRequest
from switchboard.integration_wire import parse_channel, parse_integration_type, parse_status
from switchboard.model import (
    Card,
    CarouselMessage,
    ChannelId,
    FileMessage,
    ImageMessage,
    IntegrationType,
    TextMessage,
    inbound_decoder,
)
from switchboard.services.deliveries_api import RedeliverRequest


def test_a_vocabulary_finds_the_canonical_spelling() -> None:
    v = names.Vocabulary(["TwilioSMS", "WebChat"])
    assert v.canonical("twiliosms") == "TwilioSMS" and v.canonical("TWILIOSMS") == "TwilioSMS"
    assert v.canonical("webchat") == "WebChat" and v.canonical("WebChat") == "WebChat"
    assert v.canonical("Twilio") is None and v.canonical("") is None
    assert "WEBCHAT" in v and "web chat" not in v and 3 not in v
    # Not a name: left as it was, for the validation after it to refuse.
    assert names.canonical_or_same("nope", v) == "nope" and names.canonical_or_same(7, v) == 7
    assert names.canonical_list(["webchat", "x"], v) == ["WebChat", "x"]
    assert names.canonical_list("webchat", v) == "webchat"


@pytest.mark.parametrize(("given", "want"), [
    ("direct", ChannelId.DIRECT), ("TWILIOSMS", ChannelId.TWILIO_SMS),
    ("twilioSms", ChannelId.TWILIO_SMS), ("webCHAT", ChannelId.WEBCHAT),
    ("Syncro", ChannelId.SYNCRO), (102, ChannelId.TWILIO_SMS), ("1", ChannelId.DIRECT),
])
def test_channel_ids_in_any_case(given: str | int, want: ChannelId) -> None:
    assert parse_channel(given) is want


def test_unknown_channel_is_a_400_naming_the_canonical_names() -> None:
    with pytest.raises(BadRequest) as err:
        parse_channel("twilio")
    assert err.value.code == "invalid_channel" and "TwilioSMS" in err.value.description


def test_integration_types_and_statuses_in_any_case() -> None:
    assert parse_integration_type("customer") is IntegrationType.CUSTOMER
    assert parse_integration_type("BOT") is IntegrationType.BOT
    assert parse_integration_type(3) is IntegrationType.AGENT
    with pytest.raises(BadRequest):
        parse_integration_type("customers")
    assert parse_status("paused") == 3002 and parse_status("ACTIVE") == 3000
    assert parse_status(3002) == 3002
    for bad in ("3000", "pause", 1, True):
        with pytest.raises(BadRequest) as err:
            parse_status(bad)
        assert err.value.code == "invalid_status"


def test_configuration_names_in_any_case_are_stored_canonical() -> None:
    cfg = parse_config(ChannelId.DIRECT, {"integrationType": "customer",
                                          "signatureScheme": "HUBSTER"})
    assert isinstance(cfg, DirectConfig)
    assert cfg.integration_type is IntegrationType.CUSTOMER and cfg.signature_scheme == "hubster"
    # Hubster's PascalCase keys with a lower-case value.
    cfg = parse_config(ChannelId.DIRECT, {"IntegrationType": "agent"})
    assert isinstance(cfg, DirectConfig) and cfg.integration_type is IntegrationType.AGENT
    system = parse_config(ChannelId.SYSTEM, {"webhookUrl": "https://example.com/h",
                                             "events": ["MESSAGE:*", "Event:Seen"]})
    assert isinstance(system, SystemConfig) and system.events == ["message:*", "event:seen"]
    syncro = parse_config(ChannelId.SYNCRO, {"subdomain": "acme", "apiToken": "t",
                                             "events": ["Syncro:Ticket.*"]})
    assert isinstance(syncro, SyncroConfig) and syncro.events == ["syncro:ticket.*"]


def test_unknown_configuration_names_are_still_refused() -> None:
    for raw in ({"integrationType": "customers"}, {"integrationType": 2},
                {"integrationType": "Customer", "signatureScheme": "hmac"}):
        with pytest.raises(BadRequest) as err:
            parse_config(ChannelId.DIRECT, raw)
        assert err.value.code == "invalid_configuration"
    with pytest.raises(BadRequest) as err:
        parse_config(ChannelId.SYSTEM, {"webhookUrl": "https://example.com/h",
                                        "events": ["message:everything"]})
    assert err.value.code == "invalid_event_filter"
    # The type System is still not a Direct integration's, in any case.
    with pytest.raises(BadRequest):
        parse_config(ChannelId.DIRECT, {"integrationType": "system"})


def test_compat_modes_in_any_case() -> None:
    assert hubster_compat.hub_setting("HubSter") == "hubster"
    assert hubster_compat.wants_hubster("NONE", None, "hubster") is False


def _inbound(kind: str, message: dict[str, object]) -> bytes:
    return json.dumps({"type": kind, "sender": {"id": "u1"},
                       "message": message}).encode()


@pytest.mark.parametrize(("given", "message", "want"), [
    ("message", {"type": "TEXT", "text": "hi"}, TextMessage(text="hi")),
    ("MESSAGE", {"type": "Image", "url": "https://example.test/a.png"},
     ImageMessage(url="https://example.test/a.png")),
    ("Message", {"type": "cArOuSeL", "cards": [{"title": "t"}]},
     CarouselMessage(cards=[Card(title="t")])),
    ("message", {"type": "file", "url": "https://example.test/f"},
     FileMessage(url="https://example.test/f")),
])
def test_an_activitys_message_type_tags_in_any_case_decode_canonical(
        given: str, message: dict[str, object], want: object) -> None:
    got = names.decode_folding(_inbound(given, message), inbound_decoder, names.INBOUND_NAMES,
                               invalid="invalid_activity")
    assert got.type == "message" and got.message == want
    # What is stored and answered is the canonical (lower case) tag.
    assert msgspec.json.decode(msgspec.json.encode(got))["message"]["type"] == (
        str(message["type"]).lower())


@pytest.mark.parametrize(("given", "message", "field"), [
    ("message", {"type": "video", "url": "https://example.test/v"}, "message.type"),
    ("message", {"type": 3, "text": "x"}, "message.type"),
    ("messages", {"type": "text", "text": "x"}, "type"),
    ("message", {"type": "TEXT"}, "message"),  # folded, then refused for what it lacks
])
def test_what_is_not_a_name_is_still_refused_with_its_field(
        given: str, message: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        names.decode_folding(_inbound(given, message), inbound_decoder, names.INBOUND_NAMES,
                             invalid="invalid_activity")
    assert err.value.code == "invalid_activity" and err.value.field == field, err.value


def test_a_redeliver_status_in_any_case() -> None:
    decoder = msgspec.json.Decoder(RedeliverRequest)
    for given in ("FAILED", "Failed", "failed"):
        body = names.decode_folding(json.dumps({"status": given, "since": 0}).encode(),
                                    decoder, {"status": names.DELIVERY_STATUSES})
        assert body.status == "failed"
    with pytest.raises(BadRequest) as err:
        names.decode_folding(b'{"status": "lost"}', decoder,
                             {"status": names.DELIVERY_STATUSES})
    assert err.value.field == "status"
    with pytest.raises(BadRequest) as err:  # malformed JSON stays invalid_json
        names.decode_folding(b'{"status": "FAILED"', decoder,
                             {"status": names.DELIVERY_STATUSES})
    assert err.value.code == "invalid_json"
