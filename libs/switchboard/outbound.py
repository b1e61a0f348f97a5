"""The contract between the deliverer and whatever sends a delivery somewhere.

A `Sender` makes one attempt and says what it means (`Attempt`); the deliverer owns
timeouts, concurrency, retries and dead-lettering.
"""

from __future__ import annotations

from typing import Protocol

from msgspec import Struct

from switchboard.model import Delivery
from switchboard.registry import IntegrationRecord
from switchboard.retry import Outcome


class Attempt(Struct, frozen=True, kw_only=True):
    """The result of one try at delivering; `reason` is a short code, never a secret.

    `response` is the start of the answer's body, for the delivery log (senders may leave
    it out; the log keeps at most its first 1 KB).
    """

    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    reason: str = ""
    response: bytes | None = None


SKIPPED = "gateway_served"


class Sender(Protocol):
    """Delivers to one kind of destination (a webhook, a provider's API).

    Called once per attempt, under the deliverer's timeout and concurrency bounds. Must
    not raise for an ordinary failure: return an `Attempt` saying whether to retry.
    """

    async def send(self, delivery: Delivery, destination: IntegrationRecord) -> Attempt: ...


def classify_provider_status(status: int) -> Outcome:
    """A provider API's answer: 2xx sent; 408, 425, 429 and 5xx worth retrying; other 4xx
    will never succeed (bad number, blocked user, revoked token) and fail permanently."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.PERMANENT
