"""Control plane: hubs and integrations, in the shape of Hubster's integrations API.

Every process serves reads from its own registry view; every write goes through the
registry topic and is answered only after this process's view has applied it. This
module holds the `Api` and its integration routes (create, update, read, list, delete);
what a request says and what an answer shows is `switchboard.integration_wire`, new keys
and secrets `integration_secrets`, and hubs, deliveries, stats and sync their own modules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import config_update, hubster_compat
from switchboard.channels import DirectConfig, SystemConfig, integration_type_of, parse_config
from switchboard.clock import now_ms
from switchboard.errors import BadRequest, Conflict, NotFound
from switchboard.ids import new_id
from switchboard.integration_wire import (
    IntegrationCreate,
    IntegrationUpdate,
    integration_out,
    parse_channel,
    parse_integration_type,
    parse_status,
)
from switchboard.keysets import rotate_keysets, without_hubster_keys
from switchboard.model import ChannelId
from switchboard.registry import IntegrationRecord, RegistryView
from switchboard.sealing import seal_config
from switchboard.services.api_auth import Authenticator, Principal
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.channels.syncro_actions import SyncroActions
from switchboard.services.deliveries_api import DeliveriesApi
from switchboard.services.http import JSON, read_body
from switchboard.services.hubs_api import HubsApi
from switchboard.services.integration_secrets import IntegrationSecrets
from switchboard.services.runtime import Runtime
from switchboard.services.stats_api import StatsApi
from switchboard.services.sync_api import SyncProfilesApi

log = logging.getLogger(__name__)
API_BODY_LIMIT = 64 * 1024

__all__ = ["API_BODY_LIMIT", "Api"]


class Api:
    """`/api/v1/...`: hubs (admin) and integrations (hub access token)."""

    def __init__(self, runtime: Runtime,
                 plugins: Mapping[ChannelId, ChannelPlugin] | None = None) -> None:
        self.runtime = runtime
        self.plugins = dict(plugins or {})
        self.auth = Authenticator(runtime)
        self.secrets = IntegrationSecrets(runtime, self.plugins)
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
        now = now_ms()
        keyset, private = self.secrets.new_keys(
            integration_id, config, now, hubster=self.secrets.hubster_signed(hub_id, config))
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
            return JSON(hubster_compat.to_hubster(integration_out(rec, private),
                                                  hubster_compat.WRITE))
        return JSON(integration_out(rec, private), status_code=201)

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
        now = now_ms()
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
                rotated = await self.secrets.rotate_credentials(rec, raw)
                if rotated is not None:
                    changes["configuration"] = rotated
                if _flag(body.configuration, "regenerateKeys"):
                    fresh_secrets = self.secrets.regenerate_secrets(
                        rec, changes.get("configuration", rec.configuration))
                    if fresh_secrets is not None:
                        changes["configuration"], private = fresh_secrets
            new_config = changes.get("configuration", rec.configuration)
            current = next((k for k in rec.keys if k.retired_at is None), None)
            # Turning HMAC signing on needs a secret: that is a new key generation.
            wants_hmac = (getattr(new_config, "hmac_signing", False) and current is not None
                          and current.hmac_secret_sealed is None)
            # So does turning Hubster-style signing on; turning it off drops its keys.
            hubster = self.secrets.hubster_signed(rec.hub_id, new_config)
            wants_hubster = hubster and current is not None and current.hubster_public is None
            revoke = _flag(body.configuration, "revokePrevious")
            fresh = None
            if (_flag(body.configuration, "regenerateKeys") or wants_hmac
                    or wants_hubster) and rec.keys:
                fresh, private = self.secrets.new_keys(rec.integration_id, new_config, now,
                                                       hubster=hubster)
            if fresh is not None or revoke:
                changes["keys"] = rotate_keysets(
                    rec.keys, fresh, now, self.runtime.settings.key_grace_s * 1000,
                    revoke_previous=revoke)
            if not hubster:
                changes["keys"] = without_hubster_keys(changes.get("keys", rec.keys))
        updated = msgspec.structs.replace(rec, **changes)
        await self._write(updated)
        return JSON(self._shown(integration_out(updated, private), compat, hubster_compat.WRITE))

    async def patch_integration(self, request: Request) -> Response:
        principal, view = await self._session(request)
        rec = self._own_integration(principal, view, request.path_params["integrationId"])
        return await self._update(request, rec, merge=True)

    async def get_integration(self, request: Request) -> Response:
        principal, view = await self._session(request)
        rec = self._own_integration(principal, view, request.path_params["integrationId"])
        return JSON(self._shown(integration_out(rec, None), self._hubster(request, rec.hub_id),
                                hubster_compat.READ))

    async def list_integrations(self, request: Request) -> Response:
        principal, view = await self._session(request)
        hub_id = request.path_params["hubId"]
        if hub_id not in view.hubs or not principal.may_see(hub_id):
            raise NotFound("hub_not_found", "no such hub")
        recs = sorted(view.integrations_of(hub_id), key=lambda r: r.created_at)
        compat = self._hubster(request, hub_id)
        return JSON([self._shown(integration_out(r, None), compat, hubster_compat.READ)
                     for r in recs])

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

def _replaceable(rec: IntegrationRecord) -> bool:
    """Whether an update's configuration replaces this integration's (Direct, System,
    WebChat); provider channels keep theirs, but for credentials."""
    return isinstance(rec.configuration, DirectConfig | SystemConfig) or \
        rec.channel_id is ChannelId.WEBCHAT


def _flag(raw: dict[str, Any], name: str) -> bool:
    value = raw.get(name, raw.get(name[:1].upper() + name[1:]))
    return value is True
