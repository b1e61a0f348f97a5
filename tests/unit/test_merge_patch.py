"""JSON Merge Patch: every example of RFC 7396's Appendix A, and what PATCH builds on it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from switchboard.channels import DirectConfig, SystemConfig, WebChatConfig
from switchboard.config_update import patched, replacing
from switchboard.merge_patch import merge_patch
from switchboard.model import IntegrationType

# (original, patch, result), in the appendix's order.
APPENDIX_A: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7396_appendix_a(original: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(original), copy.deepcopy(patch)
    assert merge_patch(original, patch) == result
    assert (original, patch) == before  # pure: the inputs are left alone


def test_rfc7396_section_3_example() -> None:
    target = {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
              "tags": ["example", "sample"], "content": "This will be unchanged"}
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890",
             "author": {"familyName": None}, "tags": ["example"]}
    assert merge_patch(target, patch) == {
        "title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
        "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"}


AGENT = DirectConfig(integration_type=IntegrationType.AGENT, echo=True,
                     webhook_url="https://example.com/hook",
                     start=[], signature_scheme="hubster")


def test_patch_keeps_what_it_does_not_name() -> None:
    out = patched(AGENT, {"regenerateKeys": True})
    assert out == {"integrationType": "Agent", "echo": True,
                   "webhookUrl": "https://example.com/hook", "signatureScheme": "hubster",
                   "regenerateKeys": True}
    # null removes (back to websocket delivery); the seed's capitalised keys are read too.
    assert patched(AGENT, {"webhookUrl": None, "Echo": False}) == {
        "integrationType": "Agent", "echo": False, "signatureScheme": "hubster"}
    web = WebChatConfig(allowed_origins=["example.com"])
    assert patched(web, {"allowedOrigins": ["a.example"]}) == {"allowedOrigins": ["a.example"]}


def test_replacing_update_keeps_type_and_signature_scheme_only() -> None:
    # The seed's update without integrationType: the type stays, the rest is replaced.
    assert replacing(AGENT, {"Echo": True, "webhookUrl": "https://example.com/2"}) == {
        "echo": True, "webhookUrl": "https://example.com/2", "integrationType": "Agent",
        "signatureScheme": "hubster"}
    # Named, they are taken as given (a changed type is refused later, by the API).
    assert replacing(AGENT, {"integrationType": "Bot", "signatureScheme": "standard"}) == {
        "integrationType": "Bot", "signatureScheme": "standard"}
    system = SystemConfig(webhook_url="https://example.com/s", events=["*"])
    assert replacing(system, {"webhookUrl": "https://example.com/t", "events": ["*"]}) == {
        "webhookUrl": "https://example.com/t", "events": ["*"], "signatureScheme": "standard"}
