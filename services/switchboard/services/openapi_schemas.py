"""The OpenAPI document's schemas (`components.schemas`).

Request bodies are the msgspec Structs the routes decode: their JSON Schema comes from
`msgspec.json.schema_components`, then adjusted where the Struct cannot say it (secrets
write-only, names accepted in any case). Answers built as dicts have a hand-written
schema here (`ANSWERS`).
"""

from __future__ import annotations

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
from switchboard.integration_wire import IntegrationCreate, IntegrationUpdate
from switchboard.model import (
    Activity,
    ChannelId,
    DirectEnvelope,
    InboundActivity,
    IntegrationType,
    SystemEnvelope,
)
from switchboard.services.openapi_ops import ref

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
    "HubWithToken": {"allOf": [ref("Hub"), {
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
        "properties": {"items": {"type": "array", "items": ref("DeliverySummary")},
                       "nextCursor": _NULLABLE_STR},
    },
    "DeliveryDetail": {"allOf": [ref("DeliverySummary"), {
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

