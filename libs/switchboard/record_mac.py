"""Internal records carry a MAC: a record on a hub topic that the hub did not write is refused.

Anyone who can write to the `registry` topic could otherwise add a hub whose token they
know, point an integration's webhook at themselves, or rewrite a conversation; anyone who
can write to `deliveries` could make the hub sign and send their payload. So every record
the hub produces on those topics (`VERIFIED_KINDS`: the tables, `activities` and the
delivery topics) carries, in the Kafka header ``sb-mac``, an HMAC-SHA256 under a key
derived from the secret key for this purpose only (`PURPOSE_RECORDS`), and every reader
of them refuses a record without a valid one.

The MAC covers the topic's kind (its name without the deployment's prefix, so a record
cannot move from `deliveries` to `deliveries.parked`), the record key and the value, each
length-prefixed; a tombstone (no value) is marked as such, so it cannot pass for an empty
value, nor a key for a value. Header value: a version byte, the 6-byte id of the master
key (new records use the first key of ``SWITCHBOARD_SECRET_KEYS``, every listed key
verifies) and the first 16 bytes of the MAC.

It proves who wrote a record, not when: a copy of a genuine record written again is a
replay, which the readers already tolerate (a registry record carries its version; a
delivery its stable ``webhook-id``).

Pure: bytes in, verdicts out. `RecordGuard` adds the operator's mode, a log line and a
count for every refusal.
"""

from __future__ import annotations

import functools
import hmac
import logging
import struct
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, Literal, Protocol

from switchboard.errors import ConfigError
from switchboard.keys import PURPOSE_RECORDS, derive_key, key_id, parse_master_keys
from switchboard.settings import Settings

__all__ = [
    "MAC_HEADER",
    "MAC_MODES",
    "VERIFIED_KINDS",
    "RecordGuard",
    "RecordMac",
    "Verdict",
    "guard_for",
]

log = logging.getLogger(__name__)

MAC_HEADER: Final = "sb-mac"
_VERSION = b"\x01"
_KID_BYTES = 6
_TAG_BYTES = 16
_HEADER_BYTES = len(_VERSION) + _KID_BYTES + _TAG_BYTES
_LABEL = b"switchboard/record-mac/v1\x00"
_LEN = struct.Struct(">I")
_ABSENT = b"\xff\xff\xff\xff"  # a length no field can have: "no key" / tombstone

# Topics whose readers refuse a record without a valid MAC (kinds: names without prefix).
VERIFIED_KINDS: Final = frozenset({
    "registry", "conversations", "activities", "deliveries", "deliveries.parked", "jobs",
    "stream-cursors", "syncro.slots", "sync.profiles", "sync.status", "sync.pairs",
    "sync.jobs", "sync.runs",
})

MAC_MODES: Final = ("enforce", "accept-unsigned")
Mode = Literal["enforce", "accept-unsigned"]
# Why a record was refused (None: accepted).
Verdict = Literal["unsigned", "malformed_mac", "unknown_key", "bad_mac"] | None


