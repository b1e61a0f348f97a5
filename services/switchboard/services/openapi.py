"""The OpenAPI 3.1 document of the hub's whole HTTP surface (`GET /openapi.json`).

Request bodies are the msgspec Structs the routes decode (their JSON Schema comes from
`msgspec.json.schema_components`); answers built as dicts have a hand-written schema
here. Every operation lists the statuses it can answer: those it names, plus the ones
every route of its kind can give (`_complete`): a token's 401, 429 and 503, a JSON
body's 400, 408, 413 and 415, an unknown path id's 404. A test compares the paths with
the app's routes and checks the statuses against a running hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

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
from switchboard.model import (
    Activity,
    ChannelId,
    DirectEnvelope,
    InboundActivity,
    IntegrationType,
    SystemEnvelope,
)

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ERROR = {"$ref": "#/components/responses/Error"}
# What every route of a kind can answer (`_complete`).
AUTHENTICATED = (401, 429, 503)
JSON_BODY = (400, 408, 413, 415)
REASONS = {
    101: "Switching Protocols (websocket)", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 405: "Method Not Allowed",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def op(summary: str, body: str | None = None, ok: int = 200, security: bool = True,
       responses: Iterable[int] = (400, 401, 404), *, answer: str | dict[str, Any] | None = None,
       media: str = "application/json", request: dict[str, Any] | None = None,
       ) -> dict[str, Any]:
    """One operation: `body` names the request's Struct schema (or `request` maps media
    types to schemas), `answer` the `ok` answer's (a schema name or a schema), `responses`
    the error statuses this route adds to those of its kind."""
    answered: dict[str, Any] = {"description": REASONS.get(ok, "OK")}
    if answer is not None:
        schema = _ref(answer) if isinstance(answer, str) else answer
        answered["content"] = {media: {"schema": schema}}
    result: dict[str, Any] = {
        "summary": summary,
        "responses": {str(ok): answered} | {str(c): ERROR for c in responses},
    }
    if body:
        result["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(body)}}}
    elif request:
        result["requestBody"] = {"required": True, "content": {
            m: {"schema": s} for m, s in request.items()}}
    if security:
        result["security"] = _BEARER
    return result


def path_param(name: str, description: str | None = None,
               schema: dict[str, Any] | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": "path", "required": True,
                         "schema": schema or {"type": "string"}}
    if description:
        p["description"] = description
    return p


def _complete(paths: dict[str, Any]) -> None:
    """Add the statuses every operation of its kind can answer, sorted."""
    for path, item in paths.items():
        has_ids = "{" in path
        for method, operation in item.items():
            if method == "parameters":
                continue
            extra: set[int] = set()
            if operation.get("security"):
                extra.update(AUTHENTICATED)
                if has_ids:
                    extra.add(404)
                body = operation.get("requestBody", {}).get("content", {})
                if "application/json" in body:
                    extra.update(JSON_BODY)
            got = operation["responses"]
            for code in extra:
                got.setdefault(str(code), ERROR)
            for code, value in got.items():
                if value is ERROR:
                    got[code] = dict(ERROR)
            operation["responses"] = dict(sorted(got.items()))


# ---- answers built as dicts ------------------------------------------------------------

_MS = {"type": "integer", "description": "ms since the epoch"}
_STR = {"type": "string"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}

ANSWERS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["status", "errors"],
        "properties": {"status": {"type": "integer"}, "errors": {"type": "array", "items": {
            "type": "object", "required": ["code", "description"],
            "properties": {"code": _STR, "description": _STR, "field": _STR}}}},
    },
    "Hub": {
        "type": "object", "required": ["hubId", "name", "createdAt", "tokenIssuedAt"],
        "properties": {"hubId": _STR, "name": _STR, "createdAt": _MS, "tokenIssuedAt": _MS,
                       "tokenRotatedAt": _NULLABLE_INT, "retrySchedule": _STR,
                       "compat": {"enum": ["hubster"]}, "integrationCount": {"type": "integer"}},
    },
    "HubWithToken": {"allOf": [_ref("Hub"), {
        "type": "object", "required": ["accessToken"],
        "properties": {"accessToken": {"type": "string", "description": "shown once"}}}]},
    "Integration": {
        "type": "object",
        "required": ["integrationId", "hubId", "integrationTypeId", "channelId", "name",
                     "statusId", "configuration"],
        "properties": {
            "integrationId": _STR, "hubId": _STR,
            "integrationTypeId": {"enum": [t.value for t in IntegrationType]},
            "channelId": {"enum": [c.value for c in ChannelId]},
            "name": _STR, "statusId": {"enum": [3000, 3002]},
            "configuration": {
                "type": "object", "description": "the channel's configuration (its "
                "<Channel>Config schema), secrets masked; on create and key regeneration "
                "also the secrets shown once (privateSigningKey, webhookSecret, …)",
                "properties": {"publicSigningKey": _STR, "privateSigningKey": _STR,
                               "webhookSecret": _STR}},
        },
    },
    "DeliverySummary": {
        "type": "object",
        "properties": {"deliveryId": _STR, "activityId": _STR, "hubId": _STR,
                       "integrationId": _STR, "conversationId": _STR,
                       "status": {"enum": ["delivered", "pending", "failed"]},
                       "attempts": {"type": "integer"}, "lastStatus": _NULLABLE_INT,
                       "lastError": _NULLABLE_STR, "createdAt": _MS, "updatedAt": _MS,
                       "nextAttemptAt": _NULLABLE_INT},
    },
    "DeliveryPage": {
        "type": "object", "required": ["items", "nextCursor"],
        "properties": {"items": {"type": "array", "items": _ref("DeliverySummary")},
                       "nextCursor": _NULLABLE_STR},
    },
    "DeliveryDetail": {"allOf": [_ref("DeliverySummary"), {
        "type": "object", "properties": {
            "attemptCount": {"type": "integer"},
            "attempts": {"type": "array", "description": "the last 20, newest first",
                         "items": {"type": "object", "properties": {
                             "attempt": {"type": "integer"}, "at": _MS,
                             "status": _STR, "error": _NULLABLE_STR,
                             "latencyMs": _NULLABLE_INT, "response": _NULLABLE_STR}}}}}]},
    "JobAccepted": {"type": "object", "required": ["jobId"], "properties": {"jobId": _STR}},
    "Job": {
        "type": "object", "required": ["jobId", "state", "done", "total"],
        "properties": {"jobId": _STR, "state": _STR, "done": {"type": "integer"},
                       "total": {"type": "integer"}, "skipped": {"type": "integer"},
                       "kind": _STR, "integrationId": _STR, "createdAt": _MS,
                       "updatedAt": _MS},
    },
    "ActivityAccepted": {"type": "object", "required": ["activityId"],
                         "properties": {"activityId": _STR}},
    "SyncroAccepted": {"type": "object", "required": ["activityId", "accepted"],
                       "properties": {"activityId": _STR, "accepted": {"type": "boolean"}}},
    "SyncroWebhook": {
        "type": "object", "description": "Syncro Notification Center's webhook body",
        "properties": {"text": _STR, "link": _STR, "attributes": {"type": "object"}},
    },
    "TwilioWebhook": {
        "type": "object", "description": "Twilio's inbound message or status callback "
        "parameters, signed with X-Twilio-Signature",
        "properties": {"MessageSid": _STR, "AccountSid": _STR, "From": _STR, "To": _STR,
                       "Body": _STR, "MessageStatus": _STR},
        "additionalProperties": {"type": "string"},
    },
    "MetaWebhook": {
        "type": "object", "description": "a Messenger webhook (object: page), signed with "
        "X-Hub-Signature-256", "properties": {"object": _STR, "entry": {"type": "array"}},
    },
    "SlackEvent": {
        "type": "object", "description": "a Slack Events API envelope (url_verification or "
        "event_callback), signed with X-Slack-Signature",
        "properties": {"type": _STR, "challenge": _STR, "team_id": _STR,
                       "event": {"type": "object"}},
    },
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": _STR, "detail": {}, "loops": {"type": "array"}}},
}


def components() -> dict[str, Any]:
    """Every schema: the Structs' own, then the hand-written answers."""
    from switchboard.services.api import IntegrationCreate, IntegrationUpdate
    from switchboard.services.channels.syncro_actions import BODY_TYPES
    from switchboard.services.deliveries_api import RedeliverRequest, ReplayRequest
    from switchboard.services.hubs_api import HubCreate, HubUpdate
    from switchboard.services.sync_api import BODY_TYPES as SYNC_BODIES

    structs: list[Any] = [
        HubCreate, HubUpdate, IntegrationCreate, IntegrationUpdate, InboundActivity, Activity,
        DirectEnvelope, SystemEnvelope, DirectConfig, SystemConfig, SyncroConfig,
        TwilioSmsConfig, MessengerConfig, WebChatConfig, SlackConfig, RedeliverRequest,
        ReplayRequest, HubWindow, *BODY_TYPES, *SYNC_BODIES]
    _, schemas = msgspec.json.schema_components(structs,
                                                ref_template="#/components/schemas/{name}")
    # Each channel's configuration (the console builds its forms from these): secrets are
    # write-only, shown masked on reads.
    for cls in CONFIG_TYPES.values():
        props = schemas[cls.__name__]["properties"]
        for name in cls.SECRET_FIELDS:
            wire = cls.__struct_encode_fields__[cls.__struct_fields__.index(name)]
            props[wire] = {**props[wire], "writeOnly": True}
    schemas["ConnectorSpec"]["properties"]["credentials"]["writeOnly"] = True
    # Names are accepted in any case (switchboard.names); the schemas show the canonical.
    schemas["IntegrationCreate"]["properties"]["channelId"]["description"] = (
        "a channel name in any case (Direct, TwilioSMS, …) or Hubster's numeric code")
    return schemas | ANSWERS


