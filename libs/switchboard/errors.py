"""One small error hierarchy. Every error carries the HTTP status it maps to.

Errors render in Hubster's shape::

    {"status": 400, "errors": [{"code": "...", "description": "...", "field": "..."}]}
"""

from __future__ import annotations

from typing import Any, ClassVar


class SwitchboardError(Exception):
    """Base of every error we raise on purpose; `status` is the HTTP status it maps to."""

    status: ClassVar[int] = 500

    def __init__(self, code: str, description: str, field: str | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.field = field

    def to_body(self) -> dict[str, Any]:
        """The JSON error body in Hubster's shape."""
        item: dict[str, Any] = {"code": self.code, "description": self.description}
        if self.field is not None:
            item["field"] = self.field
        return {"status": self.status, "errors": [item]}


class BadRequest(SwitchboardError):
    status = 400


class Unauthorized(SwitchboardError):
    status = 401


class Forbidden(SwitchboardError):
    status = 403


class NotFound(SwitchboardError):
    status = 404


class MethodNotAllowed(SwitchboardError):
    status = 405


class RequestTimeout(SwitchboardError):
    """The request's body did not arrive within the body read timeout."""

    status = 408


class Conflict(SwitchboardError):
    status = 409


class PayloadTooLarge(SwitchboardError):
    status = 413


class UnsupportedMediaType(SwitchboardError):
    status = 415


class TooManyRequests(SwitchboardError):
    status = 429

    def __init__(
        self, code: str, description: str, field: str | None = None, retry_after: int = 1
    ) -> None:
        super().__init__(code, description, field)
        self.retry_after = retry_after


class Unavailable(SwitchboardError):
    """The broker (or another dependency) is unreachable; the caller should retry later."""

    status = 503

    def __init__(
        self, code: str, description: str, field: str | None = None, retry_after: int = 5
    ) -> None:
        super().__init__(code, description, field)
        self.retry_after = retry_after


class ConfigError(ValueError):
    """A setting read at start-up is missing or malformed; the process should not start."""
