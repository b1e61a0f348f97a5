"""The `start` messages that greet a new conversation, as deliveries. Pure.

When a customer's message opens a conversation (its first, or its first after the
conversation ended), the customer is greeted, before anything else reaches them in it:

1. by its own Customer integration's `start` messages, as ``message:bot`` (WebChat,
   TwilioSMS, Messenger, Direct);
2. then by every active Agent and Bot integration of the hub that has `start` messages
   (Direct), in integration id order, as ``message:agent`` / ``message:bot`` from that
   integration.

Each greeting goes to the customer's integration only. Its ids derive from the
conversation and its opening time, so a redelivered or re-routed opening is deduplicated
and a conversation that ends and opens again is greeted again.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchboard.conversations import ConversationRecord
from switchboard.ids import activity_id, delivery_id
from switchboard.model import Activity, Delivery, IntegrationType, Message, Sender
from switchboard.registry import IntegrationRecord

__all__ = ["start_deliveries"]

_GREETERS = {IntegrationType.AGENT: "message:agent", IntegrationType.BOT: "message:bot"}


def _start(rec: IntegrationRecord) -> list[Message]:
    start: list[Message] = getattr(rec.configuration, "start", [])
    return start


def start_deliveries(opener: Activity, conversation: ConversationRecord,
                     hub_integrations: Iterable[IntegrationRecord]) -> list[Delivery]:
    """The greetings of the conversation `opener` (a customer's message) just opened, in
    the order the customer must receive them."""
    everyone = list(hub_integrations)
    customer = next((r for r in everyone if r.integration_id == opener.integration_id), None)
    if customer is None or customer.integration_type is not IntegrationType.CUSTOMER:
        return []
    greeters: list[tuple[IntegrationRecord, str]] = [(customer, "message:bot")]
    greeters += sorted(((r, _GREETERS[r.integration_type]) for r in everyone
                        if r.integration_type in _GREETERS and r.active and _start(r)),
                       key=lambda pair: pair[0].integration_id)
    out: list[Delivery] = []
    for greeter, kind in greeters:
        for i, message in enumerate(_start(greeter)):
            greeting = Activity(
                activity_id=activity_id(
                    greeter.integration_id,
                    f"start:{opener.conversation_id}:{conversation.created_at}:{i}"),
                hub_id=opener.hub_id,
                integration_id=greeter.integration_id,
                channel_id=greeter.channel_id.value,
                type=kind,
                conversation_id=opener.conversation_id,
                sender=Sender(id=f"hub:{greeter.integration_id}", name=greeter.name),
                timestamp=conversation.created_at,
                message=message,
            )
            out.append(Delivery(
                delivery_id=delivery_id(greeting.activity_id, customer.integration_id),
                hub_id=opener.hub_id,
                destination_id=customer.integration_id,
                conversation_id=opener.conversation_id,
                activity=greeting,
                created_at=conversation.created_at,
            ))
    return out
