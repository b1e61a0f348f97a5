"""What a deleted profile leaves behind, to tombstone (pure: views in, keys out).

Deleting a profile removes its record from `sync.profiles` (and the API tombstones its
status and report), but its pair entries and watermarks stay on `sync.pairs`, and a run
that was under way may still write status. Whoever folds `sync.pairs` (the sync worker)
tombstones them: every profile that has pairs, watermarks, a status or a report but no
profile record is gone for good (profile ids are random and never reused).

Why absence means deleted: a profile's record is written before anything of it reaches
`sync.pairs` or `sync.status` (a run needs the profile; the status of a run is written
after the profile). So a profile missing from a view of `sync.profiles` read *after*
the pairs and status were read was deleted — `gone` is asked twice, the second time
after reading the profiles again, and only what both answers name is pruned.

Record pairs whose both records are deleted need no pruning: the planner drops them
(`merge.reconcile` gives no pair, `Plan.unpaired`) and the runner tombstones their key
in the same run. A pair with one deleted side is a tombstone the planner relies on (the
survivor is not recreated there) and is kept.
"""

from __future__ import annotations

from collections.abc import Collection

from switchboard.sync.tables import PairsView, StatusView, report_key, status_key

__all__ = ["gone", "pair_tombstones", "status_tombstones"]


def gone(live: Collection[str], pairs: PairsView, status: StatusView,
         runs: Collection[str] = ()) -> set[str]:
    """Profiles with something on `sync.pairs`, `sync.status` or (`runs`: the profiles
    that have runs there) `sync.runs` and no profile record."""
    held = pairs.profile_ids() | set(status.status) | set(status.reports) | set(runs)
    return {pid for pid in held if pid not in live}


def pair_tombstones(profile_id: str, pairs: PairsView) -> list[bytes]:
    """The `sync.pairs` keys of `profile_id` (every pair and watermark)."""
    return pairs.forget(profile_id)


def status_tombstones(profile_id: str, status: StatusView) -> list[bytes]:
    """The `sync.status` keys of `profile_id` still held."""
    out = []
    if profile_id in status.status:
        out.append(status_key(profile_id))
    if profile_id in status.reports:
        out.append(report_key(profile_id))
    return out
