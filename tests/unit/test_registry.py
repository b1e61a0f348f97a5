"""The registry state machine: every view makes the same decision for the same log."""

from __future__ import annotations

import msgspec

from switchboard.channels import DirectConfig
from switchboard.model import ChannelId, IntegrationType
from switchboard.registry import (
    HubRecord,
    IntegrationRecord,
    RegistryView,
    hub_key,
    integration_key,
    record_encoder,
)

HUB = HubRecord(hub_id="h1", name="acme", token_hash="t" * 64, created_at=0)


def integ(iid: str, name: str, version: int = 1) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id=iid, hub_id="h1", channel_id=ChannelId.DIRECT,
        integration_type=IntegrationType.AGENT, name=name, status_id=3000,
        configuration=DirectConfig(integration_type=IntegrationType.AGENT),
        version=version, created_at=0, updated_at=0)


def fold(log: list[tuple[bytes, bytes | None]]) -> tuple[RegistryView, list[bool]]:
    view = RegistryView()
    verdicts = [view.apply(i, k, v).accepted for i, (k, v) in enumerate(log)]
    return view, verdicts


def put(rec: IntegrationRecord | HubRecord) -> tuple[bytes, bytes]:
    key = hub_key(rec.hub_id) if isinstance(rec, HubRecord) else integration_key(
        rec.integration_id)
    return key, record_encoder.encode(rec)


def test_first_claim_of_a_name_wins_case_insensitively() -> None:
    view, verdicts = fold([put(HUB), put(integ("a", "Desk")), put(integ("b", "desk"))])
    assert verdicts == [True, True, False]
    assert view.outcome(2) is not None and view.outcome(2).reason == "name_taken"  # type: ignore[union-attr]
    assert set(view.integrations) == {"a"}


def test_concurrent_updates_one_wins() -> None:
    a1 = integ("a", "x")
    view, verdicts = fold([put(HUB), put(a1), put(msgspec.structs.replace(a1, name="y",
                           version=2)), put(msgspec.structs.replace(a1, name="z", version=2))])
    assert verdicts == [True, True, True, False]
    assert view.integrations["a"].name == "y"


def test_rebuild_after_compaction_keeps_latest_versions() -> None:
    # After compaction only the last record per key survives, with a high version.
    view, verdicts = fold([put(HUB), put(integ("a", "renamed", version=30))])
    assert verdicts == [True, True]
    assert view.integrations["a"].version == 30


def test_deleted_integrations_stay_deleted_and_free_their_name() -> None:
    a1 = integ("a", "x")
    view, verdicts = fold([put(HUB), put(a1), (integration_key("a"), None),
                           put(msgspec.structs.replace(a1, version=2)), put(integ("b", "x"))])
    assert verdicts == [True, True, True, False, True]
    assert set(view.integrations) == {"b"}


def test_unknown_hub_and_garbage_do_not_stop_the_fold() -> None:
    view, verdicts = fold([put(integ("a", "x")), (b"integration:q", b"{garbage"), put(HUB),
                           put(integ("a", "x"))])
    assert verdicts == [False, False, True, True]
    assert view.hub_for_token_hash("t" * 64) == HUB


def test_deleted_ids_are_remembered_within_a_bound() -> None:
    view = RegistryView()
    view.DELETED_KEPT = 3  # type: ignore[misc]
    view.apply(0, *put(HUB))
    for i, iid in enumerate("abcd", start=1):
        view.apply(i, integration_key(iid), None)
    # The three most recent deletes still refuse a late write; the oldest is forgotten.
    assert not view.apply(10, *put(integ("d", "x", version=2))).accepted
    assert not view.apply(11, *put(integ("b", "y", version=2))).accepted
    assert view.apply(12, *put(integ("a", "z", version=2))).accepted
