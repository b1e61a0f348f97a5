"""Key material: Ed25519 signing keys, HMAC secrets, the master keys and the keys derived
from them, API access tokens. Sealing values at rest under the master keys is
`switchboard.sealer`.

Pure functions over strings and bytes; no I/O. Key strings follow Standard Webhooks:

- ``whpk_`` + base64(32-byte Ed25519 public key)
- ``whsk_`` + base64(32-byte seed || 32-byte public key)
- ``whsec_`` + base64(HMAC-SHA256 secret)

All base64 here is the standard alphabet; padding is produced on output and optional on
input (some tools strip it), but any character outside the alphabet is rejected.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
import secrets

import nacl.encoding
import nacl.hash
import nacl.secret
import nacl.signing
import nacl.utils

from switchboard.errors import BadRequest, ConfigError

__all__ = [
    "HMAC_SECRET_PREFIX",
    "PUBLIC_KEY_PREFIX",
    "PURPOSE_RECORDS",
    "PURPOSE_SECRETS",
    "PURPOSE_SESSIONS",
    "SECRET_KEY_PREFIX",
    "TOKEN_PREFIX",
    "SigningKeyPair",
    "b64decode_strict",
    "derive_key",
    "generate_hmac_secret",
    "generate_secret_key_b64",
    "generate_signing_keypair",
    "hash_token",
    "key_id",
    "looks_like_access_token",
    "new_access_token",
    "parse_hmac_secret",
    "parse_master_keys",
    "parse_public_key",
    "parse_secret_key",
    "public_of",
    "tokens_equal",
]

PUBLIC_KEY_PREFIX = "whpk_"
# Prefixes, not secrets (bandit's S105 only sees the names).
SECRET_KEY_PREFIX = "whsk_"  # noqa: S105
HMAC_SECRET_PREFIX = "whsec_"  # noqa: S105

TOKEN_PREFIX = "sbat_"  # noqa: S105

_ED25519_PUBLIC_BYTES = 32
_ED25519_SEED_BYTES = 32
# Standard Webhooks recommends HMAC secrets of 24 to 64 bytes.
_HMAC_SECRET_MIN_BYTES = 24
_HMAC_SECRET_MAX_BYTES = 64
_HMAC_SECRET_NEW_BYTES = 32
# Bound the work spent decoding a key string before its length is even checked.
_MAX_KEY_CHARS = 256


def b64decode_strict(text: str) -> bytes:
    """Decode standard base64, padding optional, anything else rejected with ValueError."""
    # str.encode("ascii") rejects non-ASCII with UnicodeEncodeError, a ValueError subclass.
    raw = text.encode("ascii")
    # A length of 1 mod 4 can never be valid; padding it would only hide that. Padding is
    # all or nothing: "YQ=" is neither canonical nor unpadded.
    if len(raw) % 4 == 1 or (b"=" in raw and len(raw) % 4):
        raise ValueError("malformed base64 length or padding")
    raw += b"=" * (-len(raw) % 4)
    # validate=True turns on binascii's strict mode: no stray characters, no excess padding.
    return base64.b64decode(raw, validate=True)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decode_prefixed(text: str, prefix: str, code: str, what: str, field_name: str | None) -> bytes:
    if not isinstance(text, str) or not text.startswith(prefix):
        raise BadRequest(code, f"{what} must start with {prefix!r}", field_name)
    body = text[len(prefix) :]
    if len(body) > _MAX_KEY_CHARS:
        raise BadRequest(code, f"{what} is too long", field_name)
    try:
        return b64decode_strict(body)
    except (ValueError, binascii.Error):
        raise BadRequest(code, f"{what} is not valid base64", field_name) from None


# ---------------------------------------------------------------------------- Ed25519


@dataclasses.dataclass(frozen=True, slots=True)
class SigningKeyPair:
    """An Ed25519 key pair as Standard Webhooks strings; `secret` is kept out of repr."""

    public: str
    secret: str = dataclasses.field(repr=False)


def generate_signing_keypair() -> SigningKeyPair:
    """A fresh random Ed25519 key pair (``whpk_…``, ``whsk_…``)."""
    signing = nacl.signing.SigningKey.generate()
    public = bytes(signing.verify_key)
    return SigningKeyPair(
        public=PUBLIC_KEY_PREFIX + _b64encode(public),
        secret=SECRET_KEY_PREFIX + _b64encode(bytes(signing) + public),
    )


def parse_public_key(text: str, *, field: str | None = None) -> nacl.signing.VerifyKey:
    """Parse a ``whpk_`` string; BadRequest ``invalid_public_key`` if malformed."""
    raw = _decode_prefixed(text, PUBLIC_KEY_PREFIX, "invalid_public_key", "public key", field)
    if len(raw) != _ED25519_PUBLIC_BYTES:
        raise BadRequest(
            "invalid_public_key",
            f"public key must encode {_ED25519_PUBLIC_BYTES} bytes, got {len(raw)}",
            field,
        )
    return nacl.signing.VerifyKey(raw)


def parse_secret_key(text: str, *, field: str | None = None) -> nacl.signing.SigningKey:
    """Parse a ``whsk_`` string (seed || public); BadRequest ``invalid_secret_key`` if malformed.

    Error descriptions never echo the key, since they may be logged or returned.
    """
    raw = _decode_prefixed(text, SECRET_KEY_PREFIX, "invalid_secret_key", "secret key", field)
    expected = _ED25519_SEED_BYTES + _ED25519_PUBLIC_BYTES
    if len(raw) != expected:
        raise BadRequest(
            "invalid_secret_key",
            f"secret key must encode {expected} bytes, got {len(raw)}",
            field,
        )
    signing = nacl.signing.SigningKey(raw[:_ED25519_SEED_BYTES])
    # The trailing half is redundant; a mismatch means the string was corrupted or spliced
    # from two keys, and signing with it would produce signatures nobody can verify.
    if not hmac.compare_digest(bytes(signing.verify_key), raw[_ED25519_SEED_BYTES:]):
        raise BadRequest(
            "invalid_secret_key", "secret key's public half does not match its seed", field
        )
    return signing


def public_of(secret: str) -> str:
    """The ``whpk_`` public key belonging to a ``whsk_`` secret key."""
    return PUBLIC_KEY_PREFIX + _b64encode(bytes(parse_secret_key(secret).verify_key))


# ---------------------------------------------------------------------------- HMAC (v1)


def generate_hmac_secret() -> str:
    """A fresh random ``whsec_`` secret (32 bytes) for endpoints that ask for ``v1``."""
    return HMAC_SECRET_PREFIX + _b64encode(secrets.token_bytes(_HMAC_SECRET_NEW_BYTES))


def parse_hmac_secret(text: str, *, field: str | None = None) -> bytes:
    """Parse a ``whsec_`` string to its raw key; BadRequest ``invalid_hmac_secret`` if malformed."""
    raw = _decode_prefixed(text, HMAC_SECRET_PREFIX, "invalid_hmac_secret", "HMAC secret", field)
    if not _HMAC_SECRET_MIN_BYTES <= len(raw) <= _HMAC_SECRET_MAX_BYTES:
        raise BadRequest(
            "invalid_hmac_secret",
            f"HMAC secret must encode {_HMAC_SECRET_MIN_BYTES} to {_HMAC_SECRET_MAX_BYTES} "
            f"bytes, got {len(raw)}",
            field,
        )
    return raw


# ---------------------------------------------------------------------------- master keys

# What a derived key is for: one master key, unrelated keys per purpose.
PURPOSE_SECRETS = "secrets"
PURPOSE_SESSIONS = "sessions"
PURPOSE_RECORDS = "records"  # MACs of internal Kafka records (switchboard.record_mac)
_KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
_KEY_ID_BYTES = 6


def _blake2b(data: bytes, key: bytes, person: bytes, size: int) -> bytes:
    out: bytes = nacl.hash.blake2b(data, digest_size=size, key=key, person=person,
                                  encoder=nacl.encoding.RawEncoder)
    return out


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one `purpose`, derived from a master key (keyed BLAKE2b)."""
    return _blake2b(b"switchboard/derive/" + purpose.encode(), master, b"sb-derive", _KEY_BYTES)


