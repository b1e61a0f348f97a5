"""Key formats, sealing at rest and access tokens (switchboard.keys)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from switchboard.errors import BadRequest, ConfigError, SwitchboardError
from switchboard.keys import (
    PURPOSE_SESSIONS,
    SigningKeyPair,
    b64decode_strict,
    derive_key,
    generate_hmac_secret,
    generate_secret_key_b64,
    generate_signing_keypair,
    hash_token,
    key_id,
    new_access_token,
    parse_hmac_secret,
    parse_public_key,
    parse_secret_key,
    public_of,
    tokens_equal,
)
from switchboard.sealer import Sealer, UnsealError


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---------------------------------------------------------------------------- base64


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", b""), ("YQ==", b"a"), ("YQ", b"a"), ("YWI=", b"ab"), ("YWI", b"ab"), ("YWJj", b"abc")],
)
def test_b64decode_strict_accepts_padded_and_unpadded(text: str, expected: bytes) -> None:
    assert b64decode_strict(text) == expected


@pytest.mark.parametrize(
    "text", ["Y", "YQ=", "YQ===", "Y Q==", "YQ==\n", "YQ-_", "YQ==YQ==", "=YQ=", "é", "\x00"]
)
def test_b64decode_strict_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_strict(text)


# ---------------------------------------------------------------------------- Ed25519 keys


def test_generated_keypair_format_and_round_trip() -> None:
    pair = generate_signing_keypair()
    assert re.fullmatch(r"whpk_[A-Za-z0-9+/]{43}=", pair.public)
    assert re.fullmatch(r"whsk_[A-Za-z0-9+/]{86}==", pair.secret)
    signing = parse_secret_key(pair.secret)
    verify = parse_public_key(pair.public)
    assert bytes(signing.verify_key) == bytes(verify)
    assert public_of(pair.secret) == pair.public
    # The secret half is seed || public.
    raw = base64.b64decode(pair.secret[5:])
    assert raw[:32] == bytes(signing) and raw[32:] == bytes(verify)


def test_keypairs_are_random() -> None:
    assert len({generate_signing_keypair().secret for _ in range(20)}) == 20


def test_keypair_repr_hides_secret() -> None:
    pair = generate_signing_keypair()
    assert pair.secret not in repr(pair)
    assert pair.secret[5:25] not in repr(pair)
    assert pair.public in repr(pair)
    assert isinstance(pair, SigningKeyPair)


def test_keys_match_an_independent_ed25519_implementation() -> None:
    # The same seed must give the same public key in `cryptography` (OpenSSL).
    pair = generate_signing_keypair()
    seed = base64.b64decode(pair.secret[5:])[:32]
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    assert "whpk_" + b64(raw_public(theirs)) == pair.public

    # And a key made by `cryptography`, written in our format, parses back to itself.
    other = Ed25519PrivateKey.generate()
    other_seed = other.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    secret = "whsk_" + b64(other_seed + raw_public(other))
    assert public_of(secret) == "whpk_" + b64(raw_public(other))


def test_unpadded_keys_are_accepted() -> None:
    pair = generate_signing_keypair()
    assert bytes(parse_public_key(pair.public.rstrip("="))) == bytes(parse_public_key(pair.public))
    assert public_of(pair.secret.rstrip("=")) == pair.public


@pytest.mark.parametrize(
    "text",
    [
        "",
        "whpk_",
        "WHPK_" + b64(bytes(32)),
        "whsk_" + b64(bytes(32)),
        "whpk" + b64(bytes(32)),
        " whpk_" + b64(bytes(32)),
        "whpk_" + b64(bytes(31)),
        "whpk_" + b64(bytes(33)),
        "whpk_" + b64(bytes(64)),
        "whpk_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),
        "whpk_" + b64(bytes(32)) + "\n",
        "whpk_" + b64(bytes(32))[:-2] + "é=",
        "whpk_" + "A" * 100_000,
    ],
)
def test_parse_public_key_rejects(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_public_key(text, field="publicKey")
    assert info.value.code == "invalid_public_key"
    assert info.value.field == "publicKey"
    assert info.value.status == 400


def test_parse_secret_key_wrong_prefix_and_length() -> None:
    pair = generate_signing_keypair()
    raw = base64.b64decode(pair.secret[5:])
    cases = {
        "whpk_" + pair.secret[5:]: "must start with",
        "whsk_" + b64(raw[:32]): "64 bytes, got 32",
        "whsk_" + b64(raw + b"\x00"): "64 bytes, got 65",
        "whsk_" + pair.secret[5:-3] + "!==": "not valid base64",
        pair.public: "must start with",
    }
    for text, message in cases.items():
        with pytest.raises(BadRequest) as info:
            parse_secret_key(text)
        assert info.value.code == "invalid_secret_key"
        assert message in info.value.description


def test_parse_secret_key_rejects_mismatched_public_half() -> None:
    a, b = generate_signing_keypair(), generate_signing_keypair()
    seed_a = base64.b64decode(a.secret[5:])[:32]
    public_b = base64.b64decode(b.secret[5:])[32:]
    spliced = "whsk_" + b64(seed_a + public_b)
    with pytest.raises(BadRequest) as info:
        parse_secret_key(spliced)
    assert info.value.code == "invalid_secret_key"
    assert "does not match" in info.value.description
    # Errors must never echo key material.
    assert spliced[5:] not in str(info.value) and seed_a.hex() not in str(info.value)
    with pytest.raises(BadRequest):
        public_of(spliced)


# ---------------------------------------------------------------------------- HMAC secrets


def test_hmac_secret_round_trip() -> None:
    secret = generate_hmac_secret()
    assert secret.startswith("whsec_")
    assert len(parse_hmac_secret(secret)) == 32
    assert generate_hmac_secret() != secret


@pytest.mark.parametrize("size", [24, 32, 64])
def test_hmac_secret_sizes_accepted(size: int) -> None:
    assert parse_hmac_secret("whsec_" + b64(bytes(range(size)))) == bytes(range(size))


@pytest.mark.parametrize(
    "text",
    ["whsec_" + b64(bytes(23)), "whsec_" + b64(bytes(65)), "whsec_", "whsec_%%%%", b64(bytes(32))],
)
def test_hmac_secret_rejected(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_hmac_secret(text)
    assert info.value.code == "invalid_hmac_secret"


# ---------------------------------------------------------------------------- sealing


CTX = "integration:i-1:auth_token"


def test_seal_round_trip() -> None:
    sealer = Sealer.from_b64(generate_secret_key_b64())
    for plaintext in [b"", b"x", b"whsk_secret", bytes(range(256)) * 40]:
        token = sealer.seal(plaintext, CTX)
        assert token.startswith(f"sealed:v2:{sealer.key_id}:")
        assert "whsk_" not in token
        assert sealer.open(token, CTX) == plaintext


def test_seal_uses_a_fresh_nonce_each_time() -> None:
    sealer = Sealer(bytes(32))
    tokens = {sealer.seal(b"same", CTX) for _ in range(50)}
    assert len(tokens) == 50


def test_sealer_from_b64_and_from_bytes_agree() -> None:
    key_b64 = generate_secret_key_b64()
    assert len(base64.b64decode(key_b64)) == 32
    token = Sealer.from_b64(key_b64).seal(b"hello", CTX)
    assert Sealer(base64.b64decode(key_b64)).open(token, CTX) == b"hello"
    # Surrounding whitespace (a trailing newline in an env file) is tolerated.
    assert Sealer.from_b64(f"  {key_b64}\n").open(token, CTX) == b"hello"


def _body(token: str) -> tuple[str, bytes]:
    head, _, body = token.rpartition(":")
    return head + ":", base64.b64decode(body)


def test_open_detects_tampering_anywhere() -> None:
    sealer = Sealer(bytes(range(32)))
    token = sealer.seal(b"provider token", CTX)
    head, raw = _body(token)
    # Flip one bit in every byte position: nonce, MAC and ciphertext are all covered.
    for i in range(len(raw)):
        tampered = bytearray(raw)
        tampered[i] ^= 0x01
        with pytest.raises(UnsealError):
            sealer.open(head + b64(bytes(tampered)), CTX)


def test_a_sealed_value_is_bound_to_its_record_and_field() -> None:
    sealer = Sealer(bytes(range(32)))
    token = sealer.seal(b"twilio auth token", "integration:A:auth_token")
    for elsewhere in ("integration:B:auth_token", "integration:A:shared_key_secret", ""):
        with pytest.raises(UnsealError):
            sealer.open(token, elsewhere)


def test_purposes_have_unrelated_keys() -> None:
    secrets_ = Sealer(bytes(range(32)))
    sessions = secrets_.for_purpose(PURPOSE_SESSIONS)
    token = secrets_.seal(b"x", CTX)
    with pytest.raises(UnsealError):
        sessions.open(token, CTX)
    assert sessions.open(sessions.seal(b"y", CTX), CTX) == b"y"
    assert derive_key(bytes(32), "a") != derive_key(bytes(32), "b") != bytes(32)


def test_old_keys_open_and_the_first_key_seals() -> None:
    old_b64, new_b64 = generate_secret_key_b64(), generate_secret_key_b64()
    old = Sealer.from_b64(old_b64)
    token = old.seal(b"sealed long ago", CTX)
    both = Sealer.from_b64(f"{new_b64}, {old_b64}")
    assert both.key_ids == (Sealer.from_b64(new_b64).key_id, old.key_id)
    assert both.open(token, CTX) == b"sealed long ago"
    assert not both.is_current(token)
    fresh = both.reseal(token, CTX)
    assert both.is_current(fresh) and fresh.startswith(f"sealed:v2:{both.key_id}:")
    assert Sealer.from_b64(new_b64).open(fresh, CTX) == b"sealed long ago"
    assert both.reseal(fresh, CTX) == fresh
    # Once the old key is dropped, what it alone sealed no longer opens.
    with pytest.raises(UnsealError) as info:
        Sealer.from_b64(new_b64).open(token, CTX)
    assert "does not hold" in info.value.description


def test_legacy_v1_values_still_open_and_reseal_to_v2() -> None:
    sealer = Sealer(bytes(range(32)))
    legacy = sealer.seal_legacy(b"from before v2")
    assert legacy.startswith("sealed:v1:")
    assert sealer.open(legacy, "any context") == b"from before v2"
    assert sealer.open(sealer.reseal(legacy, CTX), CTX) == b"from before v2"
    rotated = Sealer([bytes(32), bytes(range(32))])
    assert rotated.open(legacy, CTX) == b"from before v2"


def test_key_ids_do_not_reveal_keys() -> None:
    key = bytes(range(32))
    kid = key_id(key)
    assert len(kid) == 12 and kid not in key.hex() and kid != key_id(bytes(32))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sealed:v1:",
        "sealed:v2:",
        "sealed:v2:" + b64(bytes(60)),
        "sealed:v2:000000000000:" + b64(bytes(60)),
        "sealed:v1:" + b64(bytes(39)),
        "sealed:v1:" + b64(bytes(40)),
        "sealed:v1:not base64!",
        "sealed:v1:é",
        "plain text secret",
    ],
)
def test_open_rejects_malformed(token: str) -> None:
    with pytest.raises(UnsealError) as info:
        Sealer(bytes(32)).open(token, CTX)
    assert info.value.code == "unseal_failed"


def test_open_rejects_a_truncated_v2_body() -> None:
    sealer = Sealer(bytes(32))
    head, raw = _body(sealer.seal(b"", CTX))
    with pytest.raises(UnsealError):
        sealer.open(head + b64(raw[:39]), CTX)


def test_open_with_wrong_key_fails() -> None:
    token = Sealer.from_b64(generate_secret_key_b64()).seal(b"secret", CTX)
    with pytest.raises(UnsealError) as info:
        Sealer.from_b64(generate_secret_key_b64()).open(token, CTX)
    assert isinstance(info.value, SwitchboardError)
    assert info.value.status == 500


def test_open_rejects_truncation() -> None:
    sealer = Sealer(bytes(32))
    token = sealer.seal(b"a longer secret value", CTX)
    with pytest.raises(UnsealError):
        sealer.open(token[:-8], CTX)


@pytest.mark.parametrize(
    "text",
    ["", "short", b64(bytes(31)), b64(bytes(33)), b64(bytes(64)), "%" * 44, "é" * 44,
     f"{b64(bytes(32))},short"],
)
def test_sealer_from_b64_rejects_bad_config(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Sealer.from_b64(text)
    assert isinstance(info.value, ValueError)
    assert "SWITCHBOARD_SECRET_KEY" in str(info.value)


def test_sealer_rejects_bad_raw_key_and_hides_key_in_repr() -> None:
    with pytest.raises(ConfigError):
        Sealer(bytes(16))
    with pytest.raises(ConfigError):
        Sealer([])
    key = bytes(range(32))
    assert b64(key) not in repr(Sealer(key)) and key.hex() not in repr(Sealer(key))


# ---------------------------------------------------------------------------- access tokens


def test_new_access_token_shape() -> None:
    token = new_access_token()
    assert re.fullmatch(r"sbat_[A-Za-z0-9_-]{43}", token)
    assert len({new_access_token() for _ in range(100)}) == 100


def test_hash_token() -> None:
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    token = new_access_token()
    assert hash_token(token) == hash_token(token)
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token(token))
    assert hash_token(token) != hash_token(new_access_token())
    # Whatever a request header decodes to must hash, not raise.
    assert len(hash_token("\udc80é\x00")) == 64


def test_tokens_equal() -> None:
    token = new_access_token()
    assert tokens_equal(token, token)
    assert not tokens_equal(token, token[:-1])
    assert not tokens_equal(token, new_access_token())
    assert tokens_equal("é", "é")
    assert not tokens_equal("é", "e")
    assert not tokens_equal("\udc80", "")
