"""Pure parts of tenant isolation and secret handling: conversation scoping, key-set
rotation, sealed values bound to their record and field, reseal."""

from __future__ import annotations

import msgspec
import pytest

from switchboard.channels import DirectConfig, TwilioSmsConfig
from switchboard.conversations import ConversationRecord
from switchboard.inbound import normalize_direct, scoped_conversation_id
from switchboard.keys import (
    generate_secret_key_b64,
    generate_signing_keypair,
    looks_like_access_token,
    new_access_token,
)
from switchboard.keysets import rotate_keysets
from switchboard.model import Activity, ChannelId, IntegrationType, Sender
from switchboard.registry import HubRecord, IntegrationRecord, KeySet, RegistryView, hub_key
from switchboard.registry import record_encoder as enc
from switchboard.routing import conversation_allowed
from switchboard.sealer import Sealer, UnsealError
from switchboard.sealing import (
    open_config_secret,
    open_hmac_secret,
    open_outbound_secret,
    reseal_record,
    seal_config,
    sealed_values,
)
from tests.support import message as message_body


def _activity(hub: str, integration: str, kind: str = "message:customer") -> Activity:
    return Activity(activity_id="a", hub_id=hub, integration_id=integration, channel_id="Direct",
                    type=kind, conversation_id="c", sender=Sender(id="s"), timestamp=0)


def test_a_conversation_belongs_to_its_hub() -> None:
    conv = ConversationRecord(conversation_id="c", hub_id="H1", customer_integration_id="cust",
                              customer_id="u", created_at=0)
    assert conversation_allowed(_activity("H1", "cust"), conv)
    assert conversation_allowed(_activity("H1", "desk", "message:agent"), conv)
    assert conversation_allowed(_activity("H2", "x"), None)  # a new conversation
    assert not conversation_allowed(_activity("H2", "desk", "message:agent"), conv)
    assert not conversation_allowed(_activity("H2", "cust2"), conv)
    # Another customer of the same hub cannot speak in this customer's conversation.
    assert not conversation_allowed(_activity("H1", "cust2"), conv)


def test_a_customers_own_conversation_ids_are_scoped_to_it() -> None:
    assert scoped_conversation_id("I1", "1") == "I1:1"
    assert scoped_conversation_id("I1", "I1:1") == "I1:1"  # echoed back: the same one
    assert scoped_conversation_id("I2", "I1:1") == "I2:I1:1"  # nobody claims another's
    rec = msgspec.structs.replace(_record("I1"), channel_id=ChannelId.DIRECT)
    body = message_body("hi", conversation="1")
    assert normalize_direct(rec, "w1", body, 0).conversation_id == "I1:1"
    agent = msgspec.structs.replace(rec, integration_type=IntegrationType.AGENT)
    assert normalize_direct(agent, "w2", body, 0).conversation_id == "1"  # names, as given


def _keyset(n: int) -> KeySet:
    return KeySet(created_at=n, outbound_public=f"pub{n}", outbound_secret_sealed="x",
                  inbound_public=f"in{n}")


def test_rotation_keeps_at_most_the_current_and_the_previous_set() -> None:
    grace = 1000
    keys = [_keyset(1)]
    keys = rotate_keysets(keys, _keyset(2), 10, grace)
    assert [k.outbound_public for k in keys] == ["pub2", "pub1"]
    assert keys[0].retired_at is None and keys[1].retired_at == 10
    # A third regeneration inside the grace window retires the oldest at once.
    keys = rotate_keysets(keys, _keyset(3), 20, grace)
    assert [k.outbound_public for k in keys] == ["pub3", "pub2"]
    assert keys[1].retired_at == 20
    # revokePrevious: with a regeneration, only the new set; alone, only the current one.
    assert [k.outbound_public for k in rotate_keysets(keys, _keyset(4), 30, grace,
                                                       revoke_previous=True)] == ["pub4"]
    assert [k.outbound_public for k in rotate_keysets(keys, None, 30, grace,
                                                       revoke_previous=True)] == ["pub3"]
    # Without either, expired sets are pruned.
    assert [k.outbound_public for k in rotate_keysets(keys, None, 20 + grace, grace)] == ["pub3"]


def test_valid_keys_never_exceed_two_even_for_old_records() -> None:
    keys = [_keyset(3)] + [msgspec.structs.replace(_keyset(n), retired_at=100) for n in (2, 1)]
    rec = _record("i", keys=keys)
    assert [k.outbound_public for k in rec.valid_keys(150, 1000)] == ["pub3", "pub2"]


