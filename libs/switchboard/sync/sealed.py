"""A sync profile's credentials under the current key (for `switchboard reseal`). Pure.

Each credential is sealed bound to its profile, side and name
(`profiles.credentials_context`); after a key rotation every value is opened with
whichever configured key sealed it and sealed again under the first one.
"""

from __future__ import annotations

import msgspec

from switchboard.sealer import Sealer, UnsealError
from switchboard.sync.options import SIDES
from switchboard.sync.profiles import ProfileRecord, credentials_context, profile_decoder

__all__ = ["reseal_profile", "reseal_profile_value"]

_enc = msgspec.json.Encoder()


def reseal_profile(sealer: Sealer, rec: ProfileRecord) -> ProfileRecord | None:
    """`rec` with every credential sealed under the current key, or None if all already
    are. UnsealError if one opens under no configured key (or belongs elsewhere)."""
    sides = {}
    changed = False
    for side in SIDES:
        spec = rec.side(side)
        creds: dict[str, str] = {}
        for name, token in spec.credentials.items():
            creds[name] = sealer.reseal(token, credentials_context(rec.profile_id, side, name))
            changed |= creds[name] != token
        sides[side] = msgspec.structs.replace(spec, credentials=creds)
    if not changed:
        return None
    return msgspec.structs.replace(rec, portal=sides["portal"], mailbox=sides["mailbox"])


def reseal_profile_value(sealer: Sealer, key: bytes, value: bytes) -> bytes | None:
    """A `sync.profiles` record's value resealed (None: already current)."""
    try:
        rec = profile_decoder.decode(value)
    except msgspec.DecodeError:
        raise UnsealError("unseal_failed", "not a sync profile record") from None
    if rec.profile_id.encode() != key:
        # Its credentials are bound to another profile id: they would not open here.
        raise UnsealError("unseal_failed", "a profile record under another profile's key")
    fresh = reseal_profile(sealer, rec)
    return None if fresh is None else _enc.encode(fresh)
