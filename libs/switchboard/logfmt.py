"""Log lines as JSON objects (`SWITCHBOARD_LOG_FORMAT=json`), one per line.

Each object has the time, level, logger, message, the process's services and, when the
line was logged while handling one, the hub, integration, activity and delivery ids.
Those come from `LOG_CONTEXT`, a context variable the services set per request, per
routed activity and per delivery: asyncio gives every task its own copy, so ids never
leak from one request or lane into another's lines.

Records are scrubbed of secrets when they are created (`switchboard.logscrub`), before
any formatter sees them.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

__all__ = ["LOG_CONTEXT", "JsonFormatter", "configure", "context"]

# Field name (hubId, integrationId, activityId, deliveryId) → value.
LOG_CONTEXT: ContextVar[dict[str, str]] = ContextVar("switchboard_log_context", default={})  # noqa: B039 (never mutated)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def context(**fields: str) -> None:
    """Name what the current task is handling from here on (e.g. ``hubId=…``)."""
    LOG_CONTEXT.set(fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        out.update(LOG_CONTEXT.get())
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure(log_format: str, service: str, level: str = "INFO") -> None:
    """Send the root logger to stderr as `log_format` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
