"""`hub.yaml`: hubs and integrations declared in a file, and how what is declared compares
with what the API answers (parsing and decisions only; no I/O).

`switchboard apply` writes only where the two differ, so applying the same file twice
writes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta, Struct, field

from switchboard.channels import CONFIG_TYPES, DirectConfig, SystemConfig, parse_config
from switchboard.config_update import replacing
from switchboard.errors import BadRequest
from switchboard.model import CHANNEL_CODES, ChannelId


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

    def steps(self) -> int:
        """How many hubs and integrations the file declares (apply's progress total)."""
        return sum(1 + len(h.integrations) for h in self.hubs)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as `line N, column M: problem` (1-based, as editors count)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc).replace("\n", " ")


def parse_hub_file(text: str) -> HubFile:
    """Parse and validate a hub.yaml document; BadRequest `invalid_hub_file` says where."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadRequest("invalid_hub_file", f"not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict) or "hubs" not in data:
        raise BadRequest("invalid_hub_file",
                         "expected a mapping with a `hubs:` list at the top (see the README)")
    try:
        hub_file = msgspec.convert(data, HubFile)
    except msgspec.ValidationError as exc:
        raise BadRequest("invalid_hub_file", str(exc)) from None
    seen: set[str] = set()
    for hub in hub_file.hubs:
        # Hub names are unique case-insensitively: two entries would be one hub.
        if hub.name.casefold() in seen:
            raise BadRequest("invalid_hub_file", f"hub {hub.name!r} is declared twice")
        seen.add(hub.name.casefold())
        names = [i.name.casefold() for i in hub.integrations]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise BadRequest("invalid_hub_file",
                             f"hub {hub.name!r}: integration {dup!r} is declared twice")
    return hub_file


def find_by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The API object whose `name` matches case-insensitively, as the API compares names."""
    return next((i for i in items if str(i.get("name", "")).casefold() == name.casefold()),
                None)


def hub_patch(declared: DeclaredHub, current: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH body that makes the hub `current` (as the API shows it) what `declared`
    says; empty when nothing differs."""
    patch: dict[str, Any] = {}
    if current.get("name") != declared.name:  # only the case can differ: a rename
        patch["name"] = declared.name
    if declared.compat is not None and declared.compat != (current.get("compat") or "none"):
        patch["compat"] = declared.compat
    return patch


def integration_body(declared: DeclaredIntegration) -> dict[str, Any]:
    """What create and update send for `declared`."""
    return {"channelId": declared.channel_id, "name": declared.name,
            "statusId": declared.status_id, "configuration": declared.configuration}


def channel_of(value: str | int) -> ChannelId | None:
    """A channelId given as a name (any case) or a numeric code; None if unknown."""
    if isinstance(value, int) or (value.isascii() and value.isdigit()):
        return CHANNEL_CODES.get(int(value)) if len(str(value)) <= 9 else None
    return next((c for c in ChannelId if c.value.casefold() == value.casefold()), None)


# Shown by reads, made by the hub, or request-only flags: never part of what is declared.
_NOT_DECLARED = frozenset({"publicSigningKey", "hubsterPublicKey", "regenerateKeys",
                           "RegenerateKeys", "revokePrevious", "RevokePrevious"})


def integration_differences(declared: DeclaredIntegration, current: Mapping[str, Any]
                            ) -> list[str]:
    """Which of `channelId`, `name`, `statusId`, `configuration` an update would change on
    the integration `current` (as the API shows it); empty when it is as declared.

    Configurations are compared as the hub would store them: both sides go through the
    hub's own parsing, and a replacing update keeps what it keeps (see config_update).
    Provider channels keep their configuration on update, so only Direct, System and
    WebChat configurations are compared; a secret a read masks cannot be compared.
    """
    changed: list[str] = []
    channel = channel_of(declared.channel_id)
    if channel is None or channel.value != current.get("channelId"):
        changed.append("channelId")
    if current.get("name") != declared.name:
        changed.append("name")
    if current.get("statusId") != declared.status_id:
        changed.append("statusId")
    if channel is not None and channel.value == current.get("channelId") and _replaceable(
            channel) and _config_differs(channel, declared.configuration,
                                         current.get("configuration")):
        changed.append("configuration")
    return changed


def _replaceable(channel: ChannelId) -> bool:
    cls = CONFIG_TYPES[channel]
    return issubclass(cls, DirectConfig | SystemConfig) or channel is ChannelId.WEBCHAT


def _config_differs(channel: ChannelId, declared: dict[str, Any], current: object) -> bool:
    if not isinstance(current, dict):
        return True
    try:
        stored = parse_config(channel, {k: v for k, v in current.items()
                                        if k not in _NOT_DECLARED}, allow_private=True)
        wanted = parse_config(channel, replacing(stored, {
            k: v for k, v in declared.items() if k not in _NOT_DECLARED}), allow_private=True)
    except BadRequest:
        return True  # the hub will say what is wrong with it
    return bool(_comparable(stored) != _comparable(wanted))


def _comparable(config: Any) -> Any:
    shown = msgspec.to_builtins(config)
    cls = type(config)
    for name in cls.SECRET_FIELDS:
        wire = cls.__struct_encode_fields__[cls.__struct_fields__.index(name)]
        if shown.get(wire):
            shown[wire] = "********"
    return shown
