"""Inputs for the fuzz targets: raw bytes, and near-valid documents that reach deep code.

Random bytes alone die at the first ``{``; the search gets past a parser's front door
with a valid document (each target passes templates of its own wire format) mutated a
little: a field replaced by another JSON value (huge numbers, wrong types, unicode, lone
surrogates, nesting 10,000 deep), removed, or joined by an unknown one; then, sometimes,
the encoded bytes damaged (truncated, a byte changed, invalid UTF-8 or brackets spliced
in). One in ten inputs is plain random bytes.

Hypothesis draws one integer per input and a seeded `random.Random` builds the input
from it: the mutations cost microseconds instead of a Hypothesis draw each, which is what
lets 10,000 examples per target fit in CI's budget. Hypothesis still runs the search,
prints the failing input itself (the test's argument) and replays it from the seed.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import note
from hypothesis import strategies as st

from switchboard.errors import SwitchboardError

R = TypeVar("R")

_DEPTHS = [2, 63, 64, 65, 200, 2_000, 10_000]
# Numbers and literals json.dumps would never write.
_RAW_VALUES = [
    b"1" * 400, b"-" + b"9" * 5000, b"1e999999", b"-1e-999999", b"0.0000000000000000000001",
    b"18446744073709551616", b"-9223372036854775809", b"9223372036854775808", b"NaN",
    b"Infinity", b"-Infinity", b"1.5e308", b"-0", b"1E+2", b"01", b".5", b"1.", b"+1",
    b'"\xff\xfe"', b'"\xed\xa0\x80"', b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"',
    b'"\\x"', b'"\\u12"', b"tru", b"nul", b"[1,]", b"{,}", b'{"a" 1}', b'"', b"[", b"{",
    b'"a\tb"', b"\xef\xbb\xbf{}",
]
_STRINGS = [
    "", " ", "message", "text", "image", "file", "card", "carousel", "hello", "page",
    "event_callback", "url_verification", "hello", "ping", "ack", "subscribe", "received",
    "http://", "https://", "https://x.test/a", "http://exa mple.com/", "javascript:alert(1)",
    "é", "\u0000", "\ud800", "\udfff", "\u2028", "\ufeff", "a" * 257, "a" * 5000, "9" * 30,
    "9" * 4301,  # past Python's int() digit limit
    "-1", "true", "null", "0:0", "0:-1", "3:99999999999999999999", "-1:0", "Customer",
    "Agent", "Bot", "System", "Direct", "TwilioSMS", "WebChat", "Slack", "Messenger",
    "message:customer", "*", "%00", "../", "\\", '"', "{", "[", "*.example.com", "1.2.3.4",
]
_INTS = [0, 1, -1, 2, 3000, 3002, 101, 102, 106, 1001, 2**31, 2**53 + 1, 2**63 - 1, 2**63,
         -(2**63), 2**64, -(2**64), 10**30]
_KEYS = ["type", "id", "text", "url", "name", "message", "sender", "entry", "event",
         "cursor", "session", "payload", "configuration", "webhookUrl", "channelId", "", "é"]


def _text(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.5:
        return r.choice(_STRINGS)
    if roll < 0.8:
        return "".join(chr(r.randrange(0x20, 0x7F)) for _ in range(r.randrange(0, 20)))
    # Anything, lone surrogates included.
    return "".join(chr(r.randrange(0, 0x110000 if r.random() < 0.5 else 0x800))
                   for _ in range(r.randrange(0, 12)))


class Raw:
    """A value written as these exact bytes into the encoded document."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _raw(r: random.Random) -> Raw:
    depth = r.choice(_DEPTHS)
    roll = r.randrange(5)
    if roll == 0:
        return Raw(b"[" * depth + b"]" * depth)
    if roll == 1:
        return Raw(b'{"a":' * depth + b"1" + b"}" * depth)
    if roll == 2:
        return Raw(b"[" * depth)  # never closes
    if roll == 3:
        return Raw(b'[{"a":"[[["},' * depth + b"1" + b"]" * depth)  # brackets in strings too
    return Raw(r.choice(_RAW_VALUES))


