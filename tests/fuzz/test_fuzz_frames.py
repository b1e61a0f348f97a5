"""Fuzz: the websocket frames browsers and stream clients send, and WebChat's Origin check.

Invariant: a frame is accepted (a frame, or None for an unknown type) or refused with our
error; a visitor's message becomes an activity the router can read; an Origin is judged
without raising.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from hypothesis import given

from switchboard import jsonsafe
from switchboard.model import activity_decoder, activity_encoder
from switchboard.providers import webchat as wc
from switchboard.services.stream_protocol import client_decoder, parse_cursor
from tests.fuzz.strategies import cases, near_valid, ours_or_result, text_like

NOW_MS = 1_700_000_000_000

WEBCHAT_FRAMES: list[Any] = [
    {"type": "hello", "session": "v1.abc", "cursor": "0:12", "name": "Ann"},
    {"type": "hello"},
    {"type": "message", "id": "c-1", "text": "hello", "payload": "p"},
    {"type": "message", "id": "abc_DEF-9", "text": "x" * 4096},
    {"type": "ping"},
    {"type": "typing", "extra": [1, 2]},
]
STREAM_FRAMES: list[Any] = [
    {"type": "ack", "cursor": "0:5"}, {"type": "ack", "cursor": "3:-1"}, {"type": "pong"},
]


def as_frame(r: random.Random, data: bytes) -> str | bytes:
    """As the gateways see it: text (bytes frames are decoded with errors="replace"), or
    now and then str with lone surrogates, or bytes, to hold the pure function to more."""
    roll = r.random()
    if roll < 0.7:
        return data.decode("utf-8", "replace")
    if roll < 0.85:
        return data.decode("utf-8", "surrogateescape")
    return data


class Frame(NamedTuple):
    raw: str | bytes


class WebChatFrame(NamedTuple):
    raw: str | bytes
    origin: str | None
    allowed: list[str]
    also: list[str]


def webchat_case(r: random.Random) -> WebChatFrame:
    origin = None if r.random() < 0.05 else text_like(
        r, "https://example.com", "http://a.b.example.com:8080", "null", "https://[::1]:3",
        "https://EXAMPLE.com.", "file://", "https://user@example.com", max_size=3000)
    allowed = [text_like(r, "example.com", "*.example.com", "*.", "", "localhost")
               for _ in range(r.randrange(4))]
    also = [text_like(r, "https://hub.test", "http://127.0.0.1:8080")
            for _ in range(r.randrange(2))]
    return WebChatFrame(as_frame(r, near_valid(r, *WEBCHAT_FRAMES)), origin, allowed, also)


@given(cases(webchat_case))
def test_webchat_socket(case: WebChatFrame) -> None:
    # The Origin check a socket passes first: judged, never raising.
    host = wc.origin_host(case.origin)
    if wc.origin_allowed(case.origin, case.allowed, case.also):
        assert case.origin is not None
    if host is not None:
        assert host == host.lower() and not host.endswith(".")
    if case.origin is not None:
        wc.public_origin(case.origin)
    frame = ours_or_result(wc.parse_client_frame, case.raw)
    if isinstance(frame, wc.HelloFrame) and frame.cursor is not None:
        parse_cursor(frame.cursor)
    if isinstance(frame, wc.MessageFrame):
        activity = wc.normalize_message(hub_id="h-1", integration_id="i-1",
                                        visitor_id="wv_abc", name="Ann", frame=frame,
                                        now_ms=NOW_MS)
        assert activity_decoder.decode(activity_encoder.encode(activity)) == activity


@given(cases(lambda r: Frame(as_frame(r, near_valid(r, *STREAM_FRAMES)))))
def test_stream_client_frames(case: Frame) -> None:
    # What the stream gateway does with each frame a subscriber sends.
    frame = ours_or_result(jsonsafe.decode, case.raw, client_decoder)
    if frame is not None and frame.cursor is not None:
        cursor = parse_cursor(frame.cursor)
        assert cursor is None or (cursor.partition >= 0 and cursor.offset >= -1)


