"""The sealed values of `sync.profiles` (profiles, templates, signup apps) resealed under
the current key (`switchboard reseal`) and listed for `switchboard doctor`."""

from __future__ import annotations

import msgspec
import pytest

from switchboard.keys import generate_secret_key_b64
from switchboard.sealer import Sealer, UnsealError
from switchboard.sync.profiles import (
    ConnectorSpec,
    ProfileRecord,
    open_credentials,
    profile_decoder,
    seal_credentials,
    webhook_secret_context,
)
from switchboard.sync.sealed import reseal_profile, reseal_profile_value, sealed_values
from switchboard.sync.signup import AppRecord, app_secret_context
from switchboard.sync.templates import TemplateRecord, template_credentials_context


def _profile(sealer: Sealer, pid: str = "p1") -> ProfileRecord:
    return ProfileRecord(
        profile_id=pid, hub_id="h", name="n", modules={}, created_at=1, updated_at=1,
        portal=ConnectorSpec(kind="platform", configuration={"instanceUrl": "https://x"},
                             credentials=seal_credentials(sealer, pid, "portal",
                                                          {"token": "pt"})),
        mailbox=ConnectorSpec(kind="graph", credentials=seal_credentials(
            sealer, pid, "mailbox", {"refreshToken": "rt", "clientId": "c"})))


def test_every_credential_moves_to_the_new_key_and_nothing_else_changes() -> None:
    old, new = generate_secret_key_b64(), generate_secret_key_b64()
    rec = _profile(Sealer.from_b64(old))
    both = Sealer.from_b64(f"{new},{old}")
    fresh = reseal_profile(both, rec)
    assert fresh is not None
    only_new = Sealer.from_b64(new)
    assert open_credentials(only_new, fresh, "portal") == {"token": "pt"}
    assert open_credentials(only_new, fresh, "mailbox") == {"refreshToken": "rt",
                                                            "clientId": "c"}
    assert msgspec.structs.replace(fresh, portal=rec.portal, mailbox=rec.mailbox) == rec
    assert fresh.portal.configuration == rec.portal.configuration
    assert reseal_profile(both, fresh) is None  # already current
    value = reseal_profile_value(both, b"p1", msgspec.json.encode(rec))
    assert value is not None
    assert open_credentials(only_new, profile_decoder.decode(value), "portal") == {
        "token": "pt"}
    assert reseal_profile_value(both, b"p1", value) is None


def test_what_no_key_opens_is_refused() -> None:
    old, new, lost = (generate_secret_key_b64() for _ in range(3))
    both = Sealer.from_b64(f"{new},{old}")
    with pytest.raises(UnsealError):  # sealed under a key no longer configured
        reseal_profile(both, _profile(Sealer.from_b64(lost)))
    rec = _profile(Sealer.from_b64(old))
    moved = msgspec.structs.replace(rec, profile_id="p2")  # credentials bound to p1
    with pytest.raises(UnsealError):
        reseal_profile(both, moved)
    with pytest.raises(UnsealError):  # stored under another profile's key
        reseal_profile_value(both, b"p2", msgspec.json.encode(rec))
    with pytest.raises(UnsealError):
        reseal_profile_value(both, b"p1", b"{not json")


def _app(sealer: Sealer, app_id: str = "a1") -> AppRecord:
    return AppRecord(app_id=app_id, hub_id="h", template_ids=[], created_at=1, updated_at=1,
                     secret=sealer.seal(b"app secret", app_secret_context(app_id)))


def _template(sealer: Sealer, tid: str = "t1") -> TemplateRecord:
    return TemplateRecord(
        template_id=tid, hub_id="h", name="n", modules={}, created_at=1, updated_at=1,
        portal=ConnectorSpec(kind="platform", credentials={"token": sealer.seal(
            b"tt", template_credentials_context(tid, "portal", "token"))}),
        mailbox=ConnectorSpec(kind="graph", credentials={}))


def test_templates_apps_and_webhook_secrets_move_too_and_users_hold_nothing() -> None:
    old, new = generate_secret_key_b64(), generate_secret_key_b64()
    was, both, only_new = (Sealer.from_b64(k) for k in (old, f"{new},{old}", new))
    rec = msgspec.structs.replace(_profile(was), webhook_secret=was.seal(
        b"whsec_x", webhook_secret_context("p1")))
    table = {b"p1": msgspec.json.encode(rec), b"app:a1": msgspec.json.encode(_app(was)),
             b"template:t1": msgspec.json.encode(_template(was)),
             b"user:u1": b'{"hubId": "h"}'}
    # Before: every sealed value opens under the old key only.
    listed = {key: sealed_values(key, value) for key, value in table.items()}
    assert [len(v) for v in listed.values()] == [4, 1, 1, 0]
    for values in listed.values():
        for context, token in values:
            assert was.open(token, context)
            with pytest.raises(UnsealError):
                only_new.open(token, context)
    fresh = {key: reseal_profile_value(both, key, value) for key, value in table.items()}
    assert fresh[b"user:u1"] is None
    for key in (b"p1", b"app:a1", b"template:t1"):
        value = fresh[key]
        assert value is not None
        assert reseal_profile_value(both, key, value) is None  # now current
        for context, token in sealed_values(key, value):
            assert only_new.open(token, context)  # the new key alone opens everything
    assert only_new.open(_app_of(fresh[b"app:a1"]).secret,
                         app_secret_context("a1")) == b"app secret"


def _app_of(value: bytes | None) -> AppRecord:
    assert value is not None
    return msgspec.json.decode(value, type=AppRecord)


def test_an_app_or_template_under_another_key_is_refused() -> None:
    key = Sealer.from_b64(generate_secret_key_b64())
    with pytest.raises(UnsealError):
        reseal_profile_value(key, b"app:a2", msgspec.json.encode(_app(key)))
    with pytest.raises(UnsealError):
        reseal_profile_value(key, b"template:t2", msgspec.json.encode(_template(key)))
    with pytest.raises(UnsealError):
        reseal_profile_value(key, b"app:a1", b"[]")
    assert sealed_values(b"app:a1", b"[]") == []
