"""Control plane: hubs and integrations, in the shape of Hubster's integrations API.

Every process serves reads from its own registry view; every write goes through the
registry topic and is answered only after this process's view has applied it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import config_update, hubster_compat, hubster_signature, keys, names
from switchboard.channels import (
    CONFIG_TYPES,
    ChannelConfig,
    DirectConfig,
    SystemConfig,
    integration_type_of,
    parse_config,
)
from switchboard.errors import BadRequest, Conflict, NotFound
from switchboard.ids import new_id
from switchboard.keysets import rotate_keysets, without_hubster_keys
from switchboard.model import (
    CHANNEL_CODES,
    INTEGRATION_TYPE_CODES,
    ChannelId,
    IntegrationType,
    StatusId,
)
from switchboard.registry import IntegrationRecord, KeySet, RegistryView
from switchboard.sealing import new_keyset, seal_config
from switchboard.services.api_auth import Authenticator, Principal
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.channels.syncro_actions import SyncroActions
from switchboard.services.deliveries_api import DeliveriesApi
from switchboard.services.http import JSON, read_body
from switchboard.services.hubs_api import HubCreate, HubsApi, HubUpdate
from switchboard.services.runtime import Runtime
from switchboard.services.stats_api import StatsApi
from switchboard.services.sync_api import SyncProfilesApi

log = logging.getLogger(__name__)
Name = Annotated[str, Meta(min_length=1, max_length=200)]
API_BODY_LIMIT = 64 * 1024


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


__all__ = ["Api", "HubCreate", "HubUpdate", "IntegrationCreate", "IntegrationUpdate",
           "Principal"]
# What reads show in place of a secret; sent back in an update, it means "unchanged".
MASK = "********"


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


class Api:
    """`/api/v1/...`: hubs (admin) and integrations (hub access token)."""

    def __init__(self, runtime: Runtime,
                 plugins: Mapping[ChannelId, ChannelPlugin] | None = None) -> None:
        self.runtime = runtime
        self.plugins = dict(plugins or {})
        self.auth = Authenticator(runtime)
        self.hubs = HubsApi(self)
        self.stats = StatsApi(runtime, self)  # the console's charts
        self.deliveries = DeliveriesApi(runtime, self, observe=self.stats.observe_attempt)
        self.syncro = SyncroActions(self)  # /integrations/{id}/syncro/...
        self.sync_profiles = SyncProfilesApi(runtime, self)  # /hubs/{hubId}/syncProfiles

    async def start(self) -> None:
        await self.deliveries.start()
        await self.stats.start()
        await self.sync_profiles.start()

    async def stop(self) -> None:
        await self.sync_profiles.stop()
        await self.stats.stop()
        await self.deliveries.stop()

    def routes(self) -> list[Route]:
        return [
            *self.hubs.routes(),
            *self.stats.routes(),
            Route("/api/v1/integrations/hubs/{id}", self.create_or_update, methods=["POST"]),
            Route("/api/v1/integrations/hubs/{hubId}", self.list_integrations, methods=["GET"]),
            Route("/api/v1/integrations/{integrationId}", self.get_integration, methods=["GET"]),
            Route("/api/v1/integrations/{integrationId}", self.patch_integration,
                  methods=["PATCH"]),
            Route("/api/v1/integrations/{integrationId}", self.delete_integration,
                  methods=["DELETE"]),
            *self.deliveries.routes(),
            *self.syncro.routes(),
            *self.sync_profiles.routes(),
        ]

    # ---- auth ------------------------------------------------------------------

    async def _session(self, request: Request) -> tuple[Principal, RegistryView]:
        return await self.auth.session(request)

    @staticmethod
    def _own_integration(principal: Principal, view: RegistryView, iid: str) -> IntegrationRecord:
        rec = view.integrations.get(iid)
        # Another hub's integration is indistinguishable from a missing one.
        if rec is None or not principal.may_see(rec.hub_id):
            raise NotFound("integration_not_found", "no such integration")
        return rec

    async def _body(self, request: Request, into: Any) -> Any:
        from switchboard import jsonsafe
        from switchboard.inbound import check_json_content_type

        check_json_content_type(request.headers.get("content-type"))
        raw = await read_body(request, API_BODY_LIMIT)
        # Depth-limited: a `configuration` nested 2,000 deep is a 400, not a RecursionError.
        return jsonsafe.decode(raw, jsonsafe.decoder_for(into))

    # ---- integrations ----------------------------------------------------------

    async def create_or_update(self, request: Request) -> Response:
        # The seed uses one path for both: a hub id creates, an integration id updates.
        principal, view = await self._session(request)
        target = request.path_params["id"]
        # Another hub's id answers as an unknown integration id: no existence oracle.
        if target in view.hubs and principal.may_see(target):
            return await self._create(request, target, view)
        rec = self._own_integration(principal, view, target)
        return await self._update(request, rec)

    async def _create(self, request: Request, hub_id: str, view: RegistryView) -> Response:
        compat = self._hubster(request, hub_id)
        body: IntegrationCreate = await self._body(request, IntegrationCreate)
        channel = parse_channel(body.channel_id)
        if compat:
            body.configuration = hubster_compat.config_from_hubster(channel, body.configuration)
        config = parse_config(channel, body.configuration,
                              allow_private=self.runtime.settings.allow_private_destinations)
        itype = integration_type_of(config)
        if body.integration_type_id is not None and parse_integration_type(
            body.integration_type_id
        ) is not itype:
            raise BadRequest("invalid_integration_type",
                             f"a {channel.value} integration is of type {itype.value}",
                             "integrationTypeId")
        if view.name_holder(hub_id, body.name) is not None:
            raise Conflict("name_taken", f"an integration named {body.name!r} exists",
                           "name")
        # Every field is checked before the provider is touched: provisioning acts at the
        # provider (a Twilio number's SmsUrl, a Page's subscription).
        status_id = parse_status(body.status_id)
        integration_id = new_id()
        plugin = self.plugins.get(channel)
        if plugin is not None:
            # The provider checks the credentials and fills in what it knows (numbers,
            # page ids, bot tokens) before anything is stored.
            config = await plugin.provision(integration_id, config)
        now = _now_ms()
        keyset, private = self._new_keys(integration_id, config, now,
                                         hubster=self._hubster_signed(hub_id, config))
        revealed = plugin.reveal(integration_id, config) if plugin is not None else {}
        if revealed:  # a channel's own secret (Syncro's inbound URL), shown once
            private = {**(private or {}), **revealed}
        rec = IntegrationRecord(
            integration_id=integration_id,
            hub_id=hub_id,
            channel_id=channel,
            integration_type=itype,
            name=body.name,
            status_id=status_id,
            configuration=seal_config(self.runtime.sealer, integration_id, config),
            version=1,
            created_at=now,
            updated_at=now,
            keys=[keyset] if keyset else [],
        )
        try:
            await self._write(rec)
        except (Conflict, NotFound):
            # Refused for certain (a name taken meanwhile, the hub deleted): undo what
            # provisioning did, so nothing at the provider points at an integration that
            # does not exist. (Not on 503: the record may have been written.)
            if plugin is not None:
                try:
                    await plugin.deprovision(rec)
                except Exception as exc:
                    log.warning("refused create of %s: %s cleanup failed: %s",
                                integration_id, channel.value, type(exc).__name__)
            raise
        if compat:  # the seed answers a create with 200
            return JSON(hubster_compat.to_hubster(self._out(rec, private), hubster_compat.WRITE))
        return JSON(self._out(rec, private), status_code=201)

    async def _update(self, request: Request, rec: IntegrationRecord, *,
                      merge: bool = False) -> Response:
        compat = self._hubster(request, rec.hub_id)
        body: IntegrationUpdate = await self._body(request, IntegrationUpdate)
        if compat and body.configuration is not None:
            body.configuration = hubster_compat.config_from_hubster(rec.channel_id,
                                                                    body.configuration)
        if merge and body.configuration is not None and _replaceable(rec):
            # PATCH merges (RFC 7396); the seed's POST replaces. Provider channels keep
            # their configuration either way.
            body.configuration = config_update.patched(rec.configuration, body.configuration)
        now = _now_ms()
        changes: dict[str, Any] = {"version": rec.version + 1, "updated_at": now}
        private: dict[str, str] | None = None
        if body.name is not None:
            holder = self.runtime.registry.view.name_holder(rec.hub_id, body.name)
            if holder not in (None, rec.integration_id):
                raise Conflict("name_taken", f"an integration named {body.name!r} exists",
                               "name")
            changes["name"] = body.name
        if body.status_id is not None:
            changes["status_id"] = parse_status(body.status_id)
        if body.configuration is not None:
            raw = {k: v for k, v in body.configuration.items()
                   if k not in ("revokePrevious", "RevokePrevious")}
            if _replaceable(rec):
                config = parse_config(
                    rec.channel_id, config_update.replacing(rec.configuration, raw),
                    allow_private=self.runtime.settings.allow_private_destinations)
                if integration_type_of(config) is not rec.integration_type:
                    raise BadRequest("invalid_configuration",
                                     "integrationType cannot change; create a new integration",
                                     "configuration.integrationType")
                changes["configuration"] = seal_config(self.runtime.sealer,
                                                       rec.integration_id, config)
            else:
                # Provider channels keep their configuration (as in Hubster), except that
                # their credentials can be replaced (rotated at the provider).
                rotated = await self._rotate_credentials(rec, raw)
                if rotated is not None:
                    changes["configuration"] = rotated
                if _flag(body.configuration, "regenerateKeys"):
                    fresh_secrets = self._regenerate_secrets(
                        rec, changes.get("configuration", rec.configuration))
                    if fresh_secrets is not None:
                        changes["configuration"], private = fresh_secrets
            new_config = changes.get("configuration", rec.configuration)
            current = next((k for k in rec.keys if k.retired_at is None), None)
            # Turning HMAC signing on needs a secret: that is a new key generation.
            wants_hmac = (getattr(new_config, "hmac_signing", False) and current is not None
                          and current.hmac_secret_sealed is None)
            # So does turning Hubster-style signing on; turning it off drops its keys.
            hubster = self._hubster_signed(rec.hub_id, new_config)
            wants_hubster = hubster and current is not None and current.hubster_public is None
            revoke = _flag(body.configuration, "revokePrevious")
            fresh = None
            if (_flag(body.configuration, "regenerateKeys") or wants_hmac
                    or wants_hubster) and rec.keys:
                fresh, private = self._new_keys(rec.integration_id, new_config, now,
                                                hubster=hubster)
            if fresh is not None or revoke:
                changes["keys"] = rotate_keysets(
                    rec.keys, fresh, now, self.runtime.settings.key_grace_s * 1000,
                    revoke_previous=revoke)
            if not hubster:
                changes["keys"] = without_hubster_keys(changes.get("keys", rec.keys))
        updated = msgspec.structs.replace(rec, **changes)
        await self._write(updated)
        return JSON(self._shown(self._out(updated, private), compat, hubster_compat.WRITE))

    async def _rotate_credentials(self, rec: IntegrationRecord, raw: dict[str, Any]
                                  ) -> ChannelConfig | None:
        """The configuration with the provider credentials `raw` names replaced (checked
        with the provider first), or None if it names none. The mask a read shows
        (``********``) means unchanged; every other field is kept as it is."""
        plugin = self.plugins.get(rec.channel_id)
        cls = CONFIG_TYPES[rec.channel_id]
        wire = dict(zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True))
        data = {(k[:1].lower() + k[1:]) if isinstance(k, str) else k: v for k, v in raw.items()}
        given: dict[str, str] = {}
        for name in type(rec.configuration).SECRET_FIELDS:
            value = data.get(wire[name])
            if value is None or value == MASK:
                continue
            field = f"configuration.{wire[name]}"
            if plugin is None or name not in plugin.rotatable:
                raise BadRequest("not_rotatable", f"{wire[name]} cannot be replaced", field)
            if not isinstance(value, str) or not 1 <= len(value) <= 4096:
                raise BadRequest("invalid_configuration",
                                 "expected a string of 1 to 4096 characters", field)
            given[name] = value
        if not given or plugin is None:
            return None
        accepted = await plugin.rotate_credentials(rec, given)
        log.info("integration %s: %s credentials replaced (%s)", rec.integration_id,
                 rec.channel_id.value, ", ".join(sorted(wire[n] for n in accepted)))
        return seal_config(self.runtime.sealer, rec.integration_id,
                           msgspec.structs.replace(rec.configuration, **accepted),
                           only=accepted.keys())

    def _regenerate_secrets(self, rec: IntegrationRecord, config: ChannelConfig
                            ) -> tuple[ChannelConfig, dict[str, str]] | None:
        """A provider channel's own secrets made anew (``regenerateKeys``): the sealed
        configuration and what the answer shows once; None if the channel has none."""
        plugin = self.plugins.get(rec.channel_id)
        fresh = plugin.regenerate(rec) if plugin is not None else {}
        if plugin is None or not fresh:
            return None
        plain = msgspec.structs.replace(config, **fresh)
        return (seal_config(self.runtime.sealer, rec.integration_id, plain, only=fresh.keys()),
                plugin.reveal(rec.integration_id, plain))

    async def patch_integration(self, request: Request) -> Response:
        principal, view = await self._session(request)
        rec = self._own_integration(principal, view, request.path_params["integrationId"])
        return await self._update(request, rec, merge=True)

    async def get_integration(self, request: Request) -> Response:
        principal, view = await self._session(request)
        rec = self._own_integration(principal, view, request.path_params["integrationId"])
        return JSON(self._shown(self._out(rec, None), self._hubster(request, rec.hub_id),
                                hubster_compat.READ))

    async def list_integrations(self, request: Request) -> Response:
        principal, view = await self._session(request)
        hub_id = request.path_params["hubId"]
        if hub_id not in view.hubs or not principal.may_see(hub_id):
            raise NotFound("hub_not_found", "no such hub")
        recs = sorted(view.integrations_of(hub_id), key=lambda r: r.created_at)
        compat = self._hubster(request, hub_id)
        return JSON([self._shown(self._out(r, None), compat, hubster_compat.READ) for r in recs])

    async def delete_integration(self, request: Request) -> Response:
        principal, view = await self._session(request)
        rec = self._own_integration(principal, view, request.path_params["integrationId"])
        await self.remove_integration(rec)
        return Response(status_code=204)

    async def remove_integration(self, rec: IntegrationRecord) -> None:
        """Delete an integration, then undo its provider-side wiring (best effort)."""
        await self.runtime.registry.delete_integration(rec.integration_id)
        plugin = self.plugins.get(rec.channel_id)
        if plugin is not None:
            try:
                await plugin.deprovision(rec)
            except Exception as exc:  # the provider may be down; the integration is gone
                log.warning("integration %s deleted, but %s cleanup failed: %s",
                            rec.integration_id, rec.channel_id.value, type(exc).__name__)

    # ---- helpers ---------------------------------------------------------------

    def _hubster(self, request: Request, hub_id: str) -> bool:
        """Whether this request is answered in Hubster's shapes (``?compat=``, ``Accept``,
        then the hub's own ``compat``)."""
        hub = self.runtime.registry.view.hubs.get(hub_id)
        return hubster_compat.wants_hubster(request.query_params.get("compat"),
                                            request.headers.get("accept"),
                                            hub.compat if hub is not None else None)

    @staticmethod
    def _shown(answer: dict[str, Any], compat: bool, view: hubster_compat.View
               ) -> dict[str, Any]:
        return hubster_compat.to_hubster(answer, view) if compat else answer

    async def _write(self, rec: IntegrationRecord) -> None:
        outcome = await self.runtime.registry.put(rec)
        if outcome.accepted:
            return
        if outcome.reason == "name_taken":
            raise Conflict("name_taken", f"an integration named {rec.name!r} exists", "name")
        if outcome.reason == "deleted":
            raise NotFound("integration_not_found", "the integration was deleted")
        if outcome.reason == "unknown_hub":
            raise NotFound("hub_not_found", "no such hub")
        raise Conflict("concurrent_update", "the integration changed meanwhile; retry")

    def _new_keys(self, integration_id: str, config: ChannelConfig, now: int, *,
                  hubster: bool = False) -> tuple[KeySet | None, dict[str, str] | None]:
        """A fresh key generation: ours for signing deliveries, theirs for signing to us
        (and an HMAC secret, a Hubster-style key when asked for). Returns what is shown
        once."""
        if not isinstance(config, DirectConfig | SystemConfig):
            return None, None
        ours = keys.generate_signing_keypair()
        theirs = keys.generate_signing_keypair()
        shown = {"privateSigningKey": theirs.secret}
        if config.hmac_signing:
            shown["webhookSecret"] = keys.generate_hmac_secret()
        hubster_keys = hubster_signature.generate_keypair() if hubster else None
        if hubster_keys is not None:
            shown["hubsterPrivateKey"] = hubster_keys.private
        keyset = new_keyset(self.runtime.sealer, integration_id, ours, theirs.public,
                            shown.get("webhookSecret"), now, hubster=hubster_keys)
        return keyset, shown

    def _hubster_signed(self, hub_id: str, config: ChannelConfig) -> bool:
        """Whether deliveries under `config` carry Hubster's signature headers: asked for
        by the integration (``signatureScheme``) or by its hub (``compat``)."""
        if not isinstance(config, DirectConfig | SystemConfig):
            return False
        hub = self.runtime.registry.view.hubs.get(hub_id)
        return config.signature_scheme == "hubster" or (
            getattr(hub, "compat", None) == hubster_compat.HUBSTER)

    def _out(self, rec: IntegrationRecord, shown: dict[str, str] | None) -> dict[str, Any]:
        """The integration as the API shows it: names not codes, secrets masked."""
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


def _replaceable(rec: IntegrationRecord) -> bool:
    """Whether an update's configuration replaces this integration's (Direct, System,
    WebChat); provider channels keep theirs, but for credentials."""
    return isinstance(rec.configuration, DirectConfig | SystemConfig) or \
        rec.channel_id is ChannelId.WEBCHAT


def _flag(raw: dict[str, Any], name: str) -> bool:
    value = raw.get(name, raw.get(name[:1].upper() + name[1:]))
    return value is True


def _now_ms() -> int:
    return int(time.time() * 1000)
