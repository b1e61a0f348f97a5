"""Hubster-style signatures, checked against the verification steps Hubster documents:
HMAC-SHA256 of the raw body keyed by the private key string's UTF-8 bytes, base64."""

from __future__ import annotations

import base64
import hashlib
import hmac

from switchboard import hubster_signature as hs


def _documented(private_key: str, raw_body: bytes) -> str:
    # Written from the documentation, not from our module.
    return base64.b64encode(
        hmac.new(private_key.encode("utf-8"), raw_body, hashlib.sha256).digest()).decode()


def test_keys_are_spelled_like_hubsters_and_fresh() -> None:
    a, b = hs.generate_keypair(), hs.generate_keypair()
    for key in (a.public, a.private, b.public):
        assert hs.is_key(key) and len(key) == 32 and key == key.upper()
    assert len({a.public, a.private, b.public, b.private}) == 4
    assert a.private not in repr(a)
    assert not hs.is_key("3ef951f619cd4f5e820c73622c0f1a3c") and not hs.is_key(None)


def test_headers_match_the_documented_steps() -> None:
    keys = hs.HubsterKeyPair(public="3EF951F619CD4F5E820C73622C0F1A3C",
                             private="FA96D15568654A4482772E00BA941BCB")
    body = b'{"hubId":"h","activity":{"message":{"text":"caf\xc3\xa9"}}}'
    headers = hs.headers(keys, body)
    assert headers == {"x-hubster-public-key": keys.public,
                       "x-hubster-signature": _documented(keys.private, body)}
    # A known answer, so the scheme cannot drift along with the test's own HMAC.
    assert hs.sign("key", b"The quick brown fox jumps over the lazy dog") == \
        "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="


def test_verify_accepts_ours_and_refuses_tampering() -> None:
    keys = hs.generate_keypair()
    body = b'{"a":1}'
    headers = hs.headers(keys, body)
    book = {keys.public: keys.private}
    assert hs.verify(headers, body, book)
    assert not hs.verify(headers, b'{"a":2}', book)
    assert not hs.verify(headers, body, {keys.public: hs.generate_keypair().private})
    assert not hs.verify({**headers, "x-hubster-public-key": "OTHER"}, body, book)
    assert not hs.verify({"x-hubster-public-key": keys.public}, body, book)
    assert not hs.verify({**headers, "x-hubster-signature": "é" * 44}, body, book)
    assert not hs.verify({**headers, "x-hubster-signature": "A" * 4096}, body, book)
