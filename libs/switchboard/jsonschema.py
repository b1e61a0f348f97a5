"""JSON Schema of every public payload, generated from the Structs.

`schemas/` holds the checked-in copies; a test fails when they drift from the code.
Regenerate with `./switchboard schemas --write`.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from switchboard.channels import (
    DirectConfig,
    MessengerConfig,
    SlackConfig,
    SyncroConfig,
    SystemConfig,
    TwilioSmsConfig,
    WebChatConfig,
)
from switchboard.model import (
    Activity,
    DeadLetter,
    Delivery,
    DirectEnvelope,
    InboundActivity,
    SystemEnvelope,
)
from switchboard.providers import syncro_call, syncro_records
from switchboard.sync import profiles as sync_profiles
from switchboard.sync import records as sync_records

PUBLIC: dict[str, Any] = {
    "activity": Activity,
    "inbound-activity": InboundActivity,
    "delivery": Delivery,
    "dead-letter": DeadLetter,
    "direct-envelope": DirectEnvelope,
    "system-envelope": SystemEnvelope,
    "config-direct": DirectConfig,
    "config-system": SystemConfig,
    "config-twiliosms": TwilioSmsConfig,
    "config-messenger": MessengerConfig,
    "config-webchat": WebChatConfig,
    "config-slack": SlackConfig,
    "config-syncro": SyncroConfig,
    # The Syncro actions' request bodies (/integrations/{id}/syncro/...).
    "syncro-customer": syncro_records.CustomerFields,
    "syncro-ticket-create": syncro_records.TicketCreate,
    "syncro-ticket-update": syncro_records.TicketUpdate,
    "syncro-lead": syncro_records.LeadFields,
    "syncro-comment": syncro_records.CommentCreate,
    "syncro-call": syncro_call.RawCall,
    # Two-way record sync: the canonical record of each entity (tagged by `kind`).
    **{f"sync-{kind}": typ for kind, typ in sync_records.KINDS.items()},
    # Sync profiles' request bodies (/api/v1/hubs/{hubId}/syncProfiles...).
    "sync-profile-create": sync_profiles.ProfileCreate,
    "sync-profile-update": sync_profiles.ProfileUpdate,
    "sync-run": sync_profiles.RunRequest,
    "sync-allow": sync_profiles.AllowSync,
}


def _clean_descriptions(node: Any) -> Any:
    """Dedent every `description` the way Python 3.13 stores docstrings.

    Whether msgspec (or the interpreter) already dedents them depends on their versions;
    doing it here keeps the checked-in schemas independent of both.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value) if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def schemas() -> dict[str, bytes]:
    """File name → formatted JSON Schema bytes, deterministic."""
    out: dict[str, bytes] = {}
    for name, typ in PUBLIC.items():
        schema = _clean_descriptions(msgspec.json.schema(typ))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = name
        out[f"{name}.schema.json"] = msgspec.json.format(
            msgspec.json.encode(schema, order="sorted"), indent=2
        ) + b"\n"
    return out
