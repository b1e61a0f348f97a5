"""What a sync profile's side says for each real connector kind: its `configuration`
(not secret) and the names of its `credentials`, checked when the profile is created or
updated (400 naming the field) and parsed again by the worker that builds the connector.

- ``platform`` — a CRM serving the platform contract: ``instanceUrl`` (the tenant's base
  URL, checked as a webhook URL), ``capabilities`` (what it implements beyond the required
  methods, by `Capability` value); credentials ``accessToken`` (OAuth2 Bearer) or
  ``apiToken`` (Basic, the token as the user name).
- ``syncro`` — a Syncro account: ``subdomain`` (the base URL is the operator's
  ``SWITCHBOARD_SYNCRO_API_URL``, as for the Syncro integration), ``defaultCustomerId``
  (where contacts without an account go); credential ``apiToken`` (``apiKey`` also read).
- ``graph`` — a Microsoft 365 mailbox on ``SWITCHBOARD_GRAPH_API_URL``: ``taskListId``
  (default: the user's default to-do list), ``pastDays`` / ``futureDays`` (the calendar
  window); credential ``accessToken``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from switchboard.destinations import validate_webhook_url
from switchboard.errors import BadRequest
from switchboard.sync.connector import Capability

__all__ = [
    "GraphConfig",
    "PlatformConfig",
    "SyncroConfig",
    "check_credentials",
    "parse_config",
    "pick_credential",
]

CapabilityName = Literal["users_by_email", "accounts_by_domain", "account_writes",
                         "opportunities", "email", "tasks", "events"]
Subdomain = Annotated[str, Meta(
    min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
Url = Annotated[str, Meta(min_length=1, max_length=2048)]


class PlatformConfig(Struct, frozen=True, kw_only=True, rename="camel",
                     forbid_unknown_fields=True):
    instance_url: Url
    capabilities: list[CapabilityName] = []

    def capability_set(self) -> frozenset[Capability]:
        return frozenset(Capability(c) for c in self.capabilities)


class SyncroConfig(Struct, frozen=True, kw_only=True, rename="camel",
                   forbid_unknown_fields=True):
    subdomain: Subdomain
    default_customer_id: Annotated[int, Meta(ge=1, le=2**53)] | None = None


class GraphConfig(Struct, frozen=True, kw_only=True, rename="camel",
                  forbid_unknown_fields=True):
    task_list_id: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    past_days: Annotated[int, Meta(ge=0, le=3650)] = 28
    future_days: Annotated[int, Meta(ge=1, le=3650)] = 180
    # Subscribe to Graph's change notifications (switchboard.sync.graph_subscriptions).
    change_notifications: bool = False


_CONFIGS: dict[str, type[Struct]] = {
    "platform": PlatformConfig, "syncro": SyncroConfig, "graph": GraphConfig}
# Each kind's credential names: any one of a group's names is enough.
_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "platform": ("accessToken", "apiToken"),
    "syncro": ("apiToken", "apiKey"),
    # An access token, or what refreshes one (switchboard.sync.graph_token): refreshToken
    # and clientId, clientSecret for a confidential client, tenant (default common).
    "graph": ("accessToken", "refreshToken", "clientId", "clientSecret", "tenant"),
}


_AT = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_NAMED = re.compile(r"(?:missing required|unknown) field `([A-Za-z0-9_]+)`")


def _where(exc: msgspec.ValidationError) -> str:
    """The configuration field msgspec's message names (``... - at `$.instanceUrl```,
    ``missing required field `subdomain```)."""
    text = str(exc)
    found = _AT.search(text) or _NAMED.search(text)
    return f"configuration.{found.group(1)}" if found else "configuration"


def parse_config(kind: str, configuration: Mapping[str, Any], *,
                 allow_private: bool) -> Any:
    """`configuration` as `kind`'s config Struct; BadRequest naming the field otherwise
    (and, for the platform, the instance URL checked as a webhook URL)."""
    cls = _CONFIGS[kind]
    try:
        config = msgspec.convert(dict(configuration), cls)
    except msgspec.ValidationError as exc:
        raise BadRequest("invalid_connector_configuration", f"{kind}: {exc}",
                         field=_where(exc)) from None
    if isinstance(config, PlatformConfig):
        validate_webhook_url(config.instance_url, allow_private=allow_private,
                             field="configuration.instanceUrl")
    return config


def check_credentials(kind: str, names: Collection[str], *, required: bool = True) -> None:
    """BadRequest for a name `kind` does not take, or (`required`) when none of its
    credentials is given. An update need not repeat them (they stay sealed, or were
    dropped by a disconnect until new ones come)."""
    known = _CREDENTIALS[kind]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise BadRequest("invalid_connector_credentials",
                         f"{kind} takes no credential {', '.join(unknown)} (known: "
                         f"{', '.join(known)})", field=f"credentials.{unknown[0]}")
    if required and not set(names) & set(known):
        raise BadRequest("missing_connector_credentials",
                         f"{kind} needs the credential {' or '.join(known)}",
                         field=f"credentials.{known[0]}")


def pick_credential(kind: str, credentials: Mapping[str, str]) -> tuple[str, str]:
    """The credential to use (its name and value): the first of `kind`'s names given."""
    for name in _CREDENTIALS[kind]:
        value = credentials.get(name)
        if value:
            return name, value
    raise BadRequest("missing_connector_credentials",
                     f"{kind} needs the credential {' or '.join(_CREDENTIALS[kind])}",
                     field=f"credentials.{_CREDENTIALS[kind][0]}")
