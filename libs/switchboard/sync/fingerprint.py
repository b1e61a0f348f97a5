"""Fingerprints: what a record holds in the synced fields, as one short hash per field.

The pair index keeps, for each side of a pair, the fingerprint of what that side held
after the sync last wrote to it or read it. A record read again whose fingerprint is
unchanged is not a change (that is how the sync's own writes are not synced back), and
comparing per field tells which fields a side changed since, for per-field conflicts.
Hashes, not values: the index (a Kafka topic later) carries no names or addresses.

Fields are keyed in *pair space*: one key per `FieldMap`, the same on both sides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from switchboard.sync.options import FieldMap, Side
from switchboard.sync.records import KINDS, Kind, Record, Value, is_empty

__all__ = [
    "Fingerprint",
    "check_maps",
    "content_hash",
    "fingerprint",
    "pair_key",
    "side_field",
    "side_values",
    "value_hash",
]

Fingerprint = dict[str, str]
_encode = msgspec.json.Encoder().encode


def pair_key(fmap: FieldMap) -> str:
    """The pair-space key of a mapping: the field's name, or both names if they differ."""
    return fmap.portal if fmap.portal == fmap.mailbox else f"{fmap.portal}:{fmap.mailbox}"


def side_field(fmap: FieldMap, side: Side) -> str:
    return fmap.portal if side == "portal" else fmap.mailbox


def check_maps(kind: Kind, maps: Sequence[FieldMap]) -> None:
    """ValueError unless every mapped field exists on `kind` and no field is mapped
    twice on one side (two sources for one field would fight forever)."""
    names = set(KINDS[kind].__struct_fields__) - {"id", "modified_at", "field_modified_at",
                                                   "deleted"}
    for side in ("portal", "mailbox"):
        used = [side_field(m, side) for m in maps]
        unknown = sorted(set(used) - names)
        if unknown:
            raise ValueError(f"{kind} has no field {', '.join(unknown)}")
        if len(set(used)) != len(used):
            raise ValueError(f"a {side} field of {kind} is mapped twice")


def value_hash(value: Value) -> str:
    """A short, stable hash of one field's value (16 hex digits). Every empty value (None,
    "", []) hashes alike: sides disagree on how to say "nothing", and writing one empty
    over another would only make noise."""
    return hashlib.blake2b(_encode(None if is_empty(value) else value),
                           digest_size=8).hexdigest()


def side_values(record: Record, maps: Sequence[FieldMap], side: Side) -> dict[str, Value]:
    """The record's synced values, keyed in pair space."""
    return {pair_key(m): getattr(record, side_field(m, side)) for m in maps}


def fingerprint(record: Record, maps: Sequence[FieldMap], side: Side) -> Fingerprint:
    """The record's per-field hashes, keyed in pair space."""
    return {key: value_hash(v) for key, v in side_values(record, maps, side).items()}


def content_hash(fp: Fingerprint) -> str:
    """One hash of a whole fingerprint: equal for two records holding the same synced
    values, whichever side they are on."""
    return value_hash([f"{k}={v}" for k, v in sorted(fp.items())])
