"""The Hubster compatibility translation (switchboard.hubster_compat): every key of the
table both ways, codes, round trips, the switches, and the README's copy of the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchboard import hubster_compat as hc
from switchboard.channels import CONFIG_TYPES
from switchboard.errors import BadRequest
from switchboard.model import CHANNEL_CODES, INTEGRATION_TYPE_CODES, ChannelId, IntegrationType

README = Path(__file__).resolve().parents[2] / "README.md"
# What answers hold besides a channel's stored fields: made by the hub, shown once or always.
GENERATED = {"publicSigningKey", "privateSigningKey", "webhookSecret", "hubsterPublicKey",
             "hubsterPrivateKey", "inboundSecret", "inboundUrl"}
TYPE_OF = {ChannelId.DIRECT: "Agent", ChannelId.SYSTEM: "System",
           ChannelId.TWILIO_SMS: "Customer", ChannelId.MESSENGER: "Customer",
           ChannelId.WEBCHAT: "Customer", ChannelId.SLACK: "Agent", ChannelId.SYNCRO: "Agent"}


def answer(channel: ChannelId, config: dict[str, Any], itype: str | None = None
           ) -> dict[str, Any]:
    return {"integrationId": "i-1", "hubId": "h-1",
            "integrationTypeId": itype or TYPE_OF[channel], "channelId": channel.value,
            "name": "n", "statusId": 3000, "configuration": config}


def shown_keys(channel: ChannelId) -> list[hc.Key]:
    return [k for k in hc.KEYS[channel] if not k.request_only]


def sample(key: hc.Key) -> Any:
    if key.children:
        return {c.ours: True for c in key.children}
    return False if key.write_default is True else f"value of {key.ours}"


def test_the_table_knows_every_field_each_channel_stores_or_shows() -> None:
    for channel, cls in CONFIG_TYPES.items():
        ours = {k.ours for k in hc.KEYS[channel]}
        stored = set(cls.__struct_encode_fields__)
        assert stored <= ours, (channel, stored - ours)
        # Nothing in the table that the channel neither stores, shows nor takes.
        flags = {"regenerateKeys", "revokePrevious"}
        assert ours <= stored | GENERATED | flags, (channel, ours - stored - GENERATED)
        assert len(ours) == len(hc.KEYS[channel])  # one row per key


@pytest.mark.parametrize("channel", list(ChannelId))
def test_every_key_spelled_as_the_table_says_both_ways(channel: ChannelId) -> None:
    for key in shown_keys(channel):
        value = sample(key)
        for view, spelled in ((hc.WRITE, key.write), (hc.READ, key.read)):
            out = hc.to_hubster(answer(channel, {key.ours: value}), view)["configuration"]
            if key.hidden:
                assert key.ours not in out and key.read not in out and key.write not in out
                continue
            assert spelled in out, (key.ours, view)
            if key.children:
                child = {c.write if view == hc.WRITE else c.read for c in key.children}
                assert set(out[spelled]) == child
            back = hc.from_hubster(hc.to_hubster(answer(channel, {key.ours: value}), view),
                                   view)
            assert back["configuration"] == {key.ours: value}
        # Requests take every spelling: ours, both of the seed's, and PascalCase.
        for given in {key.ours, key.write, key.read, key.ours[:1].upper() + key.ours[1:]}:
            assert hc.config_from_hubster(channel, {given: value}) == {key.ours: value}


def test_the_seeds_spellings() -> None:
    twilio = {"accountSid": "AC1", "authToken": "********", "numberSid": "PN1",
              "phoneNumber": "+1647", "capabilities": {"mms": True, "sms": True, "voice": False}}
    got = hc.to_hubster(answer(ChannelId.TWILIO_SMS, twilio), hc.READ)
    assert got == {
        "integrationId": "i-1", "hubId": "h-1", "inboundId": "AC1",
        "integrationTypeId": 2, "channelId": 102, "name": "n", "statusId": 3000,
        "configuration": {"AcccountSid": "AC1", "AuthToken": "********", "NumberSid": "PN1",
                          "PhoneNumber": "+1647",
                          "Capabilities": {"Mms": True, "Sms": True, "Voice": False}}}
    # The seed's create answer: names, and our own spelling.
    assert hc.to_hubster(answer(ChannelId.TWILIO_SMS, twilio), hc.WRITE) == {
        **answer(ChannelId.TWILIO_SMS, twilio)}
    web = {"allowedOrigins": ["hubster.io"]}
    assert hc.to_hubster(answer(ChannelId.WEBCHAT, web), hc.WRITE)["configuration"] == {
        "AllowedOrigins": ["hubster.io"], "Echo": True}
    assert hc.to_hubster(answer(ChannelId.WEBCHAT, web), hc.READ)["configuration"] == web
    slack = {"botAccessToken": "********", "teamId": "T1", "botUserId": "U1"}
    assert hc.to_hubster(answer(ChannelId.SLACK, slack), hc.READ)["configuration"] == {
        "BotAccessToken": "********", "TeamId": "T1"}
    assert hc.to_hubster(answer(ChannelId.MESSENGER, {"pageAccessToken": "x"}),
                         hc.READ)["configuration"] == {"PageAccessToken": "x"}


def test_codes_on_reads_names_on_writes() -> None:
    for code, channel in CHANNEL_CODES.items():
        got = hc.to_hubster(answer(channel, {}), hc.READ)
        assert got["channelId"] == code
        assert hc.to_hubster(answer(channel, {}), hc.WRITE)["channelId"] == channel.value
    for code, itype in INTEGRATION_TYPE_CODES.items():
        got = hc.to_hubster(answer(ChannelId.DIRECT, {}, itype.value), hc.READ)
        assert got["integrationTypeId"] == code
        assert hc.from_hubster(got, hc.READ)["integrationTypeId"] == itype.value
    # inboundId only where the seed has it: a TwilioSMS integration's GET.
    for channel in ChannelId:
        cfg = {"accountSid": "AC1"} if channel is ChannelId.TWILIO_SMS else {}
        assert ("inboundId" in hc.to_hubster(answer(channel, cfg), hc.READ)) is (
            channel is ChannelId.TWILIO_SMS)
        assert "inboundId" not in hc.to_hubster(answer(channel, cfg), hc.WRITE)


@pytest.mark.parametrize("view", [hc.WRITE, hc.READ])
def test_whole_answers_round_trip(view: hc.View) -> None:
    for channel in ChannelId:
        config = {k.ours: sample(k) for k in shown_keys(channel) if not k.hidden}
        for itype in ([t.value for t in IntegrationType if t is not IntegrationType.SYSTEM]
                      if channel is ChannelId.DIRECT else [TYPE_OF[channel]]):
            ours = answer(channel, config, itype)
            assert hc.from_hubster(hc.to_hubster(ours, view), view) == ours, (channel, itype)


def test_requests_refuse_one_key_twice_and_leave_unknown_keys_to_the_parser() -> None:
    with pytest.raises(BadRequest) as err:
        hc.config_from_hubster(ChannelId.WEBCHAT, {"AllowedOrigins": ["a"],
                                                   "allowedOrigins": ["b"]})
    assert err.value.field == "configuration.allowedOrigins"
    with pytest.raises(BadRequest) as err:
        hc.config_from_hubster(ChannelId.TWILIO_SMS, {
            "capabilities": {"Mms": True, "mms": False}})
    assert err.value.field == "configuration.capabilities.mms"
    assert hc.config_from_hubster(ChannelId.DIRECT, {"Colour": 1, "Echo": True}) == {
        "Colour": 1, "echo": True}
    assert hc.config_from_hubster(ChannelId.TWILIO_SMS, {"Capabilities": [1]}) == {
        "capabilities": [1]}


def test_which_requests_get_hubster_answers() -> None:
    accept = "application/vnd.hubster+json"
    for query, acc, hub, want in [
        (None, None, None, False), (None, None, "hubster", True),
        ("hubster", None, None, True), ("none", None, "hubster", False),
        ("none", accept, None, False), (None, accept, None, True),
        (None, "application/json", "hubster", True), (None, "*/*", None, False),
        (None, f"text/html, {accept.upper()};q=0.5", None, True),
        (None, "application/vnd.hubster+jsonx", None, False),
        # Our own fixed names, in any case.
        ("HUBSTER", None, None, True), ("None", None, "hubster", False),
    ]:
        assert hc.wants_hubster(query, acc, hub) is want, (query, acc, hub)
    for bad in ("", "soap", "hubster ", "x" * 10_000):
        with pytest.raises(BadRequest) as err:
            hc.wants_hubster(bad, None, None)
        assert err.value.field == "compat" and err.value.code == "invalid_compat"
        assert bad[:20] not in err.value.description or bad == ""
    assert hc.hub_setting("hubster") == "hubster"
    assert hc.hub_setting("none") is None and hc.hub_setting(None) is None
    assert hc.hub_setting("Hubster") == "hubster" and hc.hub_setting("NONE") is None
    with pytest.raises(BadRequest):
        hc.hub_setting("hubsterx")


def readme_rows() -> list[str]:
    rows = []
    for channel, keys in hc.KEYS.items():
        for key in keys:
            entries = [(key.ours, key.write, key.read, key)]
            entries += [(f"{key.ours}.{c.ours}", f"{key.write}.{c.write}",
                         f"{key.read}.{c.read}", c) for c in key.children]
            for ours, write, read, k in entries:
                note = ("request only" if k.request_only else "never shown in compat answers"
                        if k.hidden else "shown even when `true` (the default)"
                        if k.write_default is True else "")
                rows.append(f"| {channel.value} | `{ours}` | `{write}` | `{read}` | {note} |")
    return rows


def test_the_readme_table_is_the_code_table() -> None:
    text = README.read_text()
    missing = [row for row in readme_rows() if row not in text]
    assert not missing, "README's key table differs from hubster_compat.KEYS:\n" + "\n".join(
        missing)
