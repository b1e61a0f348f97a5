"""JSON Schema of every public payload, generated from the Structs.

`schemas/` holds the checked-in copies; a test fails when they drift from the code.
Regenerate with `./switchboard schemas --write`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from switchboard.channels import (
    DirectConfig,
    MessengerConfig,
    SlackConfig,
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
}


def schemas() -> dict[str, bytes]:
    """File name → formatted JSON Schema bytes, deterministic."""
    out: dict[str, bytes] = {}
    for name, typ in PUBLIC.items():
        schema = msgspec.json.schema(typ)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = name
        out[f"{name}.schema.json"] = msgspec.json.format(
            msgspec.json.encode(schema, order="sorted"), indent=2
        ) + b"\n"
    return out
