"""HTTP glue shared by the services: JSON responses, error rendering, bounded body reads."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive

from switchboard.errors import (
    PayloadTooLarge,
    RequestTimeout,
    SwitchboardError,
    TooManyRequests,
    Unavailable,
)
from switchboard.inbound import check_content_length
from switchboard.metrics import Metrics
from switchboard.ratelimit import RateLimiter

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


class JSON(Response):
    """A JSON response encoded by msgspec (Structs, dicts, lists)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def error_response(exc: SwitchboardError) -> Response:
    headers = {}
    if isinstance(exc, Unavailable | TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, RequestTimeout):
        # The rest of the body may still be on its way: the connection cannot carry
        # another request, so it is closed (uvicorn honours the header).
        headers["Connection"] = "close"
    return JSON(exc.to_body(), status_code=exc.status, headers=headers)


async def switchboard_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwitchboardError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {"status": exc.status_code, "errors": [{"code": code, "description": exc.detail}]}
    return JSON(body, status_code=exc.status_code, headers=exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {"status": 500, "errors": [{"code": "internal_error", "description": "internal error"}]}
    return JSON(body, status_code=500)


EXCEPTION_HANDLERS = {
    SwitchboardError: switchboard_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}


def limit(limiter: RateLimiter, key: str, what: str, metrics: Metrics | None = None) -> None:
    """429 with Retry-After when `key` is over its rate (counted by `what`)."""
    wait = limiter.take(key, time.monotonic())
    if wait is not None:
        if metrics is not None:
            metrics.rate_limited.labels(what).inc()
        raise TooManyRequests("rate_limited", f"too many requests for this {what}; slow down",
                              retry_after=max(1, math.ceil(wait)))


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes (announced or actually sent)."""
    check_content_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def body_deadline(receive: Receive, timeout_s: float) -> Receive:
    """`receive` that raises RequestTimeout (408) if the request body is not complete
    `timeout_s` after now, however it trickles in: a deadline for the whole body, not for
    each chunk, so a sender dripping a byte a second is cut off too. Once the body is in,
    later calls (waiting for a disconnect) are not bounded."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    done = False

    async def timed() -> Message:
        nonlocal done
        if done:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(
                "request_timeout",
                f"the request body did not arrive within {timeout_s:g} seconds") from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            done = True
        return message

    return timed