def value(r: random.Random, depth: int = 3) -> Any:
    """A JSON value (or a Raw), mostly small, sometimes odd."""
    roll = r.random()
    if roll < 0.08:
        return None
    if roll < 0.14:
        return r.random() < 0.5
    if roll < 0.30:
        return r.choice(_INTS) if r.random() < 0.5 else r.randint(-(10**6), 10**6)
    if roll < 0.36:
        return r.choice([0.5, -0.0, 1e308, 5e-324, r.uniform(-1e6, 1e6)])
    if roll < 0.65:
        return _text(r)
    if roll < 0.75:
        return _raw(r)
    if depth <= 0:
        return _text(r)
    if roll < 0.88:
        return [value(r, depth - 1) for _ in range(r.randrange(0, 4))]
    return {(_text(r) if r.random() < 0.3 else r.choice(_KEYS)): value(r, depth - 1)
            for _ in range(r.randrange(0, 4))}


def encode(doc: Any) -> bytes:
    """JSON bytes of `doc`, Raw values spliced in as they are, lone surrogates kept (as
    the invalid UTF-8 a hostile sender would put there)."""
    raws: list[bytes] = []

    def default(obj: Any) -> str:
        if isinstance(obj, Raw):
            raws.append(obj.data)
            return f"\x00raw{len(raws) - 1}\x00"
        raise TypeError(type(obj).__name__)

    text = json.dumps(doc, ensure_ascii=False, default=default).encode("utf-8", "surrogatepass")
    for i, data in enumerate(raws):
        text = text.replace(f'"\\u0000raw{i}\\u0000"'.encode(), data, 1)
    return text


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


def mutate(r: random.Random, template: Any) -> Any:
    """`template` with up to three fields replaced, removed or added."""
    doc = copy.deepcopy(template)
    for _ in range(r.choice([0, 1, 1, 1, 2, 3])):
        path = r.choice(_paths(doc))
        kind = r.choice(["replace", "replace", "delete", "add"])
        if not path:
            if kind == "replace":
                doc = value(r)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        target = parent[path[-1]]
        if kind == "replace":
            parent[path[-1]] = value(r)
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(target, dict):
            target[r.choice(_KEYS) if r.random() < 0.7 else _text(r)] = value(r)
        elif isinstance(target, list):
            target.insert(r.randrange(len(target) + 1), value(r))
    return doc


def damage(r: random.Random, data: bytes) -> bytes:
    """`data`, usually intact; else truncated, a byte changed, or junk spliced in."""
    roll = r.random()
    if roll < 0.75 or not data:
        return data
    at = r.randrange(len(data))
    if roll < 0.83:
        return data[:at]
    if roll < 0.91:
        return data[:at] + bytes([r.randrange(256)]) + data[at + 1:]
    junk = r.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\", b'"', b"[" * 2000,
                     b"{", b"}", b",", b"\\u"])
    return data[:at] + junk + data[at:]


def near_valid(r: random.Random, *templates: Any) -> bytes:
    """A near-valid encoding of one of `templates` (or raw bytes, or random JSON)."""
    roll = r.random()
    if roll < 0.1:
        return r.randbytes(r.randrange(0, 300))
    if roll < 0.17:
        return encode(value(r))
    return damage(r, encode(mutate(r, r.choice(templates))))


def text_like(r: random.Random, *samples: str, max_size: int = 300) -> str:
    """One of `samples` mutated (characters replaced, inserted or cut), or any string."""
    if r.random() < 0.2 or not samples:
        return _text(r)[:max_size]
    s = r.choice(samples)
    for _ in range(r.choice([0, 0, 1, 2, 3])):
        at = r.randrange(len(s) + 1)
        c = _text(r)[:2] or "x"
        op = r.randrange(3)
        s = s[:at] + c + s[at:] if op == 0 else s[:at] + c + s[at + 1:] if op == 1 else s[:at]
    return s[:max_size]


T = TypeVar("T")


def cases(build: Callable[[random.Random], T]) -> st.SearchStrategy[T]:
    """Inputs built by `build` from one Hypothesis draw (see the module's docstring).

    A failure shows how to rebuild the input (``signed_case(Random(154))``) and the input
    itself.
    """
    return st.builds(build, st.builds(random.Random, st.integers(0, 2**64 - 1))).map(_shown)


def _shown(case: T) -> T:
    note(case)  # pretty-printed for the failing example only, so free on the others
    return case


def ours_or_result(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R | None:
    """The invariant: `fn` returns, or raises one of our errors; anything else escapes
    (and fails the test with its traceback)."""
    try:
        return fn(*args, **kwargs)
    except SwitchboardError as exc:
        assert 400 <= exc.status < 600 and exc.code and isinstance(exc.description, str)
        return None


def accepts(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """`ours_or_result`, for functions whose answer is raising or not: True if `fn`
    returned, False if it refused with our error."""
    try:
        fn(*args, **kwargs)
    except SwitchboardError:
        return False
    return True
