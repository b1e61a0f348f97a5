"""Decoding untrusted JSON: a nesting-depth limit in front of msgspec, errors as BadRequest.

msgspec has no depth limit of its own: a value nested a few thousand levels deep raises
RecursionError, even inside a field the target Struct does not declare (skipping a value
recurses as much as decoding it). Uncaught, that is a 500 for whoever sent it. Every
decoder that reads bytes from outside (ingress bodies, API bodies, websocket frames,
provider answers) goes through `decode` here, which refuses anything nested more than
`MAX_JSON_DEPTH` levels as 400 ``invalid_json`` before msgspec sees it.

The depth scan is on the ingress's hot path, so it is built from C-speed bytes operations
(translate, count, replace, split) and never loops over bytes in Python. Measured with
timeit on this project's 2-core CI machine: about 1 µs for a 400-byte activity, 0.1 ms for
256 KiB of text, and, for 256 KiB made of nothing but brackets (the worst case), less
than msgspec itself spends decoding the same body.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec

from switchboard.errors import BadRequest

__all__ = ["MAX_JSON_DEPTH", "check_depth", "decode", "decoder_for", "depth_exceeds", "field_of"]

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted from outside. Our own payloads nest at
most about 8 levels (an activity's carousel buttons); Slack and Meta webhooks stay well
under 20. Far below the roughly 1,000 levels where msgspec runs out of stack."""

T = TypeVar("T")

# Keep the structure only: quotes and brackets, both kinds of bracket folded into "[" and
# "]" (depth does not care which kind; a mismatched pair is msgspec's to refuse, at a
# depth we have bounded).
_FOLD = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')


def depth_exceeds(data: bytes | bytearray | memoryview | str,
                  limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `data` nests arrays/objects more than `limit` deep outside strings.

    Exact for well-formed JSON. Brackets that never close count as open to the end (a
    truncated document is invalid anyway, but msgspec would still recurse into it). What
    follows the first syntax error may be misjudged: msgspec stops there.
    """
    if isinstance(data, str):
        # UTF-8 keeps every ASCII character as that byte and never puts an ASCII byte
        # inside a multi-byte character, so the bytes scan sees the same structure.
        data = data.encode("utf-8", "surrogatepass")
    elif not isinstance(data, bytes):
        data = bytes(data)
    # One C-speed pass; counting brackets inside strings too gives an upper bound.
    skeleton = data.translate(_FOLD, _NOT_STRUCTURE)
    if skeleton.count(b"[") <= limit:
        return False
    if b"\\" in data:
        # Escapes, resolved before the backslashes are dropped: a run of backslashes is
        # pairs of escaped backslashes, and a backslash still before a quote escapes it.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        skeleton = data.translate(_FOLD, _NOT_STRUCTURE)
    if b'"' in skeleton:
        # Strings hold no structure. Dropping two adjacent quotes keeps every later quote's
        # parity, so this first removes, cheaply, the strings with no bracket inside; then
        # what lies between an odd and an even quote is inside a string (an unterminated
        # last string included).
        skeleton = skeleton.replace(b'""', b"")
        if b'"' in skeleton:
            skeleton = b"".join(skeleton.split(b'"')[::2])
    return _bracket_depth_exceeds(skeleton, limit)


def _bracket_depth_exceeds(brackets: bytes, limit: int) -> bool:
    # `limit` + 1 openings in a row are too deep whatever follows (the 10,000-deep attack
    # ends here, after one search).
    if b"[" * (limit + 1) in brackets:
        return True
    # Each pass deletes every innermost "[]" pair (one C-speed replace), lowering every
    # nesting by one; when few such peaks are left, their depths are summed directly.
    # Invariant: the original's depth = passes + the depth of what is left.
    passes = 0
    while brackets:
        if passes + brackets.count(b"[") <= limit:
            return False
        peaks = brackets.count(b"[]")
        if peaks == 0:
            # Nothing pairs up ("]]..[[" is left), and the openings that never close are
            # too many on top of what was removed.
            return True
        if peaks <= _PEAKS_SUMMED:
            return passes + _max_depth(brackets) > limit
        brackets = brackets.replace(b"[]", b"")
        passes += 1
        if passes > limit:
            return True
    return False


# Above this many peaks a replace pass is cheaper than a Python loop over them; a document
# that keeps this many through many passes is mostly long chains, so passes stay few.
_PEAKS_SUMMED = 8192


def _max_depth(brackets: bytes) -> int:
    # The depth peaks where a run of openings ends: inside a "[]", or at the very end.
    # Each piece between peaks is "]]..[[", changing the depth by its opens - closes.
    *pieces, last = brackets.split(b"[]")
    depth = best = 0
    for piece in pieces:
        depth += 2 * piece.count(b"[") - len(piece)
        best = max(best, depth + 1)
    return max(best, depth + 2 * last.count(b"[") - len(last))


def check_depth(data: bytes | bytearray | memoryview | str, limit: int = MAX_JSON_DEPTH
                ) -> None:
    """Raise BadRequest ``invalid_json`` if `data` nests deeper than `limit`."""
    if depth_exceeds(data, limit):
        raise BadRequest("invalid_json",
                         f"JSON is nested more than {limit} levels deep (or never closes)")


def decode(data: bytes | bytearray | memoryview | str, decoder: msgspec.json.Decoder[T], *,
           invalid: str = "invalid_request", field_prefix: str = "") -> T:
    """Decode untrusted JSON with `decoder`, never raising anything but BadRequest.

    Malformed or too deeply nested → ``invalid_json``; well-formed JSON of the wrong shape
    → `invalid`, with the offending path (after `field_prefix`) as the error's field.
    """
    if isinstance(data, str):
        try:
            # msgspec encodes a str to UTF-8 itself and would raise UnicodeEncodeError on
            # a lone surrogate; doing it here turns that into our error.
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("invalid_json", "text is not valid Unicode") from None
    check_depth(data)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise BadRequest(invalid, str(exc), field_of(exc, field_prefix)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest("invalid_json", f"body is not valid JSON: {exc}") from None


def field_of(exc: msgspec.ValidationError, prefix: str = "") -> str | None:
    """The path msgspec names in a validation error (``- at `$.a.b```), as ``a.b``."""
    msg = str(exc)
    marker = "at `$."
    if marker not in msg:
        return prefix.rstrip(".") or None
    return prefix + msg.split(marker, 1)[1].rstrip("`")


@functools.lru_cache(maxsize=64)
def decoder_for(into: Any) -> msgspec.json.Decoder[Any]:
    """A JSON decoder for type `into`, built once (for callers that pick the type per call)."""
    return msgspec.json.Decoder(into)
