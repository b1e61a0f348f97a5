"""An integration as the API speaks it: what a client sends, and what a read shows.

In: the bodies of a create and an update (`IntegrationCreate`, `IntegrationUpdate`), and
the names in them (channelId, integrationTypeId, statusId) given as a name in any case
or as Hubster's numeric code, parsed to ours. Out: a stored integration as the API shows
it (`integration_out`), names not codes, secrets masked as `MASK`, which an update may
send back to mean "unchanged". Plain functions, no I/O: the API module calls them.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from switchboard import names
from switchboard.channels import CONFIG_TYPES
from switchboard.errors import BadRequest
from switchboard.model import (
    CHANNEL_CODES,
    INTEGRATION_TYPE_CODES,
    ChannelId,
    IntegrationType,
    StatusId,
)
from switchboard.registry import IntegrationRecord

__all__ = ["MASK", "IntegrationCreate", "IntegrationUpdate", "integration_out",
           "parse_channel", "parse_integration_type", "parse_status"]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
# What reads show in place of a secret; sent back in an update, it means "unchanged".
MASK = "********"


class IntegrationCreate(Struct, rename="camel"):
    channel_id: str | int
    name: Name
    configuration: dict[str, Any]
    # A code (3000) or its name in any case ("Active").
    status_id: int | str = StatusId.ACTIVE
    integration_type_id: str | int | None = None


class IntegrationUpdate(Struct, rename="camel"):
    name: Name | None = None
    status_id: int | str | None = None
    configuration: dict[str, Any] | None = None


def parse_channel(value: str | int) -> ChannelId:
    """A channelId given as a name (any case) or as Hubster's numeric code."""
    if isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        channel = CHANNEL_CODES.get(_code(value))
        if channel is None:
            raise BadRequest("invalid_channel", f"unknown channelId {str(value)[:40]}",
                             "channelId")
        return channel
    found = names.CHANNELS.canonical(value)
    if found is not None:
        return ChannelId(found)
    listed = ", ".join(names.CHANNELS.names)
    raise BadRequest("invalid_channel", f"channelId must be one of {listed}", "channelId")


def parse_integration_type(value: str | int) -> IntegrationType:
    """An integrationTypeId given as a name (any case) or as Hubster's numeric code."""
    if isinstance(value, int) or (value.isascii() and value.isdigit()):
        found = INTEGRATION_TYPE_CODES.get(_code(value))
    else:
        name = names.INTEGRATION_TYPES.canonical(value)
        found = IntegrationType(name) if name is not None else None
    if found is None:
        raise BadRequest("invalid_integration_type",
                         f"unknown integrationTypeId {str(value)[:40]}", "integrationTypeId")
    return found


def _code(value: str | int) -> int:
    """A numeric code as given; -1 (no code) for digits too long to be one: int() of
    4,300 or more digits raises ValueError, which would be a 500."""
    if isinstance(value, int):
        return value
    return int(value) if len(value) <= 9 else -1


def parse_status(value: int | str) -> int:
    """A statusId as its code or its name in any case (``"paused"``) → the code."""
    code = names.status_code(value)
    if code not in (StatusId.ACTIVE, StatusId.PAUSED):
        raise BadRequest("invalid_status", "statusId must be 3000 (Active) or 3002 (Paused)",
                         "statusId")
    return int(code)


def integration_out(rec: IntegrationRecord, shown: dict[str, str] | None) -> dict[str, Any]:
    """The integration as the API shows it: names not codes, secrets masked, the current
    key generation's public keys, and `shown` (secrets shown once) when given."""
    config = msgspec.to_builtins(rec.configuration)
    config.pop("channel", None)
    cls = CONFIG_TYPES[rec.channel_id]
    for name in cls.SECRET_FIELDS:
        wire = cls.__struct_encode_fields__[cls.__struct_fields__.index(name)]
        if config.get(wire):
            config[wire] = MASK
    current = next((k for k in rec.keys if k.retired_at is None), None)
    if current is not None:
        config["publicSigningKey"] = current.outbound_public
        if current.hubster_public is not None:
            config["hubsterPublicKey"] = current.hubster_public
    if shown is not None:
        config.update(shown)
    return {
        "integrationId": rec.integration_id,
        "hubId": rec.hub_id,
        "integrationTypeId": rec.integration_type.value,
        "channelId": rec.channel_id.value,
        "name": rec.name,
        "statusId": rec.status_id,
        "configuration": config,
    }
