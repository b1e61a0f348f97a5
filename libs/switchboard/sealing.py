"""Which values of a registry record are sealed, and the context each is bound to.

Every sealed value carries its place as associated data (`Sealer.seal(..., context)`):
the integration id and the field. A value copied into another integration, or into
another field of the same one, therefore fails to open. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

import msgspec

from switchboard.channels import ChannelConfig
from switchboard.hubster_signature import HubsterKeyPair
from switchboard.keys import SigningKeyPair
from switchboard.registry import IntegrationRecord, KeySet
from switchboard.sealer import Sealer

__all__ = [
    "config_context",
    "new_keyset",
    "open_config_secret",
    "open_hmac_secret",
    "open_hubster_secret",
    "open_outbound_secret",
    "reseal_record",
    "seal_config",
    "sealed_values",
]


def config_context(integration_id: str, field: str) -> str:
    """The context of a configuration secret (`field` is the Python field name)."""
    return f"integration:{integration_id}:{field}"


def _keyset_context(integration_id: str, outbound_public: str, what: str) -> str:
    return f"integration:{integration_id}:keys:{outbound_public}:{what}"


def seal_config(sealer: Sealer, integration_id: str, config: ChannelConfig,
                only: Collection[str] | None = None) -> ChannelConfig:
    """`config` with its secret fields (or those of them in `only`) sealed: they hold
    plaintext from a request, whatever they look like."""
    changes = {
        name: sealer.seal(value.encode(), config_context(integration_id, name))
        for name in type(config).SECRET_FIELDS
        if (only is None or name in only) and isinstance(value := getattr(config, name), str)
    }
    return msgspec.structs.replace(config, **changes) if changes else config


def open_config_secret(sealer: Sealer, rec: IntegrationRecord, field: str) -> str | None:
    """The plaintext of one secret of `rec`'s configuration (None if the field is unset)."""
    value = getattr(rec.configuration, field)
    if value is None:
        return None
    return sealer.open(value, config_context(rec.integration_id, field)).decode()


def new_keyset(sealer: Sealer, integration_id: str, ours: SigningKeyPair, inbound_public: str,
               hmac_secret: str | None, now_ms: int,
               hubster: HubsterKeyPair | None = None) -> KeySet:
    """A key generation with the hub's private key (and HMAC and Hubster secrets) sealed."""
    return KeySet(
        created_at=now_ms,
        outbound_public=ours.public,
        outbound_secret_sealed=sealer.seal(
            ours.secret.encode(),
            _keyset_context(integration_id, ours.public, "outbound_secret")),
        inbound_public=inbound_public,
        hmac_secret_sealed=None if hmac_secret is None else sealer.seal(
            hmac_secret.encode(), _keyset_context(integration_id, ours.public, "hmac_secret")),
        hubster_public=None if hubster is None else hubster.public,
        hubster_secret_sealed=None if hubster is None else sealer.seal(
            hubster.private.encode(),
            _keyset_context(integration_id, ours.public, "hubster_secret")),
    )


def open_outbound_secret(sealer: Sealer, integration_id: str, keyset: KeySet) -> str:
    return sealer.open(keyset.outbound_secret_sealed, _keyset_context(
        integration_id, keyset.outbound_public, "outbound_secret")).decode()


def open_hmac_secret(sealer: Sealer, integration_id: str, keyset: KeySet) -> str | None:
    if keyset.hmac_secret_sealed is None:
        return None
    return sealer.open(keyset.hmac_secret_sealed, _keyset_context(
        integration_id, keyset.outbound_public, "hmac_secret")).decode()


def open_hubster_secret(sealer: Sealer, integration_id: str, keyset: KeySet
                        ) -> HubsterKeyPair | None:
    """The Hubster-style key pair of `keyset`, if it has one."""
    if keyset.hubster_public is None or keyset.hubster_secret_sealed is None:
        return None
    private = sealer.open(keyset.hubster_secret_sealed, _keyset_context(
        integration_id, keyset.outbound_public, "hubster_secret")).decode()
    return HubsterKeyPair(public=keyset.hubster_public, private=private)


def sealed_values(rec: IntegrationRecord) -> Iterator[tuple[str, str]]:
    """(context, sealed value) of every sealed value `rec` holds."""
    iid = rec.integration_id
    for name in type(rec.configuration).SECRET_FIELDS:
        value = getattr(rec.configuration, name)
        if isinstance(value, str):
            yield config_context(iid, name), value
    for k in rec.keys:
        yield _keyset_context(iid, k.outbound_public, "outbound_secret"), \
            k.outbound_secret_sealed
        if k.hmac_secret_sealed is not None:
            yield _keyset_context(iid, k.outbound_public, "hmac_secret"), k.hmac_secret_sealed
        if k.hubster_secret_sealed is not None:
            yield (_keyset_context(iid, k.outbound_public, "hubster_secret"),
                   k.hubster_secret_sealed)


def reseal_record(sealer: Sealer, rec: IntegrationRecord) -> IntegrationRecord | None:
    """`rec` with every sealed value under the current key and bound to its place, as the
    next version; None if nothing needs rewriting. UnsealError if a value does not open
    (sealed under a key no longer configured, or moved here from another record)."""
    iid = rec.integration_id
    cfg = rec.configuration
    changes: dict[str, str] = {}
    for name in type(cfg).SECRET_FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, str):
            fresh = sealer.reseal(value, config_context(iid, name))
            if fresh != value:
                changes[name] = fresh
    keysets: list[KeySet] = []
    keys_changed = False
    for k in rec.keys:
        out = sealer.reseal(k.outbound_secret_sealed,
                            _keyset_context(iid, k.outbound_public, "outbound_secret"))
        hm = None if k.hmac_secret_sealed is None else sealer.reseal(
            k.hmac_secret_sealed, _keyset_context(iid, k.outbound_public, "hmac_secret"))
        hub = None if k.hubster_secret_sealed is None else sealer.reseal(
            k.hubster_secret_sealed, _keyset_context(iid, k.outbound_public, "hubster_secret"))
        if (out != k.outbound_secret_sealed or hm != k.hmac_secret_sealed
                or hub != k.hubster_secret_sealed):
            keys_changed = True
            k = msgspec.structs.replace(k, outbound_secret_sealed=out, hmac_secret_sealed=hm,
                                        hubster_secret_sealed=hub)
        keysets.append(k)
    if not changes and not keys_changed:
        return None
    return msgspec.structs.replace(
        rec, configuration=msgspec.structs.replace(cfg, **changes) if changes else cfg,
        keys=keysets, version=rec.version + 1)
