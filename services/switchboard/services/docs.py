"""`/openapi.json` and a plain `/docs` page, generated from the request and payload Structs."""

from __future__ import annotations

import html
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from switchboard.channels import (
    CONFIG_TYPES,
    DirectConfig,
    MessengerConfig,
    SlackConfig,
    SyncroConfig,
    SystemConfig,
    TwilioSmsConfig,
    WebChatConfig,
)
from switchboard.hub_stats import HubWindow
from switchboard.model import Activity, DirectEnvelope, InboundActivity, SystemEnvelope
from switchboard.services.http import JSON

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _op(summary: str, body: str | None = None, ok: int = 200, security: bool = True,
        responses: tuple[int, ...] = (400, 401, 404)) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {str(ok): {"description": "OK"}}
        | {str(c): {"$ref": "#/components/responses/Error"} for c in responses},
    }
    if body:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    if security:
        op["security"] = _BEARER
    return op


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the public HTTP surface."""
    from switchboard.services.api import IntegrationCreate, IntegrationUpdate
    from switchboard.services.channels.syncro_actions import BODY_TYPES, openapi_paths
    from switchboard.services.deliveries_api import RedeliverRequest, ReplayRequest
    from switchboard.services.hubs_api import HubCreate, HubUpdate
    from switchboard.services.sync_api import BODY_TYPES as SYNC_BODIES
    from switchboard.services.sync_api import openapi_paths as sync_paths

    _, components = msgspec.json.schema_components(
        [HubCreate, HubUpdate, IntegrationCreate, IntegrationUpdate, InboundActivity, Activity,
         DirectEnvelope, SystemEnvelope, DirectConfig, SystemConfig, SyncroConfig,
         TwilioSmsConfig, MessengerConfig, WebChatConfig, SlackConfig,
         RedeliverRequest, ReplayRequest, HubWindow],
        ref_template="#/components/schemas/{name}",
    )
    # Each channel's configuration (the console builds its forms from these): secrets are
    # write-only, shown masked on reads.
    for cls in CONFIG_TYPES.values():
        props = components[cls.__name__]["properties"]
        for name in cls.SECRET_FIELDS:
            wire = cls.__struct_encode_fields__[cls.__struct_fields__.index(name)]
            props[wire] = {**props[wire], "writeOnly": True}
    # The Syncro actions' request bodies (Syncro's own field names).
    components.update(msgspec.json.schema_components(
        BODY_TYPES, ref_template="#/components/schemas/{name}")[1])
    # Sync profiles' request bodies (their credentials are write-only).
    components.update(msgspec.json.schema_components(
        SYNC_BODIES, ref_template="#/components/schemas/{name}")[1])
    components["ConnectorSpec"]["properties"]["credentials"]["writeOnly"] = True
    components["Error"] = {
        "type": "object",
        "properties": {"status": {"type": "integer"}, "errors": {"type": "array", "items": {
            "type": "object", "properties": {"code": {"type": "string"},
                                             "description": {"type": "string"},
                                             "field": {"type": "string"}}}}},
    }
    iid = {"name": "integrationId", "in": "path", "required": True, "schema": {"type": "string"}}
    # Hubster compatibility mode per request (README: Porting from Hubster).
    compat = {"name": "compat", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["hubster", "none"]},
              "description": "hubster: answer as Hubster's API does (200 on create, numeric "
                             "codes on reads, the seed's key spellings); none: the default "
                             "answers, also on a hub whose compat is hubster. "
                             "`Accept: application/vnd.hubster+json` also asks for hubster."}
    paths: dict[str, Any] = {
        "/api/v1/hubs": {
            "post": _op("Create a hub (admin token); returns its access token once", "HubCreate",
                        201, responses=(400, 401, 403)),
            "get": _op("List the hubs this token may see"),
        },
        "/api/v1/hubs/{hubId}": {
            "get": _op("Get a hub (when its token was issued and rotated, never the token)"),
            "patch": _op("Set the hub's retry schedule (null: the deployment's) or its "
                         "compat mode (hubster; none or null: default answers)", "HubUpdate",
                         responses=(400, 401, 404, 409)),
            "delete": _op("Delete a hub and all its integrations (admin token)", ok=204,
                          responses=(401, 403, 404, 503)),
        },
        "/api/v1/hubs/{hubId}/stats": {
            "parameters": [{"name": "hubId", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {**_op("The hub's last hour in one-minute buckets: activities in, delivery "
                          "attempts out, outcomes and latency (the console's charts)",
                          responses=(401, 404, 429)),
                    "responses": {"200": {"description": "OK", "content": {
                        "application/json": {"schema": {
                            "$ref": "#/components/schemas/HubWindow"}}}}}
                    | {str(c): {"$ref": "#/components/responses/Error"}
                       for c in (401, 404, 429)}},
        },
        "/api/v1/hubs/{hubId}/rotateToken": {
            "post": _op("Replace the hub's access token (admin or the hub's token); the new "
                        "one is returned once, the old one stops working",
                        responses=(401, 404, 409, 503)),
        },
        "/api/v1/integrations/hubs/{id}": {
            "parameters": [compat],
            "post": _op("Create an integration in hub {id}, or update integration {id} (the "
                        "given configuration replaces the old one; a Direct integration keeps "
                        "its integrationType and signatureScheme unless named)",
                        "IntegrationCreate", 201,
                        responses=(400, 401, 403, 404, 408, 409, 413, 415)),
            "get": _op("List a hub's integrations (id is a hub id)"),
        },
        "/api/v1/integrations/{integrationId}": {
            "parameters": [iid, compat],
            "get": _op("Get an integration (secrets masked, no private key)"),
            "patch": _op("Update an integration: configuration is a JSON Merge Patch (RFC "
                         "7396) of the stored one (null removes a field), so "
                         "{\"configuration\": {\"regenerateKeys\": true}} alone regenerates "
                         "the keys", "IntegrationUpdate",
                         responses=(400, 401, 404, 408, 409)),
            "delete": _op("Delete an integration", ok=204),
        },
        "/api/v1/integrations/{integrationId}/deliveries": {
            "parameters": [iid] + [
                {"name": n, "in": "query", "required": False, "schema": schema}
                for n, schema in (
                    ("status", {"enum": ["delivered", "pending", "failed"]}),
                    ("since", {"type": "integer", "minimum": 0}),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    ("cursor", {"type": "string"}))],
            "get": _op("An integration's deliveries, newest updated first: {items, nextCursor}"),
        },
        "/api/v1/deliveries/{deliveryId}": {
            "parameters": [{"name": "deliveryId", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": _op("One delivery with its last 20 attempts"),
        },
        "/api/v1/integrations/{integrationId}/redeliver": {
            "parameters": [iid],
            "post": _op("Redeliver one delivery, or all of a status since a time: {jobId}",
                        "RedeliverRequest", 202, responses=(400, 401, 404, 409, 429, 503)),
        },
        "/api/v1/integrations/{integrationId}/replay": {
            "parameters": [iid],
            "post": _op("Replay every delivery of a window (at most 30 days): {jobId}",
                        "ReplayRequest", 202, responses=(400, 401, 404, 429, 503)),
        },
        "/api/v1/jobs/{jobId}": {
            "parameters": [{"name": "jobId", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": _op("A redeliver or replay job: {jobId, state, done, total}"),
        },
        "/ingress/{integrationId}": {
            "parameters": [iid],
            "post": _op("Post a Standard Webhooks-signed activity (v1a, Ed25519); before "
                        "the signature verifies, every refusal is the same 401 (but 408 "
                        "for a body that does not arrive in time)",
                        "InboundActivity", 202, security=False,
                        responses=(400, 401, 408, 409, 413, 429, 503)),
        },
        "/ingress/{integrationId}/{secret}": {
            "parameters": [iid, {"name": "secret", "in": "path", "required": True,
                                 "schema": {"type": "string"}}],
            "post": _op("A Syncro Notification Center webhook (JSON {text, link, "
                        "attributes}) to a Syncro integration's secret inbound URL: 200 "
                        "{activityId, accepted}; a wrong or missing secret is the ingress's "
                        "one 401", ok=200, security=False,
                        responses=(400, 401, 409, 413, 415, 429, 503)),
        },
        "/v1/integrations/{integrationId}/stream": {
            "parameters": [iid],
            "get": _op("Websocket: deliveries for a Direct integration without webhookUrl",
                       ok=101),
        },
        "/v1/integrations/{integrationId}/feed": {
            "parameters": [iid],
            "get": _op("Websocket: a live, read-only view of the deliveries to any "
                       "integration (the console's feed); the first frame authenticates: "
                       '{"type":"auth","token":"…"}', ok=101, security=False, responses=()),
        },
        "/console": {"get": _op("The web console (static files; it acts through this API)",
                                security=False, responses=())},
        "/healthz": {"get": _op("Liveness", security=False, responses=())},
        "/readyz": {"get": _op("Readiness: broker reachable, registry caught up",
                               security=False, responses=(503,))},
    }
    paths.update(openapi_paths(_op, iid))  # /integrations/{id}/syncro/...
    paths.update(sync_paths(_op))  # /hubs/{hubId}/syncProfiles...
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "Error", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }


def docs_routes() -> list[Route]:
    spec = openapi_spec()

    async def openapi(request: Request) -> Response:
        return JSON(spec)

    async def docs(request: Request) -> Response:
        rows = "".join(
            f"<tr><td><code>{m.upper()}</code></td><td><code>{html.escape(p)}</code></td>"
            f"<td>{html.escape(op['summary'])}</td></tr>"
            for p, item in spec["paths"].items() for m, op in item.items() if m != "parameters"
        )
        page = (
            "<!doctype html><meta charset=utf-8><title>Switchboard API</title>"
            "<style>body{font:15px system-ui;margin:2em}td{padding:4px 12px}</style>"
            "<h1>Switchboard API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json"
            f"</a></p><table>{rows}</table>"
        )
        return HTMLResponse(page)

    return [Route("/openapi.json", openapi), Route("/docs", docs)]