class _Record(Protocol):
    """What a reader needs of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def _field(data: bytes | None) -> bytes:
    return _ABSENT if data is None else _LEN.pack(len(data)) + data


def _message(kind: str, key: bytes | None, value: bytes | None) -> bytes:
    k = kind.encode()
    return b"".join((_LABEL, _LEN.pack(len(k)), k, _field(key), _field(value)))


class RecordMac:
    """Signs records under the first master key, verifies under any of them."""

    __slots__ = ("_by_kid", "_key", "_kid")

    def __init__(self, masters: Sequence[bytes]) -> None:
        if not masters:
            raise ConfigError("at least one secret key is needed to sign records")
        self._by_kid = {bytes.fromhex(key_id(m)): derive_key(m, PURPOSE_RECORDS)
                        for m in reversed(masters)}
        self._kid = bytes.fromhex(key_id(masters[0]))
        self._key = self._by_kid[self._kid]

    @classmethod
    def from_b64(cls, text: str) -> RecordMac:
        """From ``SWITCHBOARD_SECRET_KEYS``/``_KEY`` (the first signs, all verify)."""
        return cls(parse_master_keys(text))

    def __repr__(self) -> str:
        return f"RecordMac(<{len(self._by_kid)} key(s) hidden>)"

    @property
    def key_id(self) -> str:
        """The id of the key new records are signed under (hex, as `keys.key_id`)."""
        return self._kid.hex()

    def sign(self, kind: str, key: bytes | None, value: bytes | None) -> bytes:
        """The ``sb-mac`` header value for a record of topic kind `kind`."""
        tag = hmac.digest(self._key, _message(kind, key, value), "sha256")
        return _VERSION + self._kid + tag[:_TAG_BYTES]

    def verify(self, kind: str, key: bytes | None, value: bytes | None,
               header: bytes | None) -> Verdict:
        """None if `header` is a valid MAC of this record, else why not."""
        if header is None:
            return "unsigned"
        if len(header) != _HEADER_BYTES or header[:1] != _VERSION:
            return "malformed_mac"
        secret = self._by_kid.get(header[1:1 + _KID_BYTES])
        if secret is None:
            return "unknown_key"
        tag = hmac.digest(secret, _message(kind, key, value), "sha256")
        if not hmac.compare_digest(tag[:_TAG_BYTES], header[1 + _KID_BYTES:]):
            return "bad_mac"
        return None

    def signed_under_current(self, header: bytes | None) -> bool:
        """Whether `header` names the signing key (a valid MAC is checked separately)."""
        return header is not None and header[1:1 + _KID_BYTES] == self._kid


def mac_header(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    """The value of the ``sb-mac`` header (None if absent; the last one if repeated)."""
    found = None
    for name, value in headers or ():
        if name == MAC_HEADER:
            found = value
    return found


def kind_of(topic: str, prefix: str) -> str | None:
    """A topic's kind (its name without the deployment prefix); None if not the hub's."""
    return topic[len(prefix):] if topic.startswith(prefix) else None


class RecordGuard:
    """What a reader asks before it uses a record of a verified topic.

    `mode` ``enforce`` refuses records without a MAC; ``accept-unsigned`` (the upgrade
    path) lets them through, but a MAC that is present must still be valid. Every refusal
    is counted per topic kind and reason, and logged at WARNING (at most once a second per
    topic, with how many were not logged), naming topic, partition and offset.
    """

    LOG_EVERY_S = 1.0

    def __init__(self, mac: RecordMac, prefix: str, mode: str = "enforce") -> None:
        if mode not in MAC_MODES:
            raise ConfigError(f"SWITCHBOARD_RECORD_MAC must be one of {', '.join(MAC_MODES)}")
        self.mac = mac
        self.prefix = prefix
        self.mode = mode
        self.refused: Counter[tuple[str, str]] = Counter()
        self.unsigned_accepted = 0
        self._logged_at: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def sign_headers(self, topic: str, key: bytes | None, value: bytes | None,
                     headers: list[tuple[str, bytes]] | None) -> list[tuple[str, bytes]] | None:
        """`headers` plus this record's MAC (unchanged for a topic no reader checks)."""
        kind = kind_of(topic, self.prefix)
        if kind is None or kind not in VERIFIED_KINDS:
            return headers
        mac = (MAC_HEADER, self.mac.sign(kind, key, value))
        if not headers:
            return [mac]
        return [*(h for h in headers if h[0] != MAC_HEADER), mac]

    def verdict(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Iterable[tuple[str, bytes]] | None) -> Verdict:
        kind = kind_of(topic, self.prefix)
        if kind is None or kind not in VERIFIED_KINDS:
            return None
        header = mac_header(headers)
        if header is None and self.mode == "accept-unsigned":
            self.unsigned_accepted += 1
            return None
        return self.mac.verify(kind, key, value, header)

    def admit(self, topic: str, partition: int, offset: int, key: bytes | None,
              value: bytes | None, headers: Iterable[tuple[str, bytes]] | None) -> bool:
        """True if the record may be used; otherwise count it, log it, and say False."""
        why = self.verdict(topic, key, value, headers)
        if why is None:
            return True
        self.refused[(kind_of(topic, self.prefix) or topic, why)] += 1
        now = time.monotonic()
        if now - self._logged_at.get(topic, -self.LOG_EVERY_S) >= self.LOG_EVERY_S:
            self._logged_at[topic] = now
            quiet = self._quiet.pop(topic, 0)
            log.warning("refused record %s[%d]@%d: %s (not written by this hub%s)",
                        topic, partition, offset, why.replace("_", " "),
                        f"; {quiet} more refused unlogged" if quiet else "")
        else:
            self._quiet[topic] += 1
        return False

    def admit_record(self, rec: _Record) -> bool:
        """`admit` for a consumed record."""
        return self.admit(rec.topic, rec.partition, rec.offset, rec.key, rec.value,
                          rec.headers)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


@functools.lru_cache(maxsize=64)
def guard_for(settings: Settings) -> RecordGuard | None:
    """This process's guard for `settings` (one per deployment, so counts add up); None
    without a secret key (a tool that neither signs nor reads internal records)."""
    if not settings.sealing_keys.strip():
        return None
    return RecordGuard(RecordMac.from_b64(settings.sealing_keys), settings.topic_prefix,
                       settings.record_mac)
