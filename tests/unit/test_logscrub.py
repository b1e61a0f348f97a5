"""Log scrubbing: no query-string value or bearer credential survives into a log line."""

from __future__ import annotations

import io
import logging

import httpx

from switchboard import logscrub
from switchboard.logscrub import REDACTED, scrub

TOKEN = "sbat_s3cr3t-T0ken"


def test_scrub_query_strings_and_credentials() -> None:
    line = f'127.0.0.1:5 - "WebSocket /v1/integrations/i/stream?access_token={TOKEN}&cursor=1:2"'
    assert scrub(line) == (f'127.0.0.1:5 - "WebSocket /v1/integrations/i/stream'
                           f'?access_token={REDACTED}&cursor={REDACTED}"')
    assert TOKEN not in scrub(f"GET https://h.example/p?{TOKEN} HTTP/1.1")
    assert TOKEN not in scrub(f"Authorization: Bearer {TOKEN}")
    assert TOKEN not in scrub(f"authorization=basic {TOKEN}")
    assert scrub(f"< sec-websocket-protocol: switchboard.stream, switchboard.bearer.{TOKEN}"
                 ) == f"< sec-websocket-protocol: switchboard.stream, switchboard.bearer.{REDACTED}"
    assert TOKEN not in scrub(f"> Cookie: sid={TOKEN}")
    assert TOKEN not in scrub(f"x-api-key: {TOKEN}")
    # Prose is left alone.
    assert scrub("is it ready? yes") == "is it ready? yes"
    assert scrub("no query here") == "no query here"


def _emit(logger_name: str, msg: str, *args: object, exc: BaseException | None = None) -> str:
    logscrub.install()
    logscrub.install()  # idempotent
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    old, logger.propagate = logger.propagate, False
    logger.setLevel(logging.DEBUG)
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(msg, *args)
        else:
            logger.debug(msg, *args)
    finally:
        logger.removeHandler(handler)
        logger.propagate = old
    return out.getvalue()


def test_installed_scrubbing_covers_args_objects_and_tracebacks() -> None:
    line = _emit("switchboard.test.child", '%s - "WebSocket %s" [accepted]', "1.2.3.4:5",
                 f"/stream?access_token={TOKEN}")
    assert TOKEN not in line and "access_token=" in line
    # A URL object (httpx logs those), split arguments, a %d kept a number.
    url = httpx.URL(f"https://h.example/hook?token={TOKEN}")
    assert TOKEN not in _emit("httpx", "HTTP Request: %s %s %d", "POST", url, 200)
    assert TOKEN not in _emit("other", "%s?%s", "/p", f"access_token={TOKEN}")
    assert TOKEN not in _emit("other", "failed", exc=ValueError(f"bad url /x?t={TOKEN}"))
    # Header lines as websocket libraries log them: name and value in separate arguments.
    assert TOKEN not in _emit("uvicorn.error", "< %s: %s", "cookie", TOKEN)
    # A websocket frame object: kind and size only.
    from websockets.frames import Frame, Opcode

    frame = Frame(Opcode.TEXT, f'{{"type":"hello","session":"{TOKEN}"}}'.encode())
    line = _emit("uvicorn.error", "< %s", frame)
    assert TOKEN not in line and "TEXT [" in line


def test_filter_for_hand_configured_handlers() -> None:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (f"/p?t={TOKEN}",), None)
    assert logscrub.ScrubFilter().filter(rec)
    assert TOKEN not in rec.getMessage()
