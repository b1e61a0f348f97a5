"""Messenger (Meta Graph API) webhook verification: the verify-token handshake
(``hub.mode=subscribe``) that proves the URL to Meta when the webhook is configured, and
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`` over each body,
with the Page ids read before verification to choose which app secrets may have signed it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

import msgspec
from msgspec import Struct, field

from switchboard import jsonsafe
from switchboard.errors import Forbidden, Unauthorized

__all__ = [
    "SIGNATURE_HEADER",
    "handshake",
    "page_ids",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "x-hub-signature-256"

# A challenge is an int per Meta; anything much longer is not one of theirs.
_CHALLENGE_MAX = 256
# At most this many distinct app secrets are tried on one body (bounds the HMAC work).
MAX_CANDIDATE_SECRETS = 16


# ---- the verify-token handshake ---------------------------------------------------------


def handshake(params: Mapping[str, str], verify_token: str) -> str:
    """The ``hub.challenge`` to echo when Meta's subscription handshake names our token.

    Raises Forbidden otherwise (also when no verify token is configured: an empty token
    must not verify anything).
    """
    mode = params.get("hub.mode", "")
    given = params.get("hub.verify_token", "")
    challenge = params.get("hub.challenge", "")
    # surrogatepass: a lone surrogate in a query value is a mismatch, not a crash.
    ok = hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                             verify_token.encode("utf-8", "surrogatepass"))
    if (not verify_token or not ok or mode != "subscribe" or not challenge
            or len(challenge) > _CHALLENGE_MAX):
        raise Forbidden("invalid_verify_token", "the verify token does not match")
    return challenge


# ---- signatures ---------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for `body` under app secret `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(header: str | None, body: bytes, secrets: Sequence[str]) -> str:
    """Check ``X-Hub-Signature-256`` over the raw `body`; return the secret that signed it.

    Every candidate is compared (constant time each, and all of them every time) so the
    timing says nothing about which secret, if any, matched. Raises Unauthorized for a
    missing, malformed or non-matching signature (as the core ingress does).
    """
    if not header:
        raise Unauthorized("missing_signature", "X-Hub-Signature-256 is required")
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        raise Unauthorized("invalid_signature", "X-Hub-Signature-256 must be sha256=<hex>")
    given_bytes = given.strip().lower().encode("utf-8", "replace")
    matched: str | None = None
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given_bytes) and matched is None:
            matched = secret
    if matched is None:
        raise Unauthorized("invalid_signature", "X-Hub-Signature-256 does not match the body")
    return matched


# ---- structure before verification ---------------------------------------------------------


class _ShapeEntry(Struct):
    id: str | int = ""


class _Shape(Struct):
    entry: list[_ShapeEntry] = field(default_factory=list)


_shape_decoder = msgspec.json.Decoder(_Shape)


def page_ids(body: bytes) -> list[str]:
    """The Page ids a webhook body names (``entry[].id``), read before it is verified.

    Only used to choose which app secrets may have signed it: nothing else of an
    unverified body is looked at. Unparseable (or too deeply nested) bodies name no pages.
    """
    if jsonsafe.depth_exceeds(body):
        return []
    try:
        shape = _shape_decoder.decode(body)
    except msgspec.DecodeError:
        return []
    seen: dict[str, None] = {}
    for entry in shape.entry:
        if entry.id != "":
            seen[str(entry.id)] = None
    return list(seen)
