"""`hub.yaml`: hubs and integrations declared in a file (parsing only; no I/O)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta, Struct, field

from switchboard.errors import BadRequest


class DeclaredIntegration(Struct, rename="camel"):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    channel_id: str | int
    configuration: dict[str, Any]
    status_id: int = 3000


class DeclaredHub(Struct, rename="camel"):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    integrations: list[DeclaredIntegration] = field(default_factory=list)
    # "hubster": the hub answers as Hubster does (see the README, *Porting from Hubster*);
    # "none" turns that off; absent leaves the hub's mode as it is.
    compat: Literal["hubster", "none"] | None = None


class HubFile(Struct):
    hubs: list[DeclaredHub]


def parse_hub_file(text: str) -> HubFile:
    """Parse and validate a hub.yaml document."""
    try:
        data = yaml.safe_load(text)
        return msgspec.convert(data, HubFile)
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise BadRequest("invalid_hub_file", str(exc)) from None
