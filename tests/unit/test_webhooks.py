"""Standard Webhooks signing and verification (switchboard.webhooks).

Ed25519 (v1a) is cross-checked against `cryptography` (OpenSSL) and HMAC (v1) against the
`standardwebhooks` reference package, so a bug shared by our signer and verifier cannot
hide behind a passing round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import string
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from switchboard.errors import BadRequest, SwitchboardError, Unauthorized
from switchboard.keys import generate_hmac_secret, generate_signing_keypair
from switchboard.webhooks import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    MAX_SIGNATURE_HEADER_LENGTH,
    MAX_SIGNATURES,
    Signer,
    VerifiedWebhook,
    Verifier,
    sign,
    verify,
)

NOW = 1_700_000_000
BODY = b'{"type":"message.created","text":"h\xc3\xa9llo"}'
MSG_ID = "msg_2Xk9fPq"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body


def headers(msg_id: str, timestamp: int | str, signature: str) -> dict[str, str]:
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(timestamp), HEADER_SIGNATURE: signature}


class OpenSSLKey:
    """An Ed25519 key held by `cryptography`, with its Standard Webhooks strings."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        seed = self.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = "whpk_" + b64(public)
        self.secret = "whsk_" + b64(seed + public)

    def entry(self, msg_id: str, timestamp: str, body: bytes) -> str:
        return "v1a," + b64(self.key.sign(content(msg_id, timestamp, body)))


