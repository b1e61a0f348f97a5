"""The folds of the sync topics (pure: records in, views out).

- `sync.profiles` (key: profile id; ``template:<id>``, ``app:<appId>``, ``user:<key>`` for
  templates, signup apps and signed-up users) → `ProfilesView`;
- `sync.status` (keys ``status:<profile>`` and ``report:<profile>``) → `StatusView`;
- `sync.pairs` (keys ``pair:<profile>:<module>:<pair key>`` and ``wm:<profile>:<module>``)
  → `PairsView`: each module's pair index and watermark.

Last write wins per key; a tombstone forgets the key. Profile and module names hold no
``:``, so a key splits unambiguously whatever the record ids contain.
"""

from __future__ import annotations

import msgspec

from switchboard.sync.ops import Watermark
from switchboard.sync.pairs import Pair, PairIndex
from switchboard.sync.profiles import (
    ProfileRecord,
    ReportRecord,
    StatusRecord,
    profile_decoder,
    report_decoder,
    status_decoder,
)
from switchboard.sync.signup import AppRecord, UserRecord, app_decoder, user_decoder
from switchboard.sync.templates import TemplateRecord, template_decoder

__all__ = [
    "PairsView",
    "ProfilesView",
    "StatusView",
    "pair_key",
    "report_key",
    "status_key",
    "watermark_key",
]

_pair_decoder = msgspec.json.Decoder(Pair)
_watermark_decoder = msgspec.json.Decoder(Watermark)


def status_key(profile_id: str) -> bytes:
    return f"status:{profile_id}".encode()


def report_key(profile_id: str) -> bytes:
    return f"report:{profile_id}".encode()


def pair_key(profile_id: str, module: str, pair: Pair) -> bytes:
    return f"pair:{profile_id}:{module}:{pair.key}".encode()


def watermark_key(profile_id: str, module: str) -> bytes:
    return f"wm:{profile_id}:{module}".encode()


class ProfilesView:
    def __init__(self) -> None:
        self.profiles: dict[str, ProfileRecord] = {}
        self.templates: dict[str, TemplateRecord] = {}
        self.apps: dict[str, AppRecord] = {}  # by app id
        self.users: dict[str, UserRecord] = {}  # by owner key
        self.user_tokens: dict[str, str] = {}  # token hash → owner key

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        pid = key.decode()
        what, sep, rest = pid.partition(":")
        if not sep:  # a profile (ids hold no ':')
            if value is None:
                self.profiles.pop(pid, None)
            else:
                self.profiles[pid] = profile_decoder.decode(value)
        elif what == "template":
            if value is None:
                self.templates.pop(rest, None)
            else:
                self.templates[rest] = template_decoder.decode(value)
        elif what == "app":
            if value is None:
                self.apps.pop(rest, None)
            else:
                self.apps[rest] = app_decoder.decode(value)
        elif what == "user":
            old = self.users.pop(rest, None)
            if old is not None:
                self.user_tokens.pop(old.token_hash, None)
            if value is not None:
                user = self.users[rest] = user_decoder.decode(value)
                self.user_tokens[user.token_hash] = rest

    def app_of_hub(self, hub_id: str) -> AppRecord | None:
        return next((a for a in self.apps.values() if a.hub_id == hub_id), None)

    def of_hub(self, hub_id: str) -> list[ProfileRecord]:
        return sorted((p for p in self.profiles.values() if p.hub_id == hub_id),
                      key=lambda p: (p.created_at, p.profile_id))


class StatusView:
    def __init__(self) -> None:
        self.status: dict[str, StatusRecord] = {}
        self.reports: dict[str, ReportRecord] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        what, _, pid = key.decode().partition(":")
        if what == "status":
            if value is None:
                self.status.pop(pid, None)
            else:
                self.status[pid] = status_decoder.decode(value)
        elif what == "report":
            if value is None:
                self.reports.pop(pid, None)
            else:
                self.reports[pid] = report_decoder.decode(value)


class PairsView:
    """Every module's pairs (in the order last written, so that a pair that replaced an
    older one of the same record wins when the index is built) and watermarks."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], dict[str, Pair]] = {}
        self._watermarks: dict[tuple[str, str], Watermark] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        parts = key.decode().split(":", 3)
        if parts[0] == "wm" and len(parts) == 3:
            where = (parts[1], parts[2])
            if value is None:
                self._watermarks.pop(where, None)
            else:
                self._watermarks[where] = _watermark_decoder.decode(value)
        elif parts[0] == "pair" and len(parts) == 4:
            pairs = self._pairs.setdefault((parts[1], parts[2]), {})
            pairs.pop(parts[3], None)  # re-inserted last: the newest write goes last
            if value is not None:
                pairs[parts[3]] = _pair_decoder.decode(value)
            elif not pairs:  # a pruned profile's module leaves nothing behind
                del self._pairs[(parts[1], parts[2])]

    def index(self, profile_id: str, module: str) -> PairIndex:
        return PairIndex(self._pairs.get((profile_id, module), {}).values())

    def watermark(self, profile_id: str, module: str) -> Watermark:
        return self._watermarks.get((profile_id, module), Watermark())

    def forget(self, profile_id: str) -> list[bytes]:
        """The keys of everything kept for `profile_id` (to tombstone it)."""
        keys = [watermark_key(p, m) for p, m in self._watermarks if p == profile_id]
        for (p, m), pairs in self._pairs.items():
            if p == profile_id:
                keys += [f"pair:{p}:{m}:{k}".encode() for k in pairs]
        return keys

    def profile_ids(self) -> set[str]:
        """Every profile with a pair or a watermark here."""
        return {p for p, _ in self._pairs} | {p for p, _ in self._watermarks}

    def count(self, profile_id: str) -> int:
        """The pairs held for `profile_id`, all modules together."""
        return sum(len(v) for (p, _), v in self._pairs.items() if p == profile_id)
