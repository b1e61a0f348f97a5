"""What a deleted profile leaves on sync.pairs and sync.status, found from the folds."""

from __future__ import annotations

import msgspec

from switchboard.sync.ops import Watermark
from switchboard.sync.options import ModuleOptions
from switchboard.sync.pairs import Pair, PairIndex, PairSide
from switchboard.sync.plan import Changes, plan
from switchboard.sync.profiles import StatusRecord
from switchboard.sync.prune import gone, pair_tombstones, status_tombstones
from switchboard.sync.records import Contact
from switchboard.sync.tables import (
    PairsView,
    StatusView,
    pair_key,
    report_key,
    status_key,
    watermark_key,
)


def _pair(i: int) -> Pair:
    return Pair(kind="contact", portal=PairSide(id=f"p{i}"), mailbox=PairSide(id=f"m:{i}"))


def test_gone_profiles_and_their_keys() -> None:
    pairs, status = PairsView(), StatusView()
    for pid in ("live", "dead"):
        for i in range(3):
            pairs.apply(pair_key(pid, "contacts", _pair(i)), msgspec.json.encode(_pair(i)))
        pairs.apply(watermark_key(pid, "contacts"), msgspec.json.encode(Watermark(portal=5)))
        status.apply(status_key(pid), msgspec.json.encode(
            StatusRecord(profile_id=pid, hub_id="h")))
    status.apply(report_key("other"), msgspec.json.encode(
        {"profileId": "other", "hubId": "h", "jobId": "j", "createdAt": 1, "reports": {}}))
    assert gone({"live"}, pairs, status) == {"dead", "other"}
    assert gone({"live", "dead", "other"}, pairs, status) == set()

    keys = pair_tombstones("dead", pairs)
    assert sorted(keys) == sorted([watermark_key("dead", "contacts"),
                                   *(pair_key("dead", "contacts", _pair(i)) for i in range(3))])
    assert status_tombstones("dead", status) == [status_key("dead")]
    assert status_tombstones("other", status) == [report_key("other")]
    # Applying the tombstones leaves nothing of it, and the other profile as it was.
    for k in keys:
        pairs.apply(k, None)
    for k in [*status_tombstones("dead", status), *status_tombstones("other", status)]:
        status.apply(k, None)
    assert pairs.count("dead") == 0 and pair_tombstones("dead", pairs) == []
    assert pairs.profile_ids() == {"live"} and pairs.count("live") == 3
    assert gone({"live"}, pairs, status) == set()
    assert pairs.watermark("dead", "contacts") == Watermark()


def test_a_pair_whose_both_records_are_deleted_leaves_the_index_in_the_run() -> None:
    # Nothing to prune later: the run that sees the second delete drops the pair (its
    # key is tombstoned by the runner with the plan's `unpaired`).
    tomb = Pair(kind="contact", portal=PairSide(id="p1", seen_at=5),
                mailbox=PairSide(id="m1", seen_at=5, deleted=True))
    both = Pair(kind="contact", portal=PairSide(id="p2", seen_at=5),
                mailbox=PairSide(id="m2", seen_at=5))
    out = plan("contact", Changes(portal=[Contact(id="p1", modified_at=9, deleted=True),
                                          Contact(id="p2", modified_at=9, deleted=True)],
                                  mailbox=[Contact(id="m2", modified_at=9, deleted=True)]),
               PairIndex([tomb, both]), ModuleOptions(), Watermark())
    assert sorted(p.key for p in out.unpaired) == sorted([tomb.key, both.key])
    assert out.ops == [] and out.pairs == []
