"""Keep tokens out of log lines: query strings, credentials and websocket payloads.

uvicorn logs every websocket handshake with its full path and query string (``"WebSocket
/v1/integrations/…/stream?access_token=…" [accepted]``), an HTTP client may log the URL
it called, and an exception text may quote either. `install()` scrubs every log record
of the process when it is created, whichever logger made it and whichever handler prints
it (a filter on a logger would miss its children; one on a handler, handlers added
later): the message and each argument are scrubbed, and so is a traceback. Redacted:
every query-string value, the secret of an inbound URL (``/ingress/{id}/{secret}``),
bearer/basic credentials (also the stream's
``switchboard.bearer.<token>`` subprotocol), credential header values (Authorization,
Cookie, …), and the payload of every websocket frame a library logs at DEBUG.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

# A query string: "?" right after a path or host character, up to whitespace or a quote.
# Parameter names are kept (they help reading a log); every value is dropped.
_QUERY = re.compile(r"(?<=[\w/.\-~%])\?([^\s\"'<>`]*)")
_PARAM = re.compile(r"([^&=;]*)(=[^&;]*)?")
# "Bearer <token>", "Basic <credentials>", and the stream's "switchboard.bearer.<token>"
# websocket subprotocol.
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+|\.)[^\s\"',;]+")
# A header line whose value is a credential, as HTTP and websocket libraries log them.
_HEADER = re.compile(r"(?im)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|"
                     r"x-auth-token)(\s*:\s*)[^\r\n]+")


# The secret segment of an inbound URL (Syncro's ``/ingress/{integrationId}/{secret}``),
# which uvicorn's access log would otherwise print whole.
_INGRESS_SECRET = re.compile(r"(/ingress/[^/\s?#\"'<>`]+/)[^/\s?#\"'<>`]+")


# What a format string has when its arguments can form a secret only together.
_JOINS = re.compile(r"[?:]|earer|asic")


def _redact_query(m: re.Match[str]) -> str:
    params = []
    for name, value in _PARAM.findall(m.group(1)):
        if not name and not value:
            continue
        params.append(f"{name}={REDACTED}" if value else REDACTED)
    return "?" + "&".join(params)


def scrub(text: str) -> str:
    """`text` without query-string values, inbound URL secrets or bearer/basic
    credentials."""
    if "?" in text:
        text = _QUERY.sub(_redact_query, text)
    if "/ingress/" in text:  # after the query: "[redacted]" would hide a "?" that follows
        text = _INGRESS_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    if "earer" in text or "asic" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if ":" in text:
        text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return text


def _scrub_arg(arg: object) -> object:
    if isinstance(arg, str):
        return scrub(arg)
    if arg is None or isinstance(arg, int | float):
        return arg  # numbers keep their type (a %d stays a %d)
    data, opcode = getattr(arg, "data", None), getattr(arg, "opcode", None)
    if opcode is not None and isinstance(data, bytes | bytearray | memoryview):
        # A websocket frame (the websockets library logs each at DEBUG): its payload may
        # hold a session token or a visitor's message; only its kind and size are logged.
        return f"{getattr(opcode, 'name', opcode)} [{len(data)} bytes]"
    text = str(arg)
    cleaned = scrub(text)
    return arg if cleaned == text else cleaned  # a URL object: its scrubbed text


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub `record` in place: its message, arguments, traceback and stack."""
    if isinstance(record.msg, str):
        record.msg = scrub(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_scrub_arg(a) for a in args)
    elif isinstance(args, dict):
        record.args = {k: _scrub_arg(v) for k, v in args.items()}
    # Arguments that only form a query string or a credential together ("%s?%s",
    # "%s: %s", "Bearer %s"): format it now. Not for formatters that take the arguments
    # apart themselves (uvicorn's access log).
    if (record.args and isinstance(record.msg, str) and _JOINS.search(record.msg)
            and not record.name.startswith("uvicorn.access")):
        try:
            message = record.getMessage()
        except Exception:
            message = ""  # a broken format string: logging reports it as it always does
        if message and scrub(message) != message:
            record.msg, record.args = scrub(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    return record


class ScrubFilter(logging.Filter):
    """The same scrubbing as a filter, for a handler or logger configured by hand."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


_installed = False


def install() -> None:
    """Scrub every log record this process creates from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True
