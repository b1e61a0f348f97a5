"""A connector's failures, one type per kind, inside the project's one error hierarchy.

Each is a `ConnectorError` (so a sync run catches connector failures as one family) and
also the existing `switchboard.errors` class whose HTTP status fits when such a failure
surfaces through the API, mapped as the Syncro actions already map Syncro's answers: a
missing remote record is our 404, a remote over its rate limit is our 503 with
`Retry-After` (not 429, which would tell the caller that *they* are over *our* limit),
a refused credential or an unsupported call is a 400, a remote conflict our 409. Nothing
was added to `switchboard.errors`: the statuses it has already say everything.
"""

from __future__ import annotations

import math

from switchboard.errors import BadRequest, Conflict, NotFound, SwitchboardError, Unavailable

__all__ = [
    "AuthFailed",
    "ConnectorError",
    "RateLimited",
    "RecordConflict",
    "RecordNotFound",
    "Unsupported",
]


class ConnectorError(SwitchboardError):
    """A connector call failed; the subclasses say how. Its `status` is the base's 500
    only for a failure none of them describes."""


class RecordNotFound(ConnectorError, NotFound):
    """The side has no record with that id (or it was deleted for good)."""

    def __init__(self, description: str, record_id: str | None = None) -> None:
        super().__init__("connector_not_found", description)
        self.record_id = record_id


class RateLimited(ConnectorError, Unavailable):
    """The side refused for its rate limit; try again after `retry_after` seconds."""

    def __init__(self, description: str, retry_after_s: float = 5.0) -> None:
        # Whole seconds, at least one, as a Retry-After header carries them.
        super().__init__("connector_rate_limited", description,
                         retry_after=max(1, math.ceil(retry_after_s)))


class AuthFailed(ConnectorError, BadRequest):
    """The side refused the connector's credentials (expired, revoked, wrong): the
    profile needs new ones (BrightSync's `authError`); retrying will not help."""

    def __init__(self, description: str) -> None:
        super().__init__("connector_auth_failed", description)


class RecordConflict(ConnectorError, Conflict):
    """The side refused a write that conflicts with its state (a concurrent change, a
    duplicate it will not allow)."""

    def __init__(self, description: str, record_id: str | None = None) -> None:
        super().__init__("connector_conflict", description)
        self.record_id = record_id


class Unsupported(ConnectorError, BadRequest):
    """The connector was asked for a capability it does not declare."""

    def __init__(self, description: str) -> None:
        super().__init__("connector_unsupported", description)
