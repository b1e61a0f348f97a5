"""The registry: hubs and integrations as records on a compacted, single-partition topic.

`RegistryView` is the pure state machine every process folds that topic into. Because all
views apply the same records in the same order, their accept/reject decisions agree:
that is how two API processes racing to create the same name end with exactly one winner.
A writer produces, waits for its own offset to be applied, then reads the outcome.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import msgspec
from msgspec import Struct, field

from switchboard.channels import ChannelConfig, DirectConfig, SystemConfig, external_id
from switchboard.model import ChannelId, IntegrationType, StatusId


class KeySet(Struct, rename="camel", omit_defaults=True):
    """One generation of an integration's signing keys.

    `outbound_*` is the hub's pair for signing deliveries (the secret sealed);
    `inbound_public` verifies what the integrator signs with the private key we handed out.
    A superseded set has `retired_at` and stays valid for the grace window after it.
    """

    created_at: int
    outbound_public: str
    outbound_secret_sealed: str
    inbound_public: str
    retired_at: int | None = None
    hmac_secret_sealed: str | None = None  # set when the integration asked for `v1` too
    # Hubster-style signing (switchboard.hubster_signature), when asked for: the key's
    # public name and its private string, sealed.
    hubster_public: str | None = None
    hubster_secret_sealed: str | None = None


class HubRecord(Struct, tag="hub", tag_field="kind", rename="camel"):
    hub_id: str
    name: str
    token_hash: str
    created_at: int
    # Overrides SWITCHBOARD_RETRY_SCHEDULE for this hub's deliveries.
    retry_schedule: str | None = None
    # Each write is the next version (0 for hubs written before versions existed).
    version: int = 0
    # When the access token was last replaced (None: the one issued at creation).
    token_rotated_at: int | None = None
    # "hubster": the integrations API answers in Hubster's shapes (switchboard.hubster_compat).
    compat: str | None = None
    # Set on hubs created or renamed since names are unique: the fold refuses such a record
    # when another hub holds its name (whatever the case). Hubs named alike before the rule
    # lack it and keep folding as they did.
    unique_name: bool = False


class IntegrationRecord(Struct, tag="integration", tag_field="kind", rename="camel"):
    integration_id: str
    hub_id: str
    channel_id: ChannelId
    integration_type: IntegrationType
    name: str
    status_id: int
    configuration: ChannelConfig
    version: int
    created_at: int
    updated_at: int
    keys: list[KeySet] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status_id == StatusId.ACTIVE

    @property
    def webhook_url(self) -> str | None:
        cfg = self.configuration
        if isinstance(cfg, DirectConfig | SystemConfig):
            return cfg.webhook_url
        return None

    def valid_keys(self, now_ms: int, grace_ms: int) -> list[KeySet]:
        """Key sets that still sign and verify: the current one and the newest one within
        grace (records from before rotation kept two at most may hold more)."""
        valid = [k for k in self.keys if k.retired_at is None or now_ms < k.retired_at + grace_ms]
        return valid[:2]


RegistryRecord = HubRecord | IntegrationRecord
record_encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(RegistryRecord)


def hub_key(hub_id: str) -> bytes:
    return f"hub:{hub_id}".encode()


def integration_key(integration_id: str) -> bytes:
    return f"integration:{integration_id}".encode()


class Outcome(Struct, frozen=True):
    """What a view decided about one record."""

    accepted: bool
    reason: str = ""  # name_taken, version_conflict, deleted, unknown_hub, malformed


ACCEPTED = Outcome(True)


class RegistryView:
    """In-memory hubs and integrations, folded from the registry topic in offset order."""

    OUTCOMES_KEPT = 10_000
    # Deleted integration ids remembered to refuse a late write racing the delete. Ids are
    # never reused, so only recent deletes matter; bounded, oldest forgotten first.
    DELETED_KEPT = 100_000

    def __init__(self) -> None:
        self.hubs: dict[str, HubRecord] = {}
        self.integrations: dict[str, IntegrationRecord] = {}
        self._hub_by_token: dict[str, str] = {}
        self._by_hub: dict[str, dict[str, IntegrationRecord]] = {}
        self._names: dict[tuple[str, str], str] = {}
        # Casefolded hub name -> the hubs holding it (more than one only from before the
        # rule: see HubRecord.unique_name).
        self._hub_names: dict[str, set[str]] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._deleted_hubs: OrderedDict[str, None] = OrderedDict()
        self._by_external: dict[tuple[ChannelId, str], str] = {}
        self._outcomes: OrderedDict[int, Outcome] = OrderedDict()
        self.applied_offset = -1

    # ---- folding -------------------------------------------------------------

    def apply(self, offset: int, key: bytes | None, value: bytes | None) -> Outcome:
        """Apply one record; return (and remember) whether it was accepted."""
        outcome = self._apply(key or b"", value)
        self.applied_offset = offset
        self._outcomes[offset] = outcome
        if len(self._outcomes) > self.OUTCOMES_KEPT:
            self._outcomes.popitem(last=False)
        return outcome

    def outcome(self, offset: int) -> Outcome | None:
        return self._outcomes.get(offset)

    def _apply(self, key: bytes, value: bytes | None) -> Outcome:
        if value is None:
            return self._delete(key)
        try:
            record = record_decoder.decode(value)
        except msgspec.DecodeError:
            # A record we cannot read must not stop the fold (it may be from a newer version).
            return Outcome(False, "malformed")
        if isinstance(record, HubRecord):
            if record.hub_id in self._deleted_hubs:
                return Outcome(False, "deleted")
            old = self.hubs.get(record.hub_id)
            if old is not None and record.version != old.version + 1:
                return Outcome(False, "version_conflict")
            name = record.name.casefold()
            if record.unique_name and self._hub_names.get(name, set()) - {record.hub_id}:
                return Outcome(False, "name_taken")
            if old is not None:
                self._hub_by_token.pop(old.token_hash, None)
                self._unindex_hub(old)
            self._hub_names.setdefault(name, set()).add(record.hub_id)
            self.hubs[record.hub_id] = record
            self._hub_by_token[record.token_hash] = record.hub_id
            self._by_hub.setdefault(record.hub_id, {})
            return ACCEPTED
        return self._put_integration(record)

    def _put_integration(self, rec: IntegrationRecord) -> Outcome:
        if rec.hub_id not in self.hubs:
            return Outcome(False, "unknown_hub")
        if rec.integration_id in self._deleted:
            return Outcome(False, "deleted")
        current = self.integrations.get(rec.integration_id)
        # An unknown id accepts any version: after compaction the first record a fresh
        # view sees for a key is its latest one, not its create.
        if current is not None and rec.version != current.version + 1:
            return Outcome(False, "version_conflict")
        name_key = (rec.hub_id, rec.name.casefold())
        holder = self._names.get(name_key)
        if holder is not None and holder != rec.integration_id:
            return Outcome(False, "name_taken")
        if current is not None:
            self._unindex(current)
        self._names[name_key] = rec.integration_id
        ext = external_id(rec.configuration)
        if ext:
            self._by_external[(rec.channel_id, ext)] = rec.integration_id
        self.integrations[rec.integration_id] = rec
        self._by_hub.setdefault(rec.hub_id, {})[rec.integration_id] = rec
        return ACCEPTED

    def _forget_later(self, deleted: OrderedDict[str, None], ident: str) -> None:
        deleted[ident] = None
        if len(deleted) > self.DELETED_KEPT:
            deleted.popitem(last=False)

    def _delete(self, key: bytes) -> Outcome:
        kind, _, ident = key.decode(errors="replace").partition(":")
        if kind == "integration":
            self._forget_later(self._deleted, ident)
            rec = self.integrations.pop(ident, None)
            if rec is not None:
                self._unindex(rec)
                self._by_hub.get(rec.hub_id, {}).pop(ident, None)
        elif kind == "hub":
            self._forget_later(self._deleted_hubs, ident)
            hub = self.hubs.pop(ident, None)
            if hub is not None:
                self._hub_by_token.pop(hub.token_hash, None)
                self._unindex_hub(hub)
                for iid in list(self._by_hub.pop(ident, {})):
                    self._unindex(self.integrations.pop(iid))
        return ACCEPTED

    def _unindex_hub(self, hub: HubRecord) -> None:
        holders = self._hub_names.get(hub.name.casefold())
        if holders is not None:
            holders.discard(hub.hub_id)
            if not holders:
                del self._hub_names[hub.name.casefold()]

    def _unindex(self, rec: IntegrationRecord) -> None:
        self._names.pop((rec.hub_id, rec.name.casefold()), None)
        ext = external_id(rec.configuration)
        if ext and self._by_external.get((rec.channel_id, ext)) == rec.integration_id:
            del self._by_external[(rec.channel_id, ext)]

    # ---- queries ---------------------------------------------------------------

    def hub_for_token_hash(self, token_hash: str) -> HubRecord | None:
        hub_id = self._hub_by_token.get(token_hash)
        return self.hubs.get(hub_id) if hub_id else None

    def integrations_of(self, hub_id: str) -> Iterator[IntegrationRecord]:
        return iter(list(self._by_hub.get(hub_id, {}).values()))

    def by_external_id(self, channel: ChannelId, ext: str) -> IntegrationRecord | None:
        """The integration a provider-side id (Messenger page, Slack team, …) belongs to."""
        iid = self._by_external.get((channel, ext))
        return self.integrations.get(iid) if iid else None

    def hubs_named(self, name: str) -> set[str]:
        """Ids of the hubs named `name`, whatever its case."""
        return set(self._hub_names.get(name.casefold(), ()))

    def name_holder(self, hub_id: str, name: str) -> str | None:
        return self._names.get((hub_id, name.casefold()))
