"""The OpenAPI 3.1 document of the hub's whole HTTP surface (`GET /openapi.json`).

Assembled here from each area's paths (`openapi_control`: `/api/v1`; `openapi_channels`:
the ingress, websockets and WebChat; Syncro's actions and the sync API's own
`openapi_paths`), the hub's own pages and probes (this document among them), and the
schemas (`openapi_schemas`). Every operation lists the statuses it can answer: those it
names, plus the ones every route of its kind can give (`openapi_ops.complete`). A test
compares the paths with the app's routes and checks the statuses against a running hub.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from switchboard.services import openapi_channels, openapi_control
from switchboard.services.openapi_ops import BEARER, complete, op, path_param, ref
from switchboard.services.openapi_schemas import components


def paths() -> dict[str, Any]:
    """Every route of the app, by path."""
    from switchboard.services.channels.syncro_actions import openapi_paths as syncro_paths
    from switchboard.services.sync_api import openapi_paths as sync_paths

    out: dict[str, Any] = {
        **openapi_control.openapi_paths(),
        **openapi_channels.openapi_paths(),
        # ---- the hub's own pages and probes ----
        "/console": {"get": op("The web console (static files; it acts through this API)",
                               security=False, responses=(), answer={"type": "string"},
                               media="text/html")},
        "/console/": {"get": op("The web console", security=False, responses=(),
                                answer={"type": "string"}, media="text/html")},
        "/console/{name}": {
            "parameters": [path_param("name")],
            "get": op("One of the console's modules, stylesheet or images", security=False,
                      responses=(404,), answer={"type": "string"}, media="text/plain")},
        "/openapi.json": {"get": op("This document", security=False, responses=(),
                                    answer={"type": "object"})},
        "/docs": {"get": op("The interactive API explorer (Swagger UI, served by the hub)",
                            security=False, responses=(), answer={"type": "string"},
                            media="text/html")},
        "/docs/{name}": {
            "parameters": [path_param("name")],
            "get": op("The explorer's scripts and stylesheets", security=False,
                      responses=(404,), answer={"type": "string"}, media="text/plain")},
        "/healthz": {"get": op("Liveness: every supervised loop is running", security=False,
                               responses=(503,), answer="Health")},
        "/readyz": {"get": op("Readiness: broker reachable, registry caught up",
                              security=False, responses=(503,), answer="Health")},
        "/metrics": {"get": op("Prometheus metrics (text exposition format); the bearer "
                               "is the metrics token, else the admin token", security=False,
                               responses=(401,), answer={"type": "string"},
                               media="text/plain")},
    }
    out.update(syncro_paths(op, path_param("integrationId")))  # /integrations/{id}/syncro/...
    out.update(sync_paths(op))  # /hubs/{hubId}/syncProfiles...
    complete(out)
    # A bearer, but the metrics token (SWITCHBOARD_METRICS_TOKEN, else the admin token),
    # not the API's session: none of its 429 or 503.
    out["/metrics"]["get"]["security"] = BEARER
    return out


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the public HTTP surface, as JSON types (a Struct's
    tuple default is a list here, as it is in the served document)."""
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": "0.1.0",
                 "description": "Hubs and integrations, the ingress, deliveries. Errors "
                                "are {status, errors: [{code, description, field?}]}; names "
                                "(channelId, integrationType, …) are accepted in any case."},
        "paths": paths(),
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "Error", "content": {
                "application/json": {"schema": ref("Error")}}}},
        },
    }
    document: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(spec))
    return document


def route_key(path: str) -> str:
    """A path with its parameters unnamed (`/a/{}`): how OpenAPI tells paths apart."""
    return re.sub(r"\{[^}]*\}", "{}", path)
