"""An integration's secrets made anew: key generations, provider credentials, own secrets.

Key generations (`new_keys`): ours to sign deliveries, theirs to sign to us, an HMAC
secret and a Hubster-style key when asked for; whether deliveries are Hubster-signed
(`hubster_signed`). Provider credentials replaced in an update (`rotate_credentials`,
checked with the provider first), and a provider channel's own secrets regenerated
(`regenerate_secrets`). Each answers the sealed values to store and what the API shows
once; the API module decides when.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from switchboard import hubster_compat, hubster_signature, keys
from switchboard.channels import CONFIG_TYPES, ChannelConfig, DirectConfig, SystemConfig
from switchboard.errors import BadRequest
from switchboard.integration_wire import MASK
from switchboard.model import ChannelId
from switchboard.registry import IntegrationRecord, KeySet
from switchboard.sealing import new_keyset, seal_config
from switchboard.services.channels.base import ChannelPlugin
from switchboard.services.runtime import Runtime

log = logging.getLogger(__name__)


class IntegrationSecrets:
    """Fresh keys and secrets for an integration, sealed with the runtime's sealer."""

    def __init__(self, runtime: Runtime, plugins: Mapping[ChannelId, ChannelPlugin]) -> None:
        self.runtime = runtime
        self.plugins = plugins

    def new_keys(self, integration_id: str, config: ChannelConfig, now: int, *,
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

    def hubster_signed(self, hub_id: str, config: ChannelConfig) -> bool:
        """Whether deliveries under `config` carry Hubster's signature headers: asked for
        by the integration (``signatureScheme``) or by its hub (``compat``)."""
        if not isinstance(config, DirectConfig | SystemConfig):
            return False
        hub = self.runtime.registry.view.hubs.get(hub_id)
        return config.signature_scheme == "hubster" or (
            getattr(hub, "compat", None) == hubster_compat.HUBSTER)

    async def rotate_credentials(self, rec: IntegrationRecord, raw: dict[str, Any]
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

    def regenerate_secrets(self, rec: IntegrationRecord, config: ChannelConfig
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