def hmac_entry(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + b64(mac)


def error_of(
    hdrs: Mapping[str, str],
    body: bytes = BODY,
    *,
    public_keys: Sequence[str] = (),
    hmac_secrets: Sequence[str] = (),
    tolerance: int = 300,
) -> SwitchboardError:
    with pytest.raises(SwitchboardError) as info:
        verify(
            hdrs,
            body,
            public_keys=public_keys,
            hmac_secrets=hmac_secrets,
            now=NOW,
            tolerance=tolerance,
        )
    return info.value


# ---------------------------------------------------------------------------- round trips


def test_sign_and_verify_ed25519() -> None:
    pair = generate_signing_keypair()
    signature = sign(MSG_ID, NOW, BODY, ed25519=[pair.secret])
    assert signature.startswith("v1a,") and " " not in signature
    result = verify(headers(MSG_ID, NOW, signature), BODY, public_keys=[pair.public], now=NOW)
    assert result == VerifiedWebhook(id=MSG_ID, timestamp=NOW)


def test_sign_and_verify_hmac() -> None:
    secret = generate_hmac_secret()
    signature = sign(MSG_ID, NOW, BODY, hmac=[secret])
    assert signature.startswith("v1,")
    result = verify(headers(MSG_ID, NOW, signature), BODY, hmac_secrets=[secret], now=NOW)
    assert result == VerifiedWebhook(MSG_ID, NOW)


def test_both_schemes_in_one_header() -> None:
    pair, secret = generate_signing_keypair(), generate_hmac_secret()
    signature = sign(MSG_ID, NOW, BODY, ed25519=[pair.secret], hmac=[secret])
    versions = [entry.split(",")[0] for entry in signature.split(" ")]
    assert versions == ["v1a", "v1"]
    hdrs = headers(MSG_ID, NOW, signature)
    assert verify(hdrs, BODY, public_keys=[pair.public], now=NOW).id == MSG_ID
    assert verify(hdrs, BODY, hmac_secrets=[secret], now=NOW).id == MSG_ID


def test_signer_headers_and_reuse() -> None:
    pair = generate_signing_keypair()
    signer = Signer(ed25519=[pair.secret])
    verifier = Verifier(public_keys=[pair.public])
    for i in range(20):
        body = BODY + str(i).encode()
        hdrs = signer.headers(f"msg_{i}", NOW + i, body)
        assert set(hdrs) == {HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE}
        assert verifier.verify(hdrs, body, now=NOW) == VerifiedWebhook(f"msg_{i}", NOW + i)
    assert pair.secret[5:20] not in repr(signer)


def test_a_lone_string_is_one_key_not_a_sequence_of_characters() -> None:
    pair = generate_signing_keypair()
    signature = sign(MSG_ID, NOW, BODY, ed25519=pair.secret)
    assert verify(headers(MSG_ID, NOW, signature), BODY, public_keys=pair.public, now=NOW)


def test_signer_rejects_bad_arguments() -> None:
    pair = generate_signing_keypair()
    with pytest.raises(ValueError, match="at least one"):
        Signer()
    with pytest.raises(ValueError, match="webhook id"):
        sign("has space", NOW, BODY, ed25519=[pair.secret])
    with pytest.raises(ValueError, match="webhook id"):
        sign("x" * 257, NOW, BODY, ed25519=[pair.secret])
    with pytest.raises(ValueError, match="timestamp"):
        sign(MSG_ID, -1, BODY, ed25519=[pair.secret])
    with pytest.raises(BadRequest) as info:
        sign(MSG_ID, NOW, BODY, ed25519=[pair.public])
    assert info.value.code == "invalid_secret_key"
    with pytest.raises(BadRequest) as info:
        sign(MSG_ID, NOW, BODY, hmac=["whsec_tooshort"])
    assert info.value.code == "invalid_hmac_secret"


def test_verifier_rejects_malformed_configured_keys() -> None:
    with pytest.raises(BadRequest) as info:
        Verifier(public_keys=["whpk_nope"])
    assert info.value.code == "invalid_public_key"
    with pytest.raises(BadRequest) as info:
        Verifier(hmac_secrets=[generate_signing_keypair().public])
    assert info.value.code == "invalid_hmac_secret"


def test_no_keys_configured_never_verifies() -> None:
    signature = sign(MSG_ID, NOW, BODY, ed25519=[generate_signing_keypair().secret])
    err = error_of(headers(MSG_ID, NOW, signature))
    assert (err.status, err.code) == (401, "invalid_signature")


# ---------------------------------------------------------------------------- cross-checks


def test_our_v1a_verifies_with_cryptography() -> None:
    theirs = OpenSSLKey()
    signature = sign(MSG_ID, NOW, BODY, ed25519=[theirs.secret])
    raw = base64.b64decode(signature.removeprefix("v1a,"))
    theirs.key.public_key().verify(raw, content(MSG_ID, str(NOW), BODY))
    # Ed25519 is deterministic: both implementations must produce the very same bytes.
    assert signature == theirs.entry(MSG_ID, str(NOW), BODY)
    with pytest.raises(InvalidSignature):
        theirs.key.public_key().verify(raw, content(MSG_ID, str(NOW), BODY + b" "))


def test_cryptography_signatures_verify_with_ours() -> None:
    for i in range(25):
        theirs = OpenSSLKey()
        body = random.Random(i).randbytes(i * 37)
        msg_id = f"evt_{i}"
        hdrs = headers(msg_id, NOW, theirs.entry(msg_id, str(NOW), body))
        assert verify(hdrs, body, public_keys=[theirs.public], now=NOW).id == msg_id
        err = error_of(hdrs, body + b"x", public_keys=[theirs.public])
        assert err.code == "invalid_signature"


def test_standardwebhooks_known_vector() -> None:
    # The reference vector from the Standard Webhooks / Svix documentation.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, ts, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(msg_id, ts, body, hmac=[secret]) == expected
    assert verify(headers(msg_id, ts, expected), body, hmac_secrets=[secret], now=ts).id == msg_id


def test_standardwebhooks_signatures_verify_with_ours() -> None:
    secret = generate_hmac_secret()
    reference = Webhook(secret)
    for i in range(25):
        ts = NOW + i
        text = f'{{"n": {i}, "s": "é✓"}}'
        signature = reference.sign(f"msg_{i}", datetime.fromtimestamp(ts, tz=UTC), text)
        result = verify(
            headers(f"msg_{i}", ts, signature), text.encode(), hmac_secrets=[secret], now=ts
        )
        assert result == VerifiedWebhook(f"msg_{i}", ts)


def test_our_v1_verifies_with_standardwebhooks() -> None:
    # The reference verifier reads the wall clock, so sign at the current time.
    secret, pair = generate_hmac_secret(), generate_signing_keypair()
    now = int(time.time())
    body = '{"id": 1, "text": "grüße"}'.encode()
    # A v1a entry next to the v1 one must not confuse a v1-only receiver.
    hdrs = Signer(ed25519=[pair.secret], hmac=[secret]).headers(MSG_ID, now, body)
    Webhook(secret).verify(body, hdrs, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", hdrs, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_hmac_secret()).verify(body, hdrs, json_parse=False)


# ---------------------------------------------------------------------------- timestamps


@pytest.fixture(scope="module")
def pair_and_verifier() -> tuple[Signer, Verifier]:
    pair = generate_signing_keypair()
    return Signer(ed25519=[pair.secret]), Verifier(public_keys=[pair.public])


@pytest.mark.parametrize("offset", [-300, -299, -1, 0, 1, 299, 300])
def test_timestamp_inside_window(pair_and_verifier: tuple[Signer, Verifier], offset: int) -> None:
    signer, verifier = pair_and_verifier
    hdrs = signer.headers(MSG_ID, NOW + offset, BODY)
    assert verifier.verify(hdrs, BODY, now=NOW).timestamp == NOW + offset


@pytest.mark.parametrize(
    ("offset", "word"), [(-301, "past"), (301, "future"), (-86_400, "past"), (10**9, "future")]
)
def test_timestamp_outside_window(
    pair_and_verifier: tuple[Signer, Verifier], offset: int, word: str
) -> None:
    signer, verifier = pair_and_verifier
    hdrs = signer.headers(MSG_ID, NOW + offset, BODY)
    with pytest.raises(Unauthorized) as info:
        verifier.verify(hdrs, BODY, now=NOW)
    assert (info.value.code, info.value.field) == ("stale_timestamp", HEADER_TIMESTAMP)
    assert word in info.value.description


def test_custom_tolerance() -> None:
    pair = generate_signing_keypair()
    hdrs = Signer(ed25519=[pair.secret]).headers(MSG_ID, NOW - 10, BODY)
    assert verify(hdrs, BODY, public_keys=[pair.public], now=NOW, tolerance=10)
    err = error_of(hdrs, public_keys=[pair.public], tolerance=9)
    assert err.code == "stale_timestamp"


@pytest.mark.parametrize(
    "timestamp",
    [
        "",
        "abc",
        "1700000000.0",
        "1.7e9",
        "-1700000000",
        "+1700000000",
        " 1700000000",
        "1700000000\n",
        "1700000000 ",
        "0x6553f100",
        "1_700_000_000",
        "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits: isdigit() and int() take them
        "\u00b2",  # superscript two: isdigit() is True, int() fails
        "9" * 5000,  # would trip int()'s digit limit
    ],
)
def test_malformed_timestamp(pair_and_verifier: tuple[Signer, Verifier], timestamp: str) -> None:
    signer, verifier = pair_and_verifier
    hdrs = {**signer.headers(MSG_ID, NOW, BODY), HEADER_TIMESTAMP: timestamp}
    with pytest.raises(BadRequest) as info:
        verifier.verify(hdrs, BODY, now=NOW)
    assert (info.value.code, info.value.field) == ("invalid_timestamp", HEADER_TIMESTAMP)


def test_missing_timestamp(pair_and_verifier: tuple[Signer, Verifier]) -> None:
    signer, verifier = pair_and_verifier
    hdrs = signer.headers(MSG_ID, NOW, BODY)
    del hdrs[HEADER_TIMESTAMP]
    with pytest.raises(BadRequest) as info:
        verifier.verify(hdrs, BODY, now=NOW)
    assert info.value.code == "invalid_timestamp"


def test_timestamp_is_verified_exactly_as_sent() -> None:
    # A sender that zero-pads signs the padded text; we must verify that text, not int().
    secret = generate_hmac_secret()
    padded = "0" + str(NOW)
    hdrs = headers(MSG_ID, padded, hmac_entry(secret, MSG_ID, padded, BODY))
    assert verify(hdrs, BODY, hmac_secrets=[secret], now=NOW).timestamp == NOW
    hdrs = headers(MSG_ID, NOW, hmac_entry(secret, MSG_ID, padded, BODY))
    assert error_of(hdrs, hmac_secrets=[secret]).code == "invalid_signature"


# ---------------------------------------------------------------------------- webhook-id


@pytest.mark.parametrize("msg_id", ["a", "x" * 256, "msg_!~#$%&'()*+,-./:;<=>?@[]^_`{|}"])
def test_valid_ids(pair_and_verifier: tuple[Signer, Verifier], msg_id: str) -> None:
    signer, verifier = pair_and_verifier
    assert verifier.verify(signer.headers(msg_id, NOW, BODY), BODY, now=NOW).id == msg_id


@pytest.mark.parametrize(
    "msg_id",
    ["", "x" * 257, "msg é", "msg_é", "msg 1", "msg\t1", "msg\n", "\x7f", "msg\x00", "✓"],
)
def test_invalid_ids(pair_and_verifier: tuple[Signer, Verifier], msg_id: str) -> None:
    signer, verifier = pair_and_verifier
    hdrs = {**signer.headers(MSG_ID, NOW, BODY), HEADER_ID: msg_id}
    with pytest.raises(BadRequest) as info:
        verifier.verify(hdrs, BODY, now=NOW)
    assert (info.value.code, info.value.field) == ("invalid_webhook_id", HEADER_ID)


def test_missing_id(pair_and_verifier: tuple[Signer, Verifier]) -> None:
    signer, verifier = pair_and_verifier
    hdrs = signer.headers(MSG_ID, NOW, BODY)
    del hdrs[HEADER_ID]
    with pytest.raises(BadRequest) as info:
        verifier.verify(hdrs, BODY, now=NOW)
    assert info.value.code == "invalid_webhook_id"


# ---------------------------------------------------------------------------- signatures


def test_missing_signature_is_reported_first() -> None:
    pair = generate_signing_keypair()
    for hdrs in [{}, {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW)}, headers("", "x", "")]:
        err = error_of(hdrs, public_keys=[pair.public])
        assert (err.status, err.code, err.field) == (401, "missing_signature", HEADER_SIGNATURE)


def test_tampering_with_any_signed_part_fails() -> None:
    pair, secret = generate_signing_keypair(), generate_hmac_secret()
    signature = sign(MSG_ID, NOW, BODY, ed25519=[pair.secret], hmac=[secret])
    cases = [
        (headers(MSG_ID, NOW, signature), BODY + b"\n"),
        (headers(MSG_ID, NOW, signature), BODY[:-1]),
        (headers(MSG_ID, NOW, signature), b""),
        (headers(MSG_ID + "x", NOW, signature), BODY),
        (headers(MSG_ID, NOW + 1, signature), BODY),
    ]
    for hdrs, body in cases:
        err = error_of(hdrs, body, public_keys=[pair.public], hmac_secrets=[secret])
        assert (err.status, err.code) == (401, "invalid_signature")


def test_key_rotation_old_and_new_both_accepted() -> None:
    old, new = generate_signing_keypair(), generate_signing_keypair()
    # During the grace window deliveries carry both signatures.
    hdrs = Signer(ed25519=[new.secret, old.secret]).headers(MSG_ID, NOW, BODY)
    assert len(hdrs[HEADER_SIGNATURE].split(" ")) == 2
    assert verify(hdrs, BODY, public_keys=[old.public], now=NOW)  # receiver not yet rotated
    assert verify(hdrs, BODY, public_keys=[new.public], now=NOW)  # receiver already rotated
    assert verify(hdrs, BODY, public_keys=[old.public, new.public], now=NOW)
    stranger = generate_signing_keypair()
    assert error_of(hdrs, public_keys=[stranger.public]).code == "invalid_signature"
    # A receiver holding both keys accepts a message signed by either one alone.
    only_new = Signer(ed25519=[new.secret]).headers(MSG_ID, NOW, BODY)
    assert verify(only_new, BODY, public_keys=[old.public, new.public], now=NOW)


def test_hmac_rotation() -> None:
    old, new = generate_hmac_secret(), generate_hmac_secret()
    hdrs = Signer(hmac=[new, old]).headers(MSG_ID, NOW, BODY)
    assert verify(hdrs, BODY, hmac_secrets=[old], now=NOW)
    assert verify(hdrs, BODY, hmac_secrets=[new], now=NOW)
    assert error_of(hdrs, hmac_secrets=[generate_hmac_secret()]).code == "invalid_signature"


def test_unknown_versions_are_ignored() -> None:
    theirs = OpenSSLKey()
    good = theirs.entry(MSG_ID, str(NOW), BODY)
    sig = good.removeprefix("v1a,")
    hdrs = headers(MSG_ID, NOW, f"v2,abc v0,{sig} v1b,{sig} {good} v3,xyz")
    assert verify(hdrs, BODY, now=NOW, public_keys=[theirs.public])
    # The right signature under the wrong label does not count.
    for label in ["v2", "V1A", "v1", "", "v1a "]:
        err = error_of(headers(MSG_ID, NOW, f"{label},{sig}"), public_keys=[theirs.public])
        assert err.code == "invalid_signature"


def test_scheme_is_bound_to_its_key_type() -> None:
    # A v1 entry never checks against Ed25519 keys, nor v1a against HMAC secrets.
    pair, secret = generate_signing_keypair(), generate_hmac_secret()
    v1 = sign(MSG_ID, NOW, BODY, hmac=[secret])
    v1a = sign(MSG_ID, NOW, BODY, ed25519=[pair.secret])
    assert error_of(headers(MSG_ID, NOW, v1), public_keys=[pair.public]).code == "invalid_signature"
    assert error_of(headers(MSG_ID, NOW, v1a), hmac_secrets=[secret]).code == "invalid_signature"


def test_separators_and_padding_are_tolerated() -> None:
    theirs = OpenSSLKey()
    good = theirs.entry(MSG_ID, str(NOW), BODY)
    for signature in [
        f"  {good}  ",
        f"v1,xyz\t{good}",
        f"garbage  {good}",
        good.rstrip("="),  # unpadded base64
        f"{good} {good} {good}",
    ]:
        assert verify(headers(MSG_ID, NOW, signature), BODY, public_keys=[theirs.public], now=NOW)


def test_entries_beyond_the_limit_are_ignored() -> None:
    theirs, other = OpenSSLKey(), OpenSSLKey()
    good = theirs.entry(MSG_ID, str(NOW), BODY)
    # Distinct wrong-but-well-formed v1a entries: each costs a real verification.
    junk = [other.entry(MSG_ID, str(NOW), BODY + bytes([i])) for i in range(MAX_SIGNATURES)]
    within = " ".join([*junk[: MAX_SIGNATURES - 1], good])
    assert verify(headers(MSG_ID, NOW, within), BODY, now=NOW, public_keys=[theirs.public])
    beyond = " ".join([*junk, good])
    assert (
        error_of(headers(MSG_ID, NOW, beyond), public_keys=[theirs.public]).code
        == "invalid_signature"
    )


def test_overlong_signature_header_is_rejected() -> None:
    theirs = OpenSSLKey()
    good = theirs.entry(MSG_ID, str(NOW), BODY)
    fits = good + " " * (MAX_SIGNATURE_HEADER_LENGTH - len(good))
    assert verify(headers(MSG_ID, NOW, fits), BODY, now=NOW, public_keys=[theirs.public])
    for signature in [fits + " ", good + " v1a," + "A" * 10_000_000]:
        err = error_of(headers(MSG_ID, NOW, signature), public_keys=[theirs.public])
        assert err.code == "invalid_signature"


# ---------------------------------------------------------------------------- fuzz

FUZZ_ITERATIONS = 3000
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_NASTY_CHARS = "\x00\t\n\r \x0b\x0c\x1c\x7f\x85\xa0é✓\u2028\ufeff\udc80,=+/-_"


class FuzzKeys:
    def __init__(self) -> None:
        self.ed = [OpenSSLKey(), OpenSSLKey()]
        self.hmac = [generate_hmac_secret(), generate_hmac_secret()]
        self.stranger_ed = OpenSSLKey()
        self.stranger_hmac = generate_hmac_secret()
        self.verifier = Verifier(
            public_keys=[k.public for k in self.ed], hmac_secrets=list(self.hmac)
        )


def _random_text(rng: random.Random, max_len: int) -> str:
    alphabet = rng.choice([_PRINTABLE, _NASTY_CHARS, string.ascii_letters, _PRINTABLE + " é"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def _fuzz_id(rng: random.Random) -> str | None:
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return _random_text(rng, 300)
    if kind == 2:
        return "x" * rng.choice([0, 256, 257, 10_000])
    length = rng.randint(1, rng.choice([8, 40, 256]))
    return "".join(rng.choice(_PRINTABLE) for _ in range(length))


def _fuzz_timestamp(rng: random.Random) -> str | None:
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return _random_text(rng, 30)
    if kind == 2:
        return rng.choice(["-1", "1e9", "9" * 5000, "0", "", "1700000000.5", " 1"])
    if kind == 3:
        return "0" * rng.randint(1, 5) + str(NOW + rng.randint(-310, 310))
    return str(NOW + rng.choice([-301, -300, 300, 301, rng.randint(-400, 400)]))


def _fuzz_body(rng: random.Random) -> bytes:
    return rng.choice([b"", BODY, rng.randbytes(rng.randint(0, 2000))])


def _fuzz_entry(
    rng: random.Random, keys: FuzzKeys, msg_id: str, ts: str, body: bytes
) -> tuple[str, bool]:
    """One signature-header entry and whether it is genuinely valid for this message."""
    kind = rng.randrange(12)
    if kind == 0:
        return keys.ed[rng.randrange(2)].entry(msg_id, ts, body), True
    if kind == 1:
        return hmac_entry(keys.hmac[rng.randrange(2)], msg_id, ts, body), True
    if kind == 2:
        return keys.stranger_ed.entry(msg_id, ts, body), False
    if kind == 3:
        return hmac_entry(keys.stranger_hmac, msg_id, ts, body), False
    if kind == 4:  # one flipped bit in the raw signature (re-encoded canonically)
        good = rng.choice(
            [keys.ed[0].entry(msg_id, ts, body), hmac_entry(keys.hmac[0], msg_id, ts, body)]
        )
        version, encoded = good.split(",")
        raw = bytearray(base64.b64decode(encoded))
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return f"{version},{b64(bytes(raw))}", False
    if kind == 5:  # signed over a neighbouring message
        other_body = body + b"\x00" if rng.random() < 0.5 else body[:-1]
        if other_body == body:
            other_body = b"x"
        return keys.ed[0].entry(msg_id, ts, other_body), False
    if kind == 6:  # right signature, wrong label
        good = keys.ed[1].entry(msg_id, ts, body)
        return rng.choice(["v1", "v2", "v1b", ""]) + good[3:], False
    if kind == 7:
        return rng.choice(["v1", "v1a"]) + "," + b64(rng.randbytes(rng.choice([32, 64, 48]))), False
    if kind == 8:
        return rng.choice(["v1", "v1a", "v2"]) + "," + _random_text(rng, 100), False
    if kind == 9:
        return rng.choice([",", ",,,", "v1,", "v1a,=", "v1,====", "v1a,\x00", "v1a" * 50]), False
    if kind == 10:
        return "v1a," + "A" * rng.choice([85, 86, 87, 88, 89, 1000]), False
    return _random_text(rng, 60), False


def _fuzz_case(rng: random.Random, keys: FuzzKeys) -> tuple[dict[str, str], bytes, set[str]]:
    msg_id, ts, body = _fuzz_id(rng), _fuzz_timestamp(rng), _fuzz_body(rng)
    valid: set[str] = set()
    entries: list[str] = []
    for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 16, 17, 30])):
        entry, ok = _fuzz_entry(rng, keys, msg_id or "", ts or "", body)
        entries.append(entry)
        if ok:
            valid.add(entry)
    separator = rng.choice([" ", " ", "  ", "\t", " \n "])
    hdrs: dict[str, str] = {}
    if msg_id is not None:
        hdrs[HEADER_ID] = msg_id
    if ts is not None:
        hdrs[HEADER_TIMESTAMP] = ts
    if entries or rng.random() < 0.3:
        hdrs[HEADER_SIGNATURE] = separator.join(entries)
    if rng.random() < 0.1:  # header names are expected lower-case; others are ignored
        hdrs["Webhook-Signature"] = keys.ed[0].entry(msg_id or "", ts or "", body)
    return hdrs, body, valid