def _record(iid: str, config: object = None, keys: list[KeySet] | None = None
            ) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id=iid, hub_id="H", channel_id=ChannelId.TWILIO_SMS,
        integration_type=IntegrationType.CUSTOMER, name=iid, status_id=3000,
        configuration=config or DirectConfig(integration_type=IntegrationType.CUSTOMER),  # type: ignore[arg-type]
        version=1, created_at=0, updated_at=0, keys=keys or [])


def _twilio(sealer: Sealer, iid: str) -> IntegrationRecord:
    cfg = TwilioSmsConfig(account_sid="AC1", auth_token="tw-auth-token", number_sid="PN1",
                          shared_key_secret="tw-shared")
    return _record(iid, seal_config(sealer, iid, cfg))


def test_a_sealed_value_moved_to_another_integration_does_not_open() -> None:
    sealer = Sealer.from_b64(generate_secret_key_b64())
    a, b = _twilio(sealer, "A"), _twilio(sealer, "B")
    assert open_config_secret(sealer, a, "auth_token") == "tw-auth-token"
    assert isinstance(a.configuration, TwilioSmsConfig)
    stolen = msgspec.structs.replace(b, configuration=msgspec.structs.replace(
        b.configuration, auth_token=a.configuration.auth_token))
    with pytest.raises(UnsealError):
        open_config_secret(sealer, stolen, "auth_token")
    # Nor into another field of the same integration.
    swapped = msgspec.structs.replace(a, configuration=msgspec.structs.replace(
        a.configuration, shared_key_secret=a.configuration.auth_token))
    with pytest.raises(UnsealError):
        open_config_secret(sealer, swapped, "shared_key_secret")


def test_reseal_moves_every_value_to_the_current_key() -> None:
    old_b64, new_b64 = generate_secret_key_b64(), generate_secret_key_b64()
    old = Sealer.from_b64(old_b64)
    from switchboard.sealing import new_keyset

    pair = generate_signing_keypair()
    rec = msgspec.structs.replace(_twilio(old, "A"), keys=[
        new_keyset(old, "A", pair, "in", "whsec_x", 5)])
    # A legacy v1 value too (written before values were bound to their place).
    assert isinstance(rec.configuration, TwilioSmsConfig)
    rec = msgspec.structs.replace(rec, configuration=msgspec.structs.replace(
        rec.configuration, shared_key_secret=old.seal_legacy(b"tw-shared")))
    rotated = Sealer.from_b64(f"{new_b64},{old_b64}")
    fresh = reseal_record(rotated, rec)
    assert fresh is not None and fresh.version == rec.version + 1
    assert all(rotated.is_current(v) for _, v in sealed_values(fresh))
    assert reseal_record(rotated, fresh) is None  # nothing left to do
    only_new = Sealer.from_b64(new_b64)
    assert open_config_secret(only_new, fresh, "auth_token") == "tw-auth-token"
    assert open_config_secret(only_new, fresh, "shared_key_secret") == "tw-shared"
    assert open_outbound_secret(only_new, "A", fresh.keys[0]) == pair.secret
    assert open_hmac_secret(only_new, "A", fresh.keys[0]) == "whsec_x"
    # Without the old key, the original record no longer opens.
    with pytest.raises(UnsealError):
        reseal_record(only_new, rec)


def test_hub_writes_are_versioned_and_a_deleted_hub_stays_deleted() -> None:
    view = RegistryView()
    hub = HubRecord(hub_id="H", name="h", token_hash="t1", created_at=0)
    assert view.apply(0, hub_key("H"), enc.encode(hub)).accepted
    rotated = msgspec.structs.replace(hub, version=1, token_hash="t2")
    assert view.apply(1, hub_key("H"), enc.encode(rotated)).accepted
    assert view.hub_for_token_hash("t1") is None and view.hub_for_token_hash("t2") is not None
    # A write based on the old version (a racing update) cannot bring the old token back.
    stale = msgspec.structs.replace(hub, version=1, retry_schedule="0")
    assert view.apply(2, hub_key("H"), enc.encode(stale)).reason == "version_conflict"
    assert view.hub_for_token_hash("t2") is not None
    assert view.apply(3, hub_key("H"), None).accepted
    again = msgspec.structs.replace(rotated, version=2)
    assert view.apply(4, hub_key("H"), enc.encode(again)).reason == "deleted"
    assert view.hub_for_token_hash("t2") is None


def test_access_token_shape_filter() -> None:
    assert looks_like_access_token(new_access_token())
    for bad in ("", "sbat_", "sbat_" + "a" * 42, "sbat_" + "a" * 44, "x" * 48,
                "sbat_" + "!" * 43):
        assert not looks_like_access_token(bad)
