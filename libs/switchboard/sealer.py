"""Sealing at rest: `Sealer` encrypts values under the deployment's master keys (see
`switchboard.keys` for parsing them and deriving a key per purpose) and opens them again;
`UnsealError` when a sealed value does not open. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.utils

from switchboard.errors import ConfigError, SwitchboardError
from switchboard.keys import (
    PURPOSE_SECRETS,
    b64decode_strict,
    derive_key,
    key_id,
    parse_master_keys,
)

__all__ = [
    "SEALED_PREFIX",
    "SEALED_V2_PREFIX",
    "Sealer",
    "UnsealError",
]

SEALED_PREFIX = "sealed:v1:"  # legacy: still opened, never written
SEALED_V2_PREFIX = "sealed:v2:"

_KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
_AEAD_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_AEAD_TAG = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class UnsealError(SwitchboardError):
    """A sealed token could not be opened: tampered, truncated, moved to another record, or
    sealed under a key this deployment no longer holds.

    Status 500: a secret we stored ourselves failing to open is our fault, not the caller's.
    """

    status = 500


class Sealer:
    """Seals values at rest under the deployment's master keys, for one purpose.

    ``sealed:v2:<key id>:<base64(nonce || ciphertext)>``: XChaCha20-Poly1305 under a key
    derived from the first master key for this sealer's purpose, with the value's
    *context* (which record and field it belongs to) as associated data, so a sealed value
    copied into another record or field does not open. Later master keys only open (key
    rotation: seal with the new key first, keep the old one until `switchboard reseal`
    has run). Legacy ``sealed:v1:`` values (SecretBox under the raw master key, no
    context) still open, so a registry written before v2 keeps working; `reseal` rewrites
    them as v2.
    """

    __slots__ = ("_by_id", "_current", "_legacy", "_masters", "purpose")

    def __init__(self, keys: bytes | Sequence[bytes], *, purpose: str = PURPOSE_SECRETS) -> None:
        masters = [keys] if isinstance(keys, bytes) else list(keys)
        if not masters:
            raise ConfigError("at least one sealing key is needed")
        for k in masters:
            if not isinstance(k, bytes) or len(k) != _KEY_BYTES:
                raise ConfigError(f"sealing key must be exactly {_KEY_BYTES} bytes")
        self._masters = tuple(masters)
        self.purpose = purpose
        self._by_id = {key_id(k): derive_key(k, purpose) for k in reversed(masters)}
        self._current = key_id(masters[0])
        self._legacy = tuple(nacl.secret.SecretBox(k) for k in masters)

    @classmethod
    def from_b64(cls, text: str, *, purpose: str = PURPOSE_SECRETS) -> Sealer:
        """Build from ``SWITCHBOARD_SECRET_KEYS``/``_KEY``: comma-separated standard base64
        of 32 bytes each, the first one sealing, all of them opening."""
        return cls(parse_master_keys(text), purpose=purpose)

    def for_purpose(self, purpose: str) -> Sealer:
        """A sealer over the same master keys whose derived keys serve `purpose` instead."""
        return Sealer(self._masters, purpose=purpose)

    def __repr__(self) -> str:
        return f"Sealer(<{len(self._masters)} key(s) hidden>, purpose={self.purpose!r})"

    @property
    def key_id(self) -> str:
        """The id of the key new values are sealed under."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self._masters)

    @staticmethod
    def _aad(kid: str, context: str) -> bytes:
        return f"{SEALED_V2_PREFIX}{kid}:".encode() + context.encode("utf-8", "surrogatepass")

    def seal(self, plaintext: bytes, context: str) -> str:
        """Encrypt and authenticate `plaintext`, bound to `context` (e.g. the record and field
        it is stored in): returns ``sealed:v2:<key id>:<base64>``."""
        nonce = nacl.utils.random(_AEAD_NONCE)
        kid = self._current
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, self._aad(kid, context), nonce, self._by_id[kid])
        return f"{SEALED_V2_PREFIX}{kid}:{_b64encode(nonce + ct)}"

    def is_current(self, token: str) -> bool:
        """Sealed as v2 under the current key (nothing for `reseal` to do)."""
        return isinstance(token, str) and token.startswith(f"{SEALED_V2_PREFIX}{self._current}:")

    def open(self, token: str, context: str) -> bytes:
        """Decrypt a token from `seal` with the same `context`; UnsealError if malformed,
        tampered with, sealed for another context or purpose, or under an unknown key."""
        if not isinstance(token, str):
            raise UnsealError("unseal_failed", "sealed value must be a string")
        if token.startswith(SEALED_V2_PREFIX):
            kid, sep, body = token[len(SEALED_V2_PREFIX):].partition(":")
            key = self._by_id.get(kid) if sep else None
            if key is None:
                raise UnsealError("unseal_failed",
                                  "sealed value names a key this deployment does not hold")
            raw = self._decode(body, _AEAD_NONCE + _AEAD_TAG)
            try:
                out: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    raw[_AEAD_NONCE:], self._aad(kid, context), raw[:_AEAD_NONCE], key)
            except nacl.exceptions.CryptoError:
                raise UnsealError("unseal_failed", "sealed value was tampered with or belongs "
                                  "to another record") from None
            return out
        if token.startswith(SEALED_PREFIX):
            return self._open_legacy(token)
        raise UnsealError("unseal_failed", f"sealed value must start with {SEALED_V2_PREFIX!r}")

    def reseal(self, token: str, context: str) -> str:
        """`token` sealed under the current key and bound to `context` (itself if it is)."""
        if self.is_current(token):
            self.open(token, context)  # still proves it belongs here
            return token
        return self.seal(self.open(token, context), context)

    @staticmethod
    def _decode(body: str, minimum: int) -> bytes:
        try:
            raw = b64decode_strict(body)
        except (ValueError, binascii.Error):
            raise UnsealError("unseal_failed", "sealed value is not valid base64") from None
        if len(raw) < minimum:
            raise UnsealError("unseal_failed", "sealed value is truncated")
        return raw

    def _open_legacy(self, token: str) -> bytes:
        raw = self._decode(token[len(SEALED_PREFIX):],
                           nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES)
        for box in self._legacy:
            try:
                out: bytes = box.decrypt(raw)
            except nacl.exceptions.CryptoError:
                continue
            return out
        raise UnsealError(
            "unseal_failed", "sealed value was tampered with or sealed under another key")

    def seal_legacy(self, plaintext: bytes) -> str:
        """A ``sealed:v1:`` value as releases before v2 wrote it (for migration tests)."""
        return SEALED_PREFIX + _b64encode(bytes(self._legacy[0].encrypt(plaintext)))