def key_id(master: bytes) -> str:
    """A short public name of a master key (keyed hash: tells nothing about the key)."""
    return _blake2b(b"switchboard/key-id", master, b"sb-key-id", _KEY_ID_BYTES).hex()


def _parse_master(text: str, position: int) -> bytes:
    what = "SWITCHBOARD_SECRET_KEYS" if position else "SWITCHBOARD_SECRET_KEY(S)"
    try:
        key = b64decode_strict(text.strip())
    except (ValueError, binascii.Error, AttributeError):
        raise ConfigError(
            f"{what}: key {position + 1} must be standard base64 of 32 random bytes "
            "(generate one with generate_secret_key_b64())"
        ) from None
    if len(key) != _KEY_BYTES:
        raise ConfigError(f"{what}: key {position + 1} must decode to {_KEY_BYTES} bytes, "
                          f"got {len(key)}")
    return key


def parse_master_keys(text: str) -> list[bytes]:
    """``SWITCHBOARD_SECRET_KEYS``/``_KEY``: comma-separated standard base64 of 32 bytes
    each (ConfigError if empty or malformed); the first one is current."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("SWITCHBOARD_SECRET_KEY (or SWITCHBOARD_SECRET_KEYS) is required: "
                          "base64 of 32 random bytes")
    parts = [p for p in text.split(",") if p.strip()]
    return [_parse_master(p, i) for i, p in enumerate(parts)]


def generate_secret_key_b64() -> str:
    """A fresh sealing key: standard base64 of 32 random bytes."""
    return _b64encode(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))


# ---------------------------------------------------------------------------- access tokens


def new_access_token() -> str:
    """A fresh API access token: ``sbat_`` + 32 random bytes, URL-safe base64, unpadded."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


_ACCESS_TOKEN_SHAPE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")


def looks_like_access_token(token: str) -> bool:
    """Has the shape `new_access_token` gives (a cheap filter before any look-up)."""
    return _ACCESS_TOKEN_SHAPE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    """SHA-256 hex of an access token, the form we store.

    A plain fast hash suffices: tokens carry 256 random bits, so there is nothing to brute
    force, and a password-style KDF would only slow every request.
    """
    # surrogatepass: whatever string a request decodes to must hash, never raise.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time string equality (for tokens and token hashes)."""
    # compare_digest rejects non-ASCII str, so compare the encoded bytes instead.
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
