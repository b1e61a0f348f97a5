"""The sync topics' folds and the sealing of profile credentials (pure)."""

from __future__ import annotations

import msgspec
import pytest

from switchboard.keys import generate_secret_key_b64
from switchboard.sealer import Sealer, UnsealError
from switchboard.sync.ops import Watermark
from switchboard.sync.pairs import Pair, PairSide
from switchboard.sync.profiles import (
    MASK,
    ConnectorSpec,
    ProfileRecord,
    open_credentials,
    seal_credentials,
)
from switchboard.sync.tables import PairsView, pair_key, watermark_key

enc = msgspec.json.Encoder()


def pair(p: str, m: str, seen: int = 0) -> Pair:
    return Pair(kind="contact", portal=PairSide(id=p, seen_at=seen),
                mailbox=PairSide(id=m, seen_at=seen))


def test_the_newest_pair_of_a_record_wins_whatever_key_was_written_first() -> None:
    view = PairsView()
    old, new = pair("p:1", "m1"), pair("p:1", "m2")
    view.apply(pair_key("prof", "contacts", old), enc.encode(old))
    view.apply(pair_key("prof", "contacts", new), enc.encode(new))
    # Rewriting the older key (a refreshed fingerprint) makes it the newest again.
    again = pair("p:1", "m1", seen=5)
    view.apply(pair_key("prof", "contacts", again), enc.encode(again))
    index = view.index("prof", "contacts")
    assert index.find("contact", "portal", "p:1") == again
    assert index.find("contact", "mailbox", "m2") is None
    assert len(view.index("other", "contacts")) == 0


def test_tombstones_and_watermarks() -> None:
    view = PairsView()
    a = pair("p1", "m1")
    view.apply(pair_key("prof", "contacts", a), enc.encode(a))
    view.apply(watermark_key("prof", "contacts"), enc.encode(Watermark(portal=7, mailbox=9)))
    assert view.watermark("prof", "contacts") == Watermark(portal=7, mailbox=9)
    assert view.watermark("prof", "tasks") == Watermark()
    assert sorted(view.forget("prof")) == sorted([pair_key("prof", "contacts", a),
                                                  watermark_key("prof", "contacts")])
    view.apply(pair_key("prof", "contacts", a), None)
    assert len(view.index("prof", "contacts")) == 0


def test_credentials_open_only_where_they_were_sealed() -> None:
    sealer = Sealer.from_b64(generate_secret_key_b64())
    sealed = seal_credentials(sealer, "prof", "portal", {"token": "s3cret"})
    assert "s3cret" not in sealed["token"]
    spec = ConnectorSpec(kind="testfile", credentials=sealed)
    rec = ProfileRecord(profile_id="prof", hub_id="h", name="n", portal=spec, mailbox=spec,
                        modules={}, created_at=0, updated_at=0)
    assert open_credentials(sealer, rec, "portal") == {"token": "s3cret"}
    with pytest.raises(UnsealError):  # copied to the other side: does not open
        open_credentials(sealer, rec, "mailbox")
    moved = msgspec.structs.replace(rec, profile_id="other")
    with pytest.raises(UnsealError):  # copied to another profile: does not open
        open_credentials(sealer, moved, "portal")
    # The mask keeps what was stored; a name not sent is dropped.
    kept = seal_credentials(sealer, "prof", "portal", {"token": MASK}, sealed)
    assert kept == sealed
    assert seal_credentials(sealer, "prof", "portal", {}, sealed) == {}
