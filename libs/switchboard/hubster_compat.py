"""Hubster compatibility mode: our integration answers in the seed's shapes, and back.

Pure translation, applied by the API at the edge. The seed (Hubster's integrations API)
answers a create or update with names (``"channelId": "TwilioSMS"``) and camelCase keys,
except WebChat (``AllowedOrigins``, ``Echo``, ``Start``); it answers a GET with numeric
codes, ``inboundId`` and PascalCase keys for TwilioSMS, Messenger and Slack. Each is
reproduced as the seed shows it: `WRITE` answers (create, update) and `READ` answers
(get, list). `KEYS` is the one table of spellings; the README's copy is checked against it.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

from switchboard.errors import BadRequest
from switchboard.model import CHANNEL_CODES, INTEGRATION_TYPE_CODES, ChannelId, IntegrationType

View = Literal["write", "read"]
WRITE: View = "write"
READ: View = "read"
HUBSTER = "hubster"
MEDIA_TYPE = "application/vnd.hubster+json"
# ``?compat=`` values; "none" asks for the default answers on a compat hub.
MODES = (HUBSTER, "none")


class Key(Struct, frozen=True):
    """One configuration key: ours, the seed's spelling in create/update answers
    (`write`) and in GET answers (`read`)."""

    ours: str
    write: str
    read: str
    children: tuple[Key, ...] = ()
    # Shown in write answers even when it holds the default (the seed's WebChat `Echo`).
    write_default: Any = None
    # Ours only, never shown in compat answers (Slack's own bot user id).
    hidden: bool = False
    # Accepted in requests, never in answers (OAuth code, flags).
    request_only: bool = False


def _camel(*names: str) -> tuple[Key, ...]:
    """Keys the seed spells as we do in every answer."""
    return tuple(Key(n, n, n) for n in names)


def _pascal_read(*names: str) -> tuple[Key, ...]:
    """Keys the seed's create answer spells as we do and its GET in PascalCase."""
    return tuple(Key(n, n, n[:1].upper() + n[1:]) for n in names)


_SIGNING = _camel("publicSigningKey", "privateSigningKey", "webhookSecret", "hmacSigning",
                  "maxDeliveriesPerSecond", "signatureScheme", "hubsterPublicKey",
                  "hubsterPrivateKey")
_FLAGS = tuple(Key(n, n, n, request_only=True) for n in ("regenerateKeys", "revokePrevious"))

KEYS: dict[ChannelId, tuple[Key, ...]] = {
    ChannelId.DIRECT: (*_camel("integrationType", "echo", "webhookUrl", "start"),
                       *_SIGNING, *_FLAGS),
    ChannelId.SYSTEM: (*_camel("webhookUrl", "events"), *_SIGNING, *_FLAGS),
    ChannelId.TWILIO_SMS: (
        # "AcccountSid" (three c's) is how the seed's GET answer spells it.
        Key("accountSid", "accountSid", "AcccountSid"),
        *_pascal_read("authToken", "numberSid", "phoneNumber"),
        Key("capabilities", "capabilities", "Capabilities",
            children=_pascal_read("mms", "sms", "voice")),
        *_pascal_read("sharedKeySecret", "echo", "start"),
    ),
    ChannelId.MESSENGER: _pascal_read("pageAccessToken", "pageId", "appId", "appSecret",
                                      "echo", "start"),
    ChannelId.WEBCHAT: (
        Key("allowedOrigins", "AllowedOrigins", "allowedOrigins"),
        Key("echo", "Echo", "echo", write_default=True),
        Key("start", "Start", "start"),
    ),
    ChannelId.SLACK: (
        *_pascal_read("botAccessToken", "appAccessToken", "defaultPublicChannel", "teamId",
                      "botName"),
        Key("botUserId", "botUserId", "BotUserId", hidden=True),
        Key("code", "code", "Code", request_only=True),
        Key("state", "state", "State", request_only=True),
    ),
    # Not in Hubster: spelled as ours.
    ChannelId.SYNCRO: (*_camel("subdomain", "apiToken", "defaultTicketStatus", "problemType",
                               "commentHidden", "reopen", "events", "inboundSecret",
                               "inboundUrl", "userName"),
                       Key("regenerateKeys", "regenerateKeys", "regenerateKeys",
                           request_only=True)),
}

_CHANNEL_CODE = {channel: code for code, channel in CHANNEL_CODES.items()}
_TYPE_CODE = {itype: code for code, itype in INTEGRATION_TYPE_CODES.items()}


# ---- which answers a request gets --------------------------------------------------


