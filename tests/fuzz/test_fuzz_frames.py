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
from switchboard.keys import PURPOSE_SESSIONS
from switchboard.model import activity_decoder, activity_encoder
from switchboard.providers import webchat as wc
from switchboard.providers.webchat import open_session
from switchboard.sealer import Sealer
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
    session: str
    valid_session: bool


# Fixed keys and tokens, so that a seed replays the same inputs (sealing draws a random
# nonce, so tokens are sealed once, here, under a fixed test key).
SEALER = Sealer(b"\x07" * 32, purpose=PURPOSE_SESSIONS)
ISSUED = ("sealed:v2:210216106684:U1eOEsWAjfMLC9kTrqYM1gnORQdLpMLwIcec78KNh8Hup6T/UGCnE0Y"
          "kbd1lftB5Y+kEYmtYecvGeZfvl4JJdvHJkpUFrbp7Wu+85Eq3oEbOIrZB7TuZ60IV/S1eXFLNTc5eY"
          "oxFmND9zIDyRGM=")  # i-1, wv_abc, issued 1,699,000,000,000
OTHER_SECRET = ("sealed:v2:15a45ccae292:W6pPewXv9iYw0fEDW2UqgHD3hUrz/uxJtS4ytkE2+cWzdzClB"
                "xWbtwa+qpSr7cCqx1T/sQX0Y1UiBj1gWC5FY/CKO4bCI+Z5Q+gxxnALJHsOy+/N1XK+z6fkgQ"
                "FVN+4NiBCew4WqPRnPCfI8WI8=")  # the same, sealed under another secret
OTHER_INTEGRATION = ("sealed:v2:210216106684:jQA3rTumNCOOztEwgcEbKAubffKRkF6FyxU8Yy+eq8qpZZl"
                     "T+ebE2FiKdsarWnrVDlA/uGwXzFABSKJUThLznu5hIUmPe1Y4T1oc+vYEtI6Ncw1hln+HeD"
                     "7M2QHYlzMTMIjMeZc8WxtRbp2oGzM=")  # for i-2
_PREFIX = len("sealed:v2:210216106684:")


def session_token(r: random.Random) -> tuple[str, bool]:
    """A visitor's session token: issued and intact, damaged, sealed under another
    secret or for another integration, or junk; and whether it should open."""
    roll = r.random()
    if roll < 0.3:
        return ISSUED, True
    if roll < 0.6:
        # Damage before the last quantum: base64's last character before the padding
        # carries spare bits, and changing only those is the same token.
        at = r.randrange(len(ISSUED) - 4)
        damaged = ISSUED[:at] + r.choice(["A", "_", "=", "\u00e9", "", ":"]) + ISSUED[at + 1:]
        return damaged, damaged == ISSUED
    if roll < 0.7:
        return OTHER_SECRET, False
    if roll < 0.8:
        return OTHER_INTEGRATION, False
    return text_like(r, ISSUED[:_PREFIX] + "AAAA", "sealed:v1:AAAA", "v1.abc", "",
                     max_size=1100), False


def webchat_case(r: random.Random) -> WebChatFrame:
    origin = None if r.random() < 0.05 else text_like(
        r, "https://example.com", "http://a.b.example.com:8080", "null", "https://[::1]:3",
        "https://EXAMPLE.com.", "file://", "https://user@example.com", max_size=3000)
    allowed = [text_like(r, "example.com", "*.example.com", "*.", "", "localhost")
               for _ in range(r.randrange(4))]
    also = [text_like(r, "https://hub.test", "http://127.0.0.1:8080")
            for _ in range(r.randrange(2))]
    session, valid = session_token(r)
    return WebChatFrame(as_frame(r, near_valid(r, *WEBCHAT_FRAMES)), origin, allowed, also,
                        session, valid)


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
    # The session token a visitor's hello carries: a session or None, never an exception.
    session = open_session(SEALER, case.session, "i-1", now_ms=NOW_MS, max_age_ms=10**10)
    assert (session is not None) == case.valid_session, "only the intact token opens"
    assert session is None or session.visitor_id == "wv_abc"
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


