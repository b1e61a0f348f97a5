"""Slack request signatures: ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
"v0:{X-Slack-Request-Timestamp}:{raw body}")>``, checked over the raw body with a replay
window (`verify_request`), and made the way Slack makes them (`sign`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from switchboard.errors import Unauthorized

__all__ = [
    "sign",
    "verify_request",
]

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"

VERSION = "v0"
DEFAULT_TOLERANCE_S = 300

# "v0=" + 64 hex digits; anything much longer is not Slack.
_MAX_SIGNATURE_CHARS = 128
_TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")


def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value Slack sends for `body` at `timestamp`."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def verify_request(
    signing_secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Check Slack's signature over the raw body; raise Unauthorized if it does not hold.

    The timestamp must be within `tolerance_s` of `now_s` (a replayed request is refused)
    and the comparison is constant-time.
    """
    if not signing_secret:
        raise Unauthorized("slack_not_configured",
                           "Slack requests cannot be verified: no signing secret is set")
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise Unauthorized("missing_signature",
                           "X-Slack-Signature and X-Slack-Request-Timestamp are required")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise Unauthorized("invalid_timestamp", "X-Slack-Request-Timestamp is not a number")
    if abs(now_s - int(timestamp)) > tolerance_s:
        raise Unauthorized("stale_timestamp",
                           "X-Slack-Request-Timestamp is outside the replay window")
    if len(signature) > _MAX_SIGNATURE_CHARS:
        raise Unauthorized("invalid_signature", "the Slack signature does not match")
    expected = sign(signing_secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode(errors="replace")):
        raise Unauthorized("invalid_signature", "the Slack signature does not match")
