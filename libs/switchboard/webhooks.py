"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure and I/O-free.

Headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; the signed content is
``{id}.{timestamp}.{body}`` over the exact body bytes; the signature header is a
whitespace-separated list of ``version,base64`` entries:

- ``v1``  HMAC-SHA256 keyed with a ``whsec_`` secret;
- ``v1a`` Ed25519 with a ``whsk_`` secret key, checked against ``whpk_`` public keys.

Several entries appear during key rotation; a message verifies if any entry matches any
configured key. Unknown versions are ignored, as the spec asks.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac as hmac_lib
import re
from collections.abc import Mapping, Sequence

import nacl.exceptions
import nacl.signing

from switchboard.errors import BadRequest, Unauthorized
from switchboard.keys import b64decode_strict, parse_hmac_secret, parse_public_key, parse_secret_key

__all__ = [
    "DEFAULT_TOLERANCE",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "MAX_ID_LENGTH",
    "MAX_SIGNATURES",
    "MAX_SIGNATURE_HEADER_LENGTH",
    "Signer",
    "VerifiedWebhook",
    "Verifier",
    "sign",
    "verify",
]

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

DEFAULT_TOLERANCE = 300
MAX_ID_LENGTH = 256
# Entries past this many are ignored: each v1a entry costs one Ed25519 verification per key,
# so an attacker must not be able to buy unbounded CPU with a long header.
MAX_SIGNATURES = 16
# 16 v1a entries are about 1.5k characters; anything much longer is not an honest sender.
MAX_SIGNATURE_HEADER_LENGTH = 4096

# fullmatch, not match + "$": "$" would accept a trailing newline.
_ID_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")
# Integer seconds only (the spec's format); 20 digits bounds int() and is far beyond any window.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")

_HMAC_BYTES = 32
_ED25519_SIG_BYTES = 64
# Longest base64 text (padded) that can decode to each signature size.
_HMAC_B64_MAX = 44
_ED25519_B64_MAX = 88


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """The verified ``webhook-id`` and ``webhook-timestamp`` of a message."""

    id: str
    timestamp: int


def _as_tuple(keys: Sequence[str] | str) -> tuple[str, ...]:
    # A lone string is a Sequence[str] too; iterating it would treat each character as a key.
    return (keys,) if isinstance(keys, str) else tuple(keys)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _signed_prefix(msg_id: str, timestamp_text: str) -> bytes:
    # Both parts are validated ASCII by the time we get here.
    return f"{msg_id}.{timestamp_text}.".encode("ascii")


def _hmac_digest(key: bytes, prefix: bytes, body: bytes) -> bytes:
    # Feed prefix and body separately so a large body is not copied just to be hashed.
    mac = hmac_lib.new(key, prefix, hashlib.sha256)
    mac.update(body)
    return mac.digest()


# ---------------------------------------------------------------------------- signing