def paths() -> dict[str, Any]:
    """Every route of the app, by path."""
    from switchboard.services.channels.syncro_actions import openapi_paths as syncro_paths
    from switchboard.services.sync_api import openapi_paths as sync_paths

    hub = path_param("hubId")
    iid = path_param("integrationId")
    compat = {"name": "compat", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["hubster", "none"]},
              "description": "hubster: answer as Hubster's API does (200 on create, numeric "
                             "codes on reads, the seed's key spellings); none: the default "
                             "answers, also on a hub whose compat is hubster (any case). "
                             "`Accept: application/vnd.hubster+json` also asks for hubster."}
    integration_list = {"type": "array", "items": _ref("Integration")}
    out: dict[str, Any] = {
        "/api/v1/hubs": {
            "post": op("Create a hub (admin token); returns its access token once", "HubCreate",
                       201, responses=(403, 409), answer="HubWithToken"),
            "get": op("List the hubs this token may see", responses=(),
                      answer={"type": "array", "items": _ref("Hub")}),
        },
        "/api/v1/hubs/{hubId}": {
            "parameters": [hub],
            "get": op("Get a hub (when its token was issued and rotated, never the token)",
                      responses=(), answer="Hub"),
            "patch": op("Set the hub's retry schedule (null: the deployment's), its compat "
                        "mode (hubster; none or null: default answers) or, admin only, its "
                        "name", "HubUpdate", responses=(403, 409), answer="Hub"),
            "delete": op("Delete a hub and all its integrations (admin token)", ok=204,
                         responses=(403,)),
        },
        "/api/v1/hubs/{hubId}/stats": {
            "parameters": [hub],
            "get": op("The hub's last hour in one-minute buckets: activities in, delivery "
                      "attempts out, outcomes and latency (the console's charts)",
                      responses=(), answer="HubWindow"),
        },
        "/api/v1/hubs/{hubId}/rotateToken": {
            "parameters": [hub],
            "post": op("Replace the hub's access token (admin or the hub's token); the new "
                       "one is returned once, the old one stops working",
                       responses=(409,), answer="HubWithToken"),
        },
        # One path for two things, as in Hubster: a hub id creates, an integration id
        # updates (POST); GET lists a hub's.
        "/api/v1/integrations/hubs/{id}": {
            "parameters": [path_param("id", "a hub id (create, list) or an integration id "
                                            "(POST: update)"), compat],
            "post": op("Create an integration in hub {id} (201), or update integration {id} "
                       "(200: the given configuration replaces the old one; a Direct "
                       "integration keeps its integrationType and signatureScheme unless "
                       "named)", "IntegrationCreate", 201, responses=(403, 409),
                       answer="Integration"),
            "get": op("List a hub's integrations (id is a hub id)", responses=(400,),
                      answer=integration_list),
        },
        "/api/v1/integrations/{integrationId}": {
            "parameters": [iid, compat],
            "get": op("Get an integration (secrets masked, no private key)",
                      responses=(400,), answer="Integration"),
            "patch": op("Update an integration: configuration is a JSON Merge Patch (RFC "
                        "7396) of the stored one (null removes a field), so "
                        "{\"configuration\": {\"regenerateKeys\": true}} alone regenerates "
                        "the keys", "IntegrationUpdate", responses=(409,),
                        answer="Integration"),
            "delete": op("Delete an integration", ok=204, responses=()),
        },
        "/api/v1/integrations/{integrationId}/deliveries": {
            "parameters": [iid] + [
                {"name": n, "in": "query", "required": False, "schema": schema}
                for n, schema in (
                    ("status", {"enum": ["delivered", "pending", "failed"]}),
                    ("since", {"type": "integer", "minimum": 0}),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    ("cursor", {"type": "string"}))],
            "get": op("An integration's deliveries, newest updated first", responses=(400,),
                      answer="DeliveryPage"),
        },
        "/api/v1/deliveries/{deliveryId}": {
            "parameters": [path_param("deliveryId")],
            "get": op("One delivery with its last 20 attempts", responses=(),
                      answer="DeliveryDetail"),
        },
        "/api/v1/integrations/{integrationId}/redeliver": {
            "parameters": [iid],
            "post": op("Redeliver one delivery, or all of a status since a time",
                       "RedeliverRequest", 202, responses=(409,), answer="JobAccepted"),
        },
        "/api/v1/integrations/{integrationId}/replay": {
            "parameters": [iid],
            "post": op("Replay every delivery of a window (at most 30 days)",
                       "ReplayRequest", 202, responses=(), answer="JobAccepted"),
        },
        "/api/v1/jobs/{jobId}": {
            "parameters": [path_param("jobId")],
            "get": op("A redeliver or replay job", responses=(), answer="Job"),
        },
        # ---- the ingress ----
        "/ingress/{integrationId}": {
            "parameters": [iid],
            "post": op(
                "A Direct integration's Standard Webhooks-signed activity (v1a, Ed25519: "
                "202 {activityId}), or a TwilioSMS integration's Twilio webhook (form, "
                "X-Twilio-Signature: 200 empty TwiML). Before the signature verifies, every "
                "refusal is the same 401 (but 408 for a body that does not arrive in time, "
                "413 for one announced too large). After it: 400 for a body that is not an "
                "activity, 404 conversation_not_found for an agent's or bot's answer to a "
                "conversation that does not exist in its hub, 409 for a paused "
                "integration, 429 over its rate, 503 when the broker cannot take it",
                ok=202, security=False, responses=(400, 401, 404, 408, 409, 413, 429, 503),
                answer="ActivityAccepted",
                request={"application/json": _ref("InboundActivity"),
                         "application/x-www-form-urlencoded": _ref("TwilioWebhook")}),
        },
        "/ingress/{integrationId}/{secret}": {
            "parameters": [iid, path_param("secret", "the Syncro integration's inbound "
                                                     "secret (shown once)")],
            "post": op("A Syncro Notification Center webhook to a Syncro integration's "
                       "secret inbound URL; a wrong or missing secret is the ingress's "
                       "one 401", ok=200, security=False,
                       responses=(400, 401, 408, 409, 413, 415, 429, 503),
                       answer="SyncroAccepted", request={"application/json":
                                                         _ref("SyncroWebhook")}),
        },
        "/ingress/meta": {
            "get": {**op("Meta's subscription handshake: hub.challenge echoed when "
                         "hub.verify_token is the configured one", security=False,
                         responses=(403, 429), answer={"type": "string"},
                         media="text/plain"),
                    "parameters": [
                        {"name": n, "in": "query", "required": True, "schema": _STR}
                        for n in ("hub.mode", "hub.verify_token", "hub.challenge")]},
            "post": op("Messenger webhooks for every Messenger integration (routed by Page "
                       "id; signed with the app secret): 200 once every activity is "
                       "durable", security=False, responses=(400, 401, 408, 413, 429, 503),
                       request={"application/json": _ref("MetaWebhook")}),
        },
        "/ingress/slack": {
            "post": op("Slack's Events API for every Slack integration (routed by team; "
                       "signed with the signing secret): url_verification answers the "
                       "challenge; an agent's reply in a thread the hub opened becomes an "
                       "activity", security=False, responses=(400, 401, 408, 413, 429, 503),
                       request={"application/json": _ref("SlackEvent")},
                       answer={"type": "object"}),
        },
        # ---- websockets ----
        "/v1/integrations/{integrationId}/stream": {
            "parameters": [iid],
            "get": op("Websocket: deliveries for a Direct integration without webhookUrl "
                      "(the bearer token in the Authorization header)", ok=101,
                      responses=(403,)),
        },
        "/v1/integrations/{integrationId}/feed": {
            "parameters": [iid],
            "get": op("Websocket: a live, read-only view of the deliveries to any "
                      "integration (the console's feed); the first frame authenticates: "
                      '{"type":"auth","token":"…"}', ok=101, security=False, responses=()),
        },
        # ---- WebChat ----
        "/webchat/{integrationId}": {
            "parameters": [iid],
            "get": op("A page running the WebChat widget full-window (to try it out)",
                      security=False, responses=(404,), answer={"type": "string"},
                      media="text/html"),
        },
        "/webchat/{integrationId}/widget.js": {
            "parameters": [iid],
            "get": op("The embeddable WebChat widget script", security=False,
                      responses=(404,), answer={"type": "string"}, media="text/javascript"),
        },
        "/webchat/{integrationId}/ws": {
            "parameters": [iid],
            "get": op("Websocket: a visitor's session (README: The websocket protocol); "
                      "the page's Origin must be one of allowedOrigins", ok=101,
                      security=False, responses=()),
        },
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
    # TwilioSMS's answer: Twilio reads TwiML.
    out["/ingress/{integrationId}"]["post"]["responses"]["200"] = {
        "description": "TwilioSMS: the webhook is durable; empty TwiML",
        "content": {"text/xml": {"schema": {"type": "string"}}}}
    out.update(syncro_paths(op, iid))  # /integrations/{id}/syncro/...
    out.update(sync_paths(op))  # /hubs/{hubId}/syncProfiles...
    _complete(out)
    # A bearer, but the metrics token (SWITCHBOARD_METRICS_TOKEN, else the admin token),
    # not the API's session: none of its 429 or 503.
    out["/metrics"]["get"]["security"] = _BEARER
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
                "application/json": {"schema": _ref("Error")}}}},
        },
    }
    document: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(spec))
    return document


def route_key(path: str) -> str:
    """A path with its parameters unnamed (`/a/{}`): how OpenAPI tells paths apart."""
    return re.sub(r"\{[^}]*\}", "{}", path)
