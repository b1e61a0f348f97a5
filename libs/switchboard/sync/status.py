"""An HTTP answer's status as the connector error it means (shared by the HTTP-based
connectors: the platform contract, Syncro).

401/403 mean the credentials (the profile needs new ones), 404 and 410 a record that is
not there, 409 a write the side refuses for its state, 429 (and a 503 that says when to
come back) a rate limit. Anything else is a plain `ConnectorError`: a 400/422 refused
write (`connector_refused`: retrying the same write will not help) or the side failing
(`connector_unavailable`: a later run may succeed).
"""

from __future__ import annotations

from switchboard.sync.errors import (
    AuthFailed,
    ConnectorError,
    RateLimited,
    RecordConflict,
    RecordNotFound,
)

__all__ = ["DEFAULT_RETRY_AFTER_S", "error_for"]

# When a 429 says nothing about when to come back.
DEFAULT_RETRY_AFTER_S = 5.0
_MAX_MESSAGE = 300


def error_for(status: int, message: str, *, retry_after_s: float | None = None,
              record_id: str | None = None) -> ConnectorError:
    """The error for a non-2xx `status`; `message` is the side's own words (cut short:
    they end up in run reports)."""
    text = " ".join(message.split())[:_MAX_MESSAGE] or f"HTTP {status}"
    if status in (401, 403):
        return AuthFailed(text)
    if status in (404, 410):
        return RecordNotFound(text, record_id)
    if status == 409:
        return RecordConflict(text, record_id)
    if status == 429 or (status == 503 and retry_after_s is not None):
        return RateLimited(text, DEFAULT_RETRY_AFTER_S if retry_after_s is None
                           else retry_after_s)
    if 400 <= status < 500:
        return ConnectorError("connector_refused", text)
    return ConnectorError("connector_unavailable", text)
