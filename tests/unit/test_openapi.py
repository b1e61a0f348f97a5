"""`/openapi.json` is a valid OpenAPI 3.1 document of exactly the routes the app serves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import Route, WebSocketRoute

from switchboard.keys import generate_secret_key_b64
from switchboard.services.app import build_app
from switchboard.services.openapi import openapi_spec, route_key
from switchboard.settings import Settings

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return openapi_spec()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    return [(path, method, op, item) for path, item in spec["paths"].items()
            for method, op in item.items() if method in METHODS]


def test_the_document_validates(spec: dict[str, Any]) -> None:
    errors = [str(e).splitlines()[0] for e in OpenAPIV31SpecValidator(spec).iter_errors()]
    assert errors == []


def test_every_documented_route_exists_and_every_route_is_documented(
        spec: dict[str, Any]) -> None:
    app = build_app(Settings(secret_key=generate_secret_key_b64()))
    served = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            served.add((route_key(route.path), "get"))  # the upgrade is a GET
        elif isinstance(route, Route):
            served |= {(route_key(route.path), m.lower()) for m in route.methods or ()
                       if m != "HEAD"}  # Starlette answers HEAD wherever it answers GET
    documented = {(route_key(path), method) for path, method, _, _ in operations(spec)}
    assert sorted(served - documented) == [], "served but not documented"
    assert sorted(documented - served) == [], "documented but not served"


def test_every_path_parameter_is_declared(spec: dict[str, Any]) -> None:
    for path, method, op, item in operations(spec):
        declared = {p["name"] for p in item.get("parameters", []) + op.get("parameters", [])
                    if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), (method, path)


def test_statuses_follow_what_each_kind_of_route_can_answer(spec: dict[str, Any]) -> None:
    for path, method, op, _ in operations(spec):
        codes = {int(c) for c in op["responses"]}
        where = f"{method.upper()} {path}"
        # An answer on success (101: a websocket), or the route refuses always (405).
        assert any(200 <= c < 300 or c in (101, 405) for c in codes), where
        if op.get("security"):
            assert 401 in codes, where
        if op.get("security") and path != "/metrics":  # the API's session
            assert {401, 429, 503} <= codes, where
            if "{" in path:
                assert 404 in codes, where
        body = op.get("requestBody", {}).get("content", {})
        if "application/json" in body and op.get("security"):
            assert {400, 408, 413, 415} <= codes, where
        for code, answer in op["responses"].items():
            if int(code) >= 400 and code != "405":
                assert answer == {"$ref": "#/components/responses/Error"}, (where, code)


def test_bodies_and_answers_come_from_the_structs(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', repr(spec).replace("'", '"'))
    assert sorted(set(refs) - set(schemas)) == []
    post = spec["paths"]["/api/v1/integrations/hubs/{id}"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IntegrationCreate"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Integration"}
    # msgspec's schema of the Struct the ingress decodes, with its tagged message union.
    inbound = schemas["InboundActivity"]
    assert inbound["required"] == ["type", "sender", "message"]
    assert {"TextMessage", "CardMessage"} <= set(schemas)
    ingress = spec["paths"]["/ingress/{integrationId}"]["post"]
    assert set(ingress["requestBody"]["content"]) == {
        "application/json", "application/x-www-form-urlencoded"}
    assert {"200", "202", "404"} <= set(ingress["responses"])
    # Provider routes and WebChat are documented too.
    for path in ("/ingress/slack", "/ingress/meta", "/webchat/{integrationId}",
                 "/webchat/{integrationId}/ws", "/ingress/{integrationId}/{secret}"):
        assert path in spec["paths"], path
    # Secrets are write-only in every channel's configuration.
    assert schemas["TwilioSmsConfig"]["properties"]["authToken"]["writeOnly"] is True