def _expected_to_verify(hdrs: dict[str, str], valid: set[str]) -> bool:
    """An independent statement of when a message must verify."""
    msg_id = hdrs.get(HEADER_ID, "")
    ts = hdrs.get(HEADER_TIMESTAMP, "")
    signature = hdrs.get(HEADER_SIGNATURE, "")
    return (
        1 <= len(msg_id) <= 256
        and all(0x21 <= ord(c) <= 0x7E for c in msg_id)
        and 1 <= len(ts) <= 20
        and all(c in "0123456789" for c in ts)
        and abs(int(ts) - NOW) <= 300
        and len(signature) <= MAX_SIGNATURE_HEADER_LENGTH
        and any(entry in valid for entry in signature.split()[:MAX_SIGNATURES])
    )


_EXPECTED_CODES = {
    "missing_signature",
    "invalid_signature",
    "stale_timestamp",
    "invalid_timestamp",
    "invalid_webhook_id",
}


def _check(verifier: Verifier, hdrs: Mapping[str, str], body: bytes) -> VerifiedWebhook | None:
    """Verify, asserting that the only possible failure is a SwitchboardError we expect."""
    try:
        return verifier.verify(hdrs, body, now=NOW)
    except SwitchboardError as err:
        assert err.code in _EXPECTED_CODES, err.code
        assert err.status in {400, 401}
        return None


