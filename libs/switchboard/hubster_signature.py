"""Hubster-style delivery signatures, for receivers written against Hubster. Pure.

Hubster signs a webhook with two headers: ``x-hubster-public-key`` names the key, and
``x-hubster-signature`` is base64 of HMAC-SHA256 over the raw body, keyed by the UTF-8
bytes of the private signing key *string* (as Hubster's public webhook sample verifies
it). Keys look like Hubster's: 32 upper-case hex characters each.

The scheme signs no timestamp and no message id, so a captured delivery can be replayed
as is; the Standard Webhooks headers sent alongside (`switchboard.webhooks`) can not.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

__all__ = [
    "HEADER_PUBLIC_KEY",
    "HEADER_SIGNATURE",
    "HubsterKeyPair",
    "generate_keypair",
    "headers",
    "is_key",
    "sign",
    "verify",
]

HEADER_PUBLIC_KEY = "x-hubster-public-key"
HEADER_SIGNATURE = "x-hubster-signature"

_KEY_RE = re.compile(r"[0-9A-F]{32}")
# base64 of a 32-byte digest, padded: 44 characters; anything longer is not a signature.
_SIGNATURE_CHARS = 44


@dataclasses.dataclass(frozen=True, slots=True)
class HubsterKeyPair:
    """A Hubster-style key pair; `private` is kept out of repr."""

    public: str
    private: str = dataclasses.field(repr=False)


def generate_keypair() -> HubsterKeyPair:
    """Fresh random keys in Hubster's spelling (128 bits each, hex, upper case)."""
    return HubsterKeyPair(public=secrets.token_hex(16).upper(),
                          private=secrets.token_hex(16).upper())


def is_key(text: object) -> bool:
    """Whether `text` is spelled like a key this module makes."""
    return isinstance(text, str) and _KEY_RE.fullmatch(text) is not None


def sign(private_key: str, body: bytes) -> str:
    """The ``x-hubster-signature`` value: base64(HMAC-SHA256(utf8(private_key), body))."""
    digest = hmac.new(private_key.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def headers(keys: HubsterKeyPair, body: bytes) -> dict[str, str]:
    """Both Hubster headers for `body`."""
    return {HEADER_PUBLIC_KEY: keys.public, HEADER_SIGNATURE: sign(keys.private, body)}


def verify(received: Mapping[str, str], body: bytes, private_keys: Mapping[str, str]) -> bool:
    """Whether `received` (lower-case header names) signs `body` with the private key that
    `private_keys` holds for the public key it names; constant-time on the signature."""
    public = received.get(HEADER_PUBLIC_KEY)
    signature = received.get(HEADER_SIGNATURE)
    if not isinstance(public, str) or not isinstance(signature, str):
        return False
    private = private_keys.get(public)
    if private is None or len(signature) > _SIGNATURE_CHARS:
        return False
    return hmac.compare_digest(sign(private, body).encode(), signature.encode("ascii", "replace"))
