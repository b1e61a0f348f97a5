"""Per-channel integration configuration: what the API accepts, stores and shows.

Each channel has one Struct. Stored configurations form a tagged union on ``channel``;
fields named in ``SECRET_FIELDS`` are sealed at rest and masked when shown.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct, field

from switchboard.destinations import validate_webhook_url
from switchboard.errors import BadRequest
from switchboard.model import ChannelId, IntegrationType, Message, Url
from switchboard.names import (
    INTEGRATION_TYPES,
    SCHEMES,
    Vocabulary,
    canonical_list,
    canonical_or_same,
)

# Syncro's Notification Center triggers, as activity types (switchboard.providers.syncro).
SYNCRO_EVENTS = (
    "syncro:customer.created", "syncro:ticket.created", "syncro:ticket.updated",
    "syncro:ticket.resolved", "syncro:invoice.created", "syncro:payment.created",
    "syncro:rmm_alert.created",
)
# A type, its record kind (``syncro:ticket.*``) or them all (``syncro:*``).
SYNCRO_EVENT_FILTERS = frozenset(
    {*SYNCRO_EVENTS, "syncro:*"} | {e.split(".", 1)[0] + ".*" for e in SYNCRO_EVENTS})
# A sync profile's run transitions (switchboard.sync.events).
SYNC_EVENT_FILTERS = frozenset({"sync:requested", "sync:queued", "sync:started",
                                "sync:finished", "sync:failed", "sync:*"})
EVENT_FILTERS = frozenset({
    "message:customer", "message:agent", "message:bot", "message:*",
    "event:delivery_failed", "event:seen", "event:postback", "event:message_status", "event:*",
    "event:conversation_closed",
    "*",
}) | SYNCRO_EVENT_FILTERS | SYNC_EVENT_FILTERS
Secret = Annotated[str, Meta(min_length=1, max_length=4096)]
_EVENTS = Vocabulary(sorted(EVENT_FILTERS))


DeliveryRate = Annotated[float, Meta(gt=0, le=10_000)]
# "hubster": deliveries also carry Hubster's x-hubster-* headers (switchboard.
# hubster_signature), signed with a key of their own, shown once.
SignatureScheme = Literal["standard", "hubster"]


class _Config(Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True):
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()


class DirectConfig(_Config, tag="Direct", tag_field="channel"):
    integration_type: IntegrationType
    echo: bool = False
    webhook_url: Url | None = None
    start: list[Message] = field(default_factory=list)
    # Also sign deliveries `v1,<HMAC-SHA256>` with a `whsec_` secret (shown once).
    hmac_signing: bool = False
    # The integration's own cap on webhook deliveries (None: only the hub's fair share).
    max_deliveries_per_second: DeliveryRate | None = None
    signature_scheme: SignatureScheme = "standard"


class SystemConfig(_Config, tag="System", tag_field="channel"):
    webhook_url: Url
    events: Annotated[list[str], Meta(min_length=1, max_length=16)]
    hmac_signing: bool = False
    max_deliveries_per_second: DeliveryRate | None = None
    signature_scheme: SignatureScheme = "standard"


class Capabilities(Struct, rename="camel"):
    mms: bool = False
    sms: bool = False
    voice: bool = False


class TwilioSmsConfig(_Config, tag="TwilioSMS", tag_field="channel"):
    SECRET_FIELDS = ("auth_token", "shared_key_secret")
    account_sid: Secret
    auth_token: Secret
    number_sid: Secret
    phone_number: str | None = None
    capabilities: Capabilities | None = None
    # Only if a Twilio Webhook Rule signs this number's webhooks with a SharedKey.
    shared_key_secret: Secret | None = None
    echo: bool = False
    start: list[Message] = field(default_factory=list)


class MessengerConfig(_Config, tag="Messenger", tag_field="channel"):
    SECRET_FIELDS = ("page_access_token", "app_secret")
    page_access_token: Secret
    page_id: str | None = None
    app_id: str | None = None
    app_secret: Secret | None = None
    echo: bool = False
    start: list[Message] = field(default_factory=list)


# A hostname ("example.com", "localhost", "10.0.0.5") or "*." + hostname for its subdomains;
# no scheme, port or path (see switchboard.providers.webchat.origin_allowed).
OriginHost = Annotated[str, Meta(
    min_length=1, max_length=253,
    pattern=r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")]


class WebChatConfig(_Config, tag="WebChat", tag_field="channel"):
    allowed_origins: Annotated[list[OriginHost], Meta(min_length=1, max_length=64)]
    # On by default (as in the seed): the widget shows the visitor's own messages from
    # the same stream as the replies, which is what makes history survive a reload.
    echo: bool = True
    start: list[Message] = field(default_factory=list)


class SlackConfig(_Config, tag="Slack", tag_field="channel"):
    SECRET_FIELDS = ("code", "bot_access_token", "app_access_token")
    code: Secret | None = None
    state: str | None = None
    bot_access_token: Secret | None = None
    app_access_token: Secret | None = None
    default_public_channel: str | None = None
    team_id: str | None = None
    bot_name: str | None = None
    # Filled by provisioning (oauth.v2.access): our own bot, so its messages are ignored.
    bot_user_id: str | None = None


# A Syncro account's domain name: the "xyz" of https://xyz.syncromsp.com.
Subdomain = Annotated[str, Meta(
    min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
SyncroEvents = Annotated[list[str], Meta(min_length=1, max_length=16)]


class SyncroConfig(_Config, tag="Syncro", tag_field="channel"):
    """A Syncro account (PSA): its API token, and the secret of its inbound webhook URL
    (``/ingress/{integrationId}/{inboundSecret}``, made by the hub, shown once)."""

    SECRET_FIELDS = ("api_token", "inbound_secret")
    subdomain: Subdomain
    api_token: Secret
    default_ticket_status: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    problem_type: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    comment_hidden: bool = False
    # A customer writing after their ticket was resolved: reopen it (true) or open a new
    # ticket (false).
    reopen: bool = False
    # Which Syncro webhooks become activities (SYNCRO_EVENT_FILTERS); others are dropped.
    events: SyncroEvents = field(default_factory=lambda: ["syncro:*"])
    inbound_secret: Secret | None = None
    # Filled by provisioning (GET /me): who the token acts as.
    user_name: str | None = None


def external_id(cfg: object) -> str | None:
    """The provider-side identity app-level webhooks are routed by (page, team, number)."""
    if isinstance(cfg, MessengerConfig):
        return cfg.page_id
    if isinstance(cfg, SlackConfig):
        return cfg.team_id
    if isinstance(cfg, TwilioSmsConfig):
        return cfg.phone_number
    return None


ChannelConfig = (
    DirectConfig | SystemConfig | TwilioSmsConfig | MessengerConfig | WebChatConfig | SlackConfig
    | SyncroConfig
)

CONFIG_TYPES: dict[ChannelId, type[_Config]] = {
    ChannelId.DIRECT: DirectConfig,
    ChannelId.SYSTEM: SystemConfig,
    ChannelId.TWILIO_SMS: TwilioSmsConfig,
    ChannelId.MESSENGER: MessengerConfig,
    ChannelId.WEBCHAT: WebChatConfig,
    ChannelId.SLACK: SlackConfig,
    ChannelId.SYNCRO: SyncroConfig,
}

# Channels whose identity is fixed by the channel itself.
FIXED_TYPES: dict[ChannelId, IntegrationType] = {
    ChannelId.SYSTEM: IntegrationType.SYSTEM,
    ChannelId.TWILIO_SMS: IntegrationType.CUSTOMER,
    ChannelId.MESSENGER: IntegrationType.CUSTOMER,
    ChannelId.WEBCHAT: IntegrationType.CUSTOMER,
    ChannelId.SLACK: IntegrationType.AGENT,
    ChannelId.SYNCRO: IntegrationType.AGENT,
}


def _camel_keys(raw: dict[str, Any]) -> dict[str, Any]:
    # The seed's own examples mix "Echo"/"echo" and "AllowedOrigins"/"allowedOrigins".
    return {(k[:1].lower() + k[1:]) if isinstance(k, str) else k: v for k, v in raw.items()}


def parse_config(channel: ChannelId, raw: object, *,
                 allow_private: bool = False) -> ChannelConfig:
    """Validate a request's ``configuration`` object for `channel`.

    A ``webhookUrl`` also passes the SSRF policy (`validate_webhook_url`): with
    `allow_private` off (the setting ``allow_private_destinations``), a literal private,
    loopback or link-local address is refused here. Raises BadRequest naming the
    offending field.
    """
    if not isinstance(raw, dict):
        raise BadRequest(
            "invalid_configuration", "configuration must be an object", "configuration"
        )
    data = _normalized_names(_camel_keys(raw))
    # Request-only flags are handled by the caller, never stored.
    data.pop("regenerateKeys", None)
    for generated in ("publicSigningKey", "privateSigningKey", "webhookSecret",
                      "inboundSecret", "inboundUrl", "userName", "hubsterPublicKey",
                      "hubsterPrivateKey"):
        data.pop(generated, None)
    try:
        cfg = msgspec.convert(data, CONFIG_TYPES[channel])
    except msgspec.ValidationError as exc:
        field = _field_of(exc)
        # A webhookUrl of the wrong scheme or length is refused like any other bad URL.
        code = "invalid_url" if field == _URL_FIELD else "invalid_configuration"
        raise BadRequest(code, str(exc), field) from None
    if isinstance(cfg, SystemConfig):
        unknown = [e for e in cfg.events if e not in EVENT_FILTERS]
        if unknown:
            raise BadRequest(
                "invalid_event_filter",
                f"unknown event filter {unknown[0]!r}; use one of {sorted(EVENT_FILTERS)}",
                "configuration.events",
            )
    if isinstance(cfg, SyncroConfig):
        unknown = [e for e in cfg.events if e not in SYNCRO_EVENT_FILTERS]
        if unknown:
            raise BadRequest(
                "invalid_event_filter",
                f"unknown Syncro event {unknown[0]!r}; use one of {sorted(SYNCRO_EVENT_FILTERS)}",
                "configuration.events",
            )
    if isinstance(cfg, DirectConfig | SystemConfig) and cfg.webhook_url is not None:
        validate_webhook_url(cfg.webhook_url, allow_private=allow_private, field=_URL_FIELD)
    if isinstance(cfg, DirectConfig) and cfg.integration_type is IntegrationType.SYSTEM:
        raise BadRequest(
            "invalid_configuration",
            "a Direct integration is a Customer, Agent or Bot",
            "configuration.integrationType",
        )
    return cfg  # type: ignore[return-value]


_URL_FIELD = "configuration.webhookUrl"


def _normalized_names(data: dict[str, Any]) -> dict[str, Any]:
    """The configuration with its fixed names (integrationType, signatureScheme, event
    filters) in their canonical spelling: ``"customer"`` is ``"Customer"``."""
    if "integrationType" in data:
        data["integrationType"] = canonical_or_same(data["integrationType"], INTEGRATION_TYPES)
    if "signatureScheme" in data:
        data["signatureScheme"] = canonical_or_same(data["signatureScheme"], SCHEMES)
    if "events" in data:
        data["events"] = canonical_list(data["events"], _EVENTS)
    return data


def integration_type_of(cfg: ChannelConfig) -> IntegrationType:
    """The integrationTypeId implied by a configuration."""
    if isinstance(cfg, DirectConfig):
        return cfg.integration_type
    return FIXED_TYPES[ChannelId(type(cfg).__struct_config__.tag)]


def _field_of(exc: msgspec.ValidationError) -> str | None:
    # msgspec ends messages with "- at `$.path`"; surface that path as the field.
    msg = str(exc)
    marker = "at `$."
    if marker in msg:
        return "configuration." + msg.split(marker, 1)[1].rstrip("`")
    return "configuration"