def test_fuzz_random_messages_verify_exactly_when_they_should() -> None:
    rng = random.Random(0x5B_2024)
    keys = FuzzKeys()
    outcomes = {True: 0, False: 0}
    for i in range(FUZZ_ITERATIONS):
        hdrs, body, valid = _fuzz_case(rng, keys)
        result = _check(keys.verifier, hdrs, body)
        expected = _expected_to_verify(hdrs, valid)
        assert (result is not None) == expected, (i, hdrs, body[:40])
        if result is not None:
            assert result == VerifiedWebhook(hdrs[HEADER_ID], int(hdrs[HEADER_TIMESTAMP]))
        outcomes[expected] += 1
    # The generator must exercise both outcomes substantially, or the test proves little.
    assert outcomes[True] > FUZZ_ITERATIONS // 20
    assert outcomes[False] > FUZZ_ITERATIONS // 2


def test_fuzz_arbitrary_header_values() -> None:
    # Entirely arbitrary strings (any code point, lone surrogates included) in every header.
    rng = random.Random(7)
    keys = FuzzKeys()
    for _ in range(FUZZ_ITERATIONS):
        hdrs = {
            name: "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(0, 120)))
            for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)
            if rng.random() < 0.8
        }
        assert _check(keys.verifier, hdrs, rng.randbytes(rng.randint(0, 64))) is None