def hub_setting(value: str | None) -> str | None:
    """A hub's ``compat`` as given (``"hubster"``, ``"none"`` or null) → as stored."""
    # Any case ("Hubster", "NONE"): the modes are our own fixed names.
    value = value.casefold() if isinstance(value, str) else value
    if value is None or value == "none":
        return None
    if value == HUBSTER:
        return HUBSTER
    raise BadRequest("invalid_compat", 'compat must be "hubster", "none" or null', "compat")


def wants_hubster(query: str | None, accept: str | None, hub: str | None) -> bool:
    """Whether a request is answered in Hubster's shapes: ``?compat=`` first, then an
    ``Accept`` naming Hubster's media type, then the hub's own setting."""
    if query is not None:
        query = query.casefold()
        if query not in MODES:
            raise BadRequest("invalid_compat", 'compat must be "hubster" or "none"', "compat")
        return query == HUBSTER
    if accept and any(part.split(";", 1)[0].strip().lower() == MEDIA_TYPE
                      for part in accept[:1024].split(",")):
        return True
    return hub == HUBSTER


# ---- answers ------------------------------------------------------------------------


def to_hubster(answer: dict[str, Any], view: View) -> dict[str, Any]:
    """An integration as our API answers it → as the seed answers it in `view`."""
    channel = ChannelId(answer["channelId"])
    itype = IntegrationType(answer["integrationTypeId"])
    config = answer["configuration"]
    out: dict[str, Any] = {"integrationId": answer["integrationId"], "hubId": answer["hubId"]}
    if view == READ and channel is ChannelId.TWILIO_SMS and "accountSid" in config:
        out["inboundId"] = config["accountSid"]  # the seed's GET: the account the SMS come to
    read = view == READ
    out |= {
        "integrationTypeId": _TYPE_CODE[itype] if read else itype.value,
        "channelId": _CHANNEL_CODE[channel] if read else channel.value,
        "name": answer["name"],
        "statusId": answer["statusId"],
        "configuration": _rename_out(config, KEYS[channel], view),
    }
    return out


def from_hubster(answer: dict[str, Any], view: View) -> dict[str, Any]:
    """The inverse of `to_hubster` (keys it hides cannot come back)."""
    channel = _channel(answer["channelId"])
    itype = answer["integrationTypeId"]
    if isinstance(itype, int):
        itype = INTEGRATION_TYPE_CODES[itype].value
    return {
        "integrationId": answer["integrationId"],
        "hubId": answer["hubId"],
        "integrationTypeId": itype,
        "channelId": channel.value,
        "name": answer["name"],
        "statusId": answer["statusId"],
        "configuration": _rename_in(answer["configuration"], KEYS[channel], "configuration",
                                    drop_defaults=view == WRITE),
    }


def _channel(value: str | int) -> ChannelId:
    return CHANNEL_CODES[value] if isinstance(value, int) else ChannelId(value)


def _rename_out(config: dict[str, Any], keys: tuple[Key, ...], view: View) -> dict[str, Any]:
    by_ours = {k.ours: k for k in keys}
    out: dict[str, Any] = {}
    for name, value in config.items():
        key = by_ours.get(name)
        if key is None:  # unknown to the table: shown as ours (the unit tests forbid it)
            out[name] = value
        elif not key.hidden:
            if key.children and isinstance(value, dict):
                value = _rename_out(value, key.children, view)
            out[key.write if view == WRITE else key.read] = value
    if view == WRITE:
        for key in keys:
            if key.write_default is not None and key.write not in out:
                out[key.write] = key.write_default
    return out


# ---- requests -----------------------------------------------------------------------


def config_from_hubster(channel: ChannelId, raw: dict[str, Any]) -> dict[str, Any]:
    """A request's ``configuration`` in any of the seed's spellings → ours.

    Keys the table does not know are left for the channel's parser to refuse (400)."""
    return _rename_in(raw, KEYS[channel], "configuration", drop_defaults=False)


def _spellings(key: Key) -> set[str]:
    return {key.ours, key.write, key.read, key.ours[:1].upper() + key.ours[1:]}


def _rename_in(config: dict[str, Any], keys: tuple[Key, ...], path: str, *,
               drop_defaults: bool) -> dict[str, Any]:
    lookup = {spelling: k for k in keys for spelling in _spellings(k)}
    out: dict[str, Any] = {}
    for name, value in config.items():
        key = lookup.get(name) if isinstance(name, str) else None
        ours = key.ours if key is not None else name
        if ours in out:
            raise BadRequest("invalid_configuration", f"{ours} is given twice",
                             f"{path}.{ours}")
        if key is not None and key.children and isinstance(value, dict):
            value = _rename_in(value, key.children, f"{path}.{ours}", drop_defaults=False)
        if drop_defaults and key is not None and key.write_default is not None \
                and value == key.write_default:
            continue
        out[ours] = value
    return out
