"""What the command line says when a command fails: one line with what to do, and an
exit code (2 bad usage or configuration, 1 a runtime failure, 130 interrupted).

`SWITCHBOARD_DEBUG=1` lets the exception through, traceback and all.
"""

from __future__ import annotations

import json

import httpx
import yaml

from switchboard.brokers import BrokerError
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.hubfile import yaml_problem

USAGE = 2
RUNTIME = 1
INTERRUPTED = 130
DEBUG_HINT = "(SWITCHBOARD_DEBUG=1 shows the traceback)"


class CliError(Exception):
    """A command's own failure, already worded for the user."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def describe(exc: BaseException, url: str | None = None) -> tuple[str, int]:
    """The one line (no newline inside) and the exit code for `exc`; `url` is the hub
    the command was talking to, if any."""
    message, code = _describe(exc, url)
    first, *rest = message.strip().splitlines() or [""]
    return (first + (" …" if rest else "")), code


def _describe(exc: BaseException, url: str | None) -> tuple[str, int]:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}", USAGE
    if isinstance(exc, SwitchboardError):
        where = f" ({exc.field})" if exc.field else ""
        return f"{exc.description}{where}", USAGE if exc.status < 500 else RUNTIME
    if isinstance(exc, BrokerError):  # its log's last lines follow: the first one says it
        return f"broker: {exc}", RUNTIME
    if isinstance(exc, httpx.TransportError):
        target = url or (str(exc.request.url) if _has_request(exc) else "the hub")
        return (f"cannot reach {target}: is the hub running? (switchboard dev) "
                f"[{type(exc).__name__}]"), RUNTIME
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"bad URL {url or ''}: {exc}".replace("  ", " "), USAGE
    if isinstance(exc, yaml.YAMLError):
        return f"not valid YAML: {yaml_problem(exc)}", USAGE
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc}", USAGE
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}", USAGE
    if isinstance(exc, IsADirectoryError):
        return f"is a directory, not a file: {exc.filename}", USAGE
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}", USAGE
    if isinstance(exc, OSError):
        what = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{what}", RUNTIME
    return f"unexpected {type(exc).__name__}: {exc} {DEBUG_HINT}", RUNTIME


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True