@pytest.mark.parametrize(
    "hdrs",
    [
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "v1a," + "A" * 10**6},
        {HEADER_ID: "m" * 10**6, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "v1,AAAA"},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: "1" * 10**6, HEADER_SIGNATURE: "v1,AAAA"},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: " " * 10_000},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "," * 5000},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "v1a,\udc80\udc80"},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "v1," + "=" * 44},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "v1a,\r\nX-Evil: 1"},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: " ".join(["v1a"] * 999)},
        {HEADER_ID: "\udc80", HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: "v1,AAAA"},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: "\udc80", HEADER_SIGNATURE: "v1,AAAA"},
        {HEADER_ID: MSG_ID, HEADER_TIMESTAMP: str(2**70), HEADER_SIGNATURE: "v1,AAAA"},
    ],
)
def test_nasty_headers(hdrs: dict[str, str]) -> None:
    keys = FuzzKeys()
    assert _check(keys.verifier, hdrs, BODY) is None


@pytest.mark.parametrize("value", [b"bytes", None, 12, ["v1,AAAA"], object()])
def test_non_string_header_values_are_malformed_not_crashes(value: object) -> None:
    keys = FuzzKeys()
    hdrs = keys.ed[0].entry(MSG_ID, str(NOW), BODY)
    base = headers(MSG_ID, NOW, hdrs)
    for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        bad = cast(Mapping[str, str], {**base, name: value})
        assert _check(keys.verifier, bad, BODY) is None
