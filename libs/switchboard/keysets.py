"""Signing key generations of an integration: which sets a rotation keeps. Pure."""

from __future__ import annotations

import msgspec

from switchboard.registry import KeySet

__all__ = ["MAX_KEYSETS", "rotate_keysets", "without_hubster_keys"]

# The current set and the one it replaced: the ingress tries at most this many keys.
MAX_KEYSETS = 2


def rotate_keysets(keys: list[KeySet], fresh: KeySet | None, now_ms: int, grace_ms: int, *,
                   revoke_previous: bool = False) -> list[KeySet]:
    """The key sets after a rotation, newest first.

    With `fresh`, it becomes current and the set it replaces stays valid for the grace
    window; any older set is retired at once (a regeneration inside the grace window
    does not pile up keys). `revoke_previous` ends every grace window now: with `fresh`,
    only `fresh` remains; without, only the current set.
    """
    current = next((k for k in keys if k.retired_at is None), None)
    if fresh is None:
        if revoke_previous:
            return [current] if current is not None else []
        return [k for k in keys if k.retired_at is None or now_ms < k.retired_at + grace_ms]
    if revoke_previous or current is None or grace_ms <= 0:
        return [fresh]
    return [fresh, msgspec.structs.replace(current, retired_at=now_ms)]


def without_hubster_keys(keys: list[KeySet]) -> list[KeySet]:
    """`keys` with their Hubster-style keys dropped (that signing turned off); the same
    list if none has one."""
    if all(k.hubster_public is None and k.hubster_secret_sealed is None for k in keys):
        return keys
    return [msgspec.structs.replace(k, hubster_public=None, hubster_secret_sealed=None)
            for k in keys]