class Signer:
    """Signs outbound messages with a fixed set of keys, parsed once.

    `ed25519` are ``whsk_`` secret keys (one ``v1a`` entry each); `hmac` are ``whsec_``
    secrets (one ``v1`` entry each). A malformed key raises BadRequest.
    """

    __slots__ = ("_ed25519", "_hmac")

    def __init__(self, *, ed25519: Sequence[str] = (), hmac: Sequence[str] = ()) -> None:
        ed_keys = _as_tuple(ed25519)
        hmac_keys = _as_tuple(hmac)
        if not ed_keys and not hmac_keys:
            # An empty signature header would be rejected by every receiver; fail loudly here.
            raise ValueError("Signer needs at least one Ed25519 or HMAC key")
        self._ed25519 = tuple(parse_secret_key(k) for k in ed_keys)
        self._hmac = tuple(parse_hmac_secret(k) for k in hmac_keys)

    def __repr__(self) -> str:
        return f"Signer(<{len(self._ed25519)} ed25519, {len(self._hmac)} hmac keys hidden>)"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` header value for this message."""
        if not _ID_RE.fullmatch(msg_id):
            raise ValueError(
                f"webhook id must be 1..{MAX_ID_LENGTH} printable ASCII characters, no spaces"
            )
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise ValueError("timestamp must be a non-negative integer (Unix seconds)")
        prefix = _signed_prefix(msg_id, str(timestamp))
        entries: list[str] = []
        if self._ed25519:
            message = prefix + body
            entries.extend(
                "v1a," + _b64encode(key.sign(message).signature) for key in self._ed25519
            )
        entries.extend("v1," + _b64encode(_hmac_digest(key, prefix, body)) for key in self._hmac)
        return " ".join(entries)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """All three Standard Webhooks headers for this message."""
        return {
            HEADER_ID: msg_id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: self.sign(msg_id, timestamp, body),
        }


def sign(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    ed25519: Sequence[str] = (),
    hmac: Sequence[str] = (),
) -> str:
    """The ``webhook-signature`` value: one ``v1a`` per ``whsk_`` key, one ``v1`` per ``whsec_``.

    Parses the keys on every call; build a `Signer` once to sign many messages.
    """
    return Signer(ed25519=ed25519, hmac=hmac).sign(msg_id, timestamp, body)


# ---------------------------------------------------------------------------- verifying


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    # Treat a non-str value (a caller passing raw bytes) as malformed rather than crashing.
    return value if isinstance(value, str) else None


def _candidates(header: str) -> tuple[list[bytes], list[bytes]]:
    """Decode the v1 and v1a entries of a signature header, skipping anything malformed."""
    v1: list[bytes] = []
    v1a: list[bytes] = []
    seen: set[bytes] = set()
    # maxsplit bounds the work: the remainder after MAX_SIGNATURES entries lands in one
    # extra piece, which the slice drops unparsed.
    for entry in header.split(maxsplit=MAX_SIGNATURES)[:MAX_SIGNATURES]:
        version, sep, encoded = entry.partition(",")
        if not sep:
            continue
        if version == "v1":
            size, limit, into = _HMAC_BYTES, _HMAC_B64_MAX, v1
        elif version == "v1a":
            size, limit, into = _ED25519_SIG_BYTES, _ED25519_B64_MAX, v1a
        else:
            continue
        if len(encoded) > limit:
            continue
        try:
            raw = b64decode_strict(encoded)
        except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
            continue
        # Repeating one entry must not multiply the verification work.
        if len(raw) != size or raw in seen:
            continue
        seen.add(raw)
        into.append(raw)
    return v1, v1a


class Verifier:
    """Verifies inbound Standard Webhooks messages against a fixed set of keys, parsed once.

    `public_keys` are ``whpk_`` keys (for ``v1a``), `hmac_secrets` are ``whsec_`` secrets
    (for ``v1``). A malformed key raises BadRequest at construction. With no keys at all,
    every message fails with ``invalid_signature``.
    """

    __slots__ = ("_hmac", "_public", "tolerance")

    def __init__(
        self,
        *,
        public_keys: Sequence[str] = (),
        hmac_secrets: Sequence[str] = (),
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> None:
        self._public: tuple[nacl.signing.VerifyKey, ...] = tuple(
            parse_public_key(k) for k in _as_tuple(public_keys)
        )
        self._hmac: tuple[bytes, ...] = tuple(parse_hmac_secret(k) for k in _as_tuple(hmac_secrets))
        self.tolerance = tolerance

    def __repr__(self) -> str:
        return f"Verifier(<{len(self._public)} public, {len(self._hmac)} hmac keys>)"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: int) -> VerifiedWebhook:
        """Check the headers against `body` at time `now` (Unix seconds).

        Raises Unauthorized ``missing_signature`` / ``stale_timestamp`` /
        ``invalid_signature`` or BadRequest ``invalid_webhook_id`` / ``invalid_timestamp``;
        never any other exception. `headers` must have lower-case names.
        """
        signature = _header(headers, HEADER_SIGNATURE)
        # Checked first: a request with no signature at all is best told exactly that.
        if not signature:
            raise Unauthorized(
                "missing_signature", "webhook-signature header is missing", HEADER_SIGNATURE
            )

        msg_id = _header(headers, HEADER_ID)
        if msg_id is None or not _ID_RE.fullmatch(msg_id):
            raise BadRequest(
                "invalid_webhook_id",
                f"webhook-id must be 1..{MAX_ID_LENGTH} printable ASCII characters, no spaces",
                HEADER_ID,
            )

        timestamp_text = _header(headers, HEADER_TIMESTAMP)
        if timestamp_text is None or not _TIMESTAMP_RE.fullmatch(timestamp_text):
            raise BadRequest(
                "invalid_timestamp",
                "webhook-timestamp must be an integer number of Unix seconds",
                HEADER_TIMESTAMP,
            )
        timestamp = int(timestamp_text)
        # Replay window, symmetric so a fast sender clock is tolerated as much as a slow one.
        if abs(now - timestamp) > self.tolerance:
            raise Unauthorized(
                "stale_timestamp",
                f"webhook-timestamp is more than {self.tolerance} seconds "
                + ("in the past" if timestamp < now else "in the future"),
                HEADER_TIMESTAMP,
            )

        if len(signature) > MAX_SIGNATURE_HEADER_LENGTH:
            raise Unauthorized(
                "invalid_signature", "webhook-signature header is too long", HEADER_SIGNATURE
            )

        v1, v1a = _candidates(signature)
        # Sign over the timestamp exactly as sent (leading zeros and all), as the sender did.
        prefix = _signed_prefix(msg_id, timestamp_text)
        if v1 and self._hmac and self._match_hmac(v1, prefix, body):
            return VerifiedWebhook(msg_id, timestamp)
        if v1a and self._public and self._match_ed25519(v1a, prefix + body):
            return VerifiedWebhook(msg_id, timestamp)
        raise Unauthorized("invalid_signature", "No signature matched", HEADER_SIGNATURE)

    def _match_hmac(self, candidates: list[bytes], prefix: bytes, body: bytes) -> bool:
        for key in self._hmac:
            expected = _hmac_digest(key, prefix, body)
            for candidate in candidates:
                if hmac_lib.compare_digest(expected, candidate):
                    return True
        return False

    def _match_ed25519(self, candidates: list[bytes], message: bytes) -> bool:
        for candidate in candidates:
            for key in self._public:
                try:
                    key.verify(message, candidate)
                except (nacl.exceptions.CryptoError, ValueError, TypeError):
                    continue
                return True
        return False


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    public_keys: Sequence[str] = (),
    hmac_secrets: Sequence[str] = (),
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> VerifiedWebhook:
    """Verify a Standard Webhooks message; see `Verifier.verify` for the errors raised.

    Parses the keys on every call; build a `Verifier` once to check many messages.
    """
    verifier = Verifier(public_keys=public_keys, hmac_secrets=hmac_secrets, tolerance=tolerance)
    return verifier.verify(headers, body, now=now)
