"""The JSON depth limit: exact on well-formed JSON, never fooled by strings, and every
refusal a BadRequest ``invalid_json`` (never msgspec's RecursionError)."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from switchboard import jsonsafe
from switchboard.errors import BadRequest
from switchboard.model import inbound_decoder


def reference_depth(data: bytes) -> int:
    """The obvious byte-by-byte scan the fast one must agree with."""
    depth = deepest = 0
    in_string = escaped = False
    for c in data:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in b"]}":
            depth -= 1
    return deepest


def nested(depth: int, inner: object = 1) -> object:
    value = inner
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [0, 1, 63, 64, 65, 200, 900])
def test_the_limit_is_exact(depth: int) -> None:
    body = json.dumps({"type": "message", "x": nested(depth - 1)} if depth else 1).encode()
    assert reference_depth(body) == depth
    assert jsonsafe.depth_exceeds(body) is (depth > jsonsafe.MAX_JSON_DEPTH)
    assert jsonsafe.depth_exceeds(body.decode()) is (depth > jsonsafe.MAX_JSON_DEPTH)


def test_brackets_inside_strings_do_not_count() -> None:
    tricky = ["[" * 100, "{" * 100 + '\\"[[[', "\\", '"', "\\\\[[[", "]]]" * 50]
    body = json.dumps({"a": tricky, "b": {"c": tricky}}).encode()
    assert reference_depth(body) == 3
    assert not jsonsafe.depth_exceeds(body, 3)
    assert jsonsafe.depth_exceeds(body, 2)


def test_unclosed_brackets_are_refused() -> None:
    # msgspec would recurse into these before noticing the document never ends.
    assert jsonsafe.depth_exceeds(b"[" * 10_000)
    assert jsonsafe.depth_exceeds(b'{"a":' * 5_000)
    assert jsonsafe.depth_exceeds(b'[1,"a\\\\"' + b"[" * 100)
    # An unterminated string swallows the rest: msgspec stops there, so do we.
    assert not jsonsafe.depth_exceeds(b'["unterminated \\"' + b"[" * 100)


def test_agrees_with_the_reference_on_random_documents() -> None:
    rng = random.Random(9)
    atoms: list[object] = [1, "a[\\\"{", "\\", 'x]}"', None, 2.5, "", "\\\\", "é[ü"]

    def gen(depth: int) -> object:
        # Mostly one child, sometimes a few: deep documents that stay small.
        if depth == 0 or rng.random() < 0.05:
            return rng.choice(atoms)
        width = 1 if rng.random() < 0.8 else rng.randint(0, 3)
        if rng.random() < 0.5:
            return [gen(depth - 1) if i == 0 else rng.choice(atoms) for i in range(width)]
        return {f"k{i}[\"": gen(depth - 1) if i == 0 else rng.choice(atoms)
                for i in range(width)}

    for _ in range(2000):
        body = json.dumps(gen(rng.randint(1, 90)), ensure_ascii=rng.random() < 0.5).encode()
        want = reference_depth(body)
        for limit in (0, 1, 2, 5, 30, 64):
            assert jsonsafe.depth_exceeds(body, limit) is (want > limit), (limit, want, body)


def test_many_peaks_take_the_summing_path() -> None:
    # More peaks than a replace pass is worth: depths are summed between them.
    wide = b"[" + b",".join([b"[[1],[2]]"] * 20_000) + b"]"
    assert not jsonsafe.depth_exceeds(wide, 3)
    assert jsonsafe.depth_exceeds(wide, 2)
    deep_tail = wide[:-1] + b"," + b"[" * 70 + b"]" * 70 + b"]"
    assert jsonsafe.depth_exceeds(deep_tail)


def test_decode_maps_every_failure_to_bad_request() -> None:
    deep = b'{"type":"message","skipped":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(RecursionError):
        inbound_decoder.decode(deep)  # why this module exists
    with pytest.raises(BadRequest) as caught:
        jsonsafe.decode(deep, inbound_decoder, invalid="invalid_activity")
    assert caught.value.code == "invalid_json" and caught.value.status == 400

    with pytest.raises(BadRequest) as caught:
        jsonsafe.decode(b"{nope", inbound_decoder, invalid="invalid_activity")
    assert caught.value.code == "invalid_json"

    with pytest.raises(BadRequest) as caught:
        jsonsafe.decode(b'{"type":"message","sender":{"id":""},"message":{"type":"text",'
                        b'"text":"x"}}', inbound_decoder, invalid="invalid_activity")
    assert caught.value.code == "invalid_activity" and caught.value.field == "sender.id"


def test_decoder_for_is_built_once() -> None:
    class Body(msgspec.Struct):
        a: int

    assert jsonsafe.decoder_for(Body) is jsonsafe.decoder_for(Body)
    assert jsonsafe.decode(b'{"a": 1}', jsonsafe.decoder_for(Body)).a == 1
