"""Profile credentials resealed under the current key (`switchboard reseal`)."""

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
)
from switchboard.sync.sealed import reseal_profile, reseal_profile_value


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
