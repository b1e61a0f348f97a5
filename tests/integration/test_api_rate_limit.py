"""The API's budget is per hub: one hub over it gets 429 + Retry-After, the others do not."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from tests.conftest import RunningHub, make_settings

RATE, BURST = 0.5, 5  # a token every 2 s: room for a loaded machine


async def test_a_hub_over_its_api_budget_gets_429_and_another_hub_is_served(
        broker: Any) -> None:
    hub = await RunningHub(make_settings(broker, api_rate_per_s=RATE, api_burst=BURST),
                           ["api"]).start()
    try:
        a_id, a_auth = await hub.create_hub("noisy")
        b_id, b_auth = await hub.create_hub("quiet")
        a_url, b_url = f"/api/v1/integrations/hubs/{a_id}", f"/api/v1/integrations/hubs/{b_id}"

        # Hub A spends its burst at once; the next request is refused.
        codes = [(await hub.client.get(a_url, headers=a_auth)).status_code
                 for _ in range(BURST + 1)]
        assert codes == [200] * BURST + [429], codes
        refused_at = time.monotonic()

        # While A is refused, B spends its own whole burst, interleaved with A's refusals.
        for _ in range(BURST):
            r = await hub.client.get(a_url, headers=a_auth)
            assert r.status_code == 429, r.text
            assert r.json()["errors"][0]["code"] == "rate_limited"
            assert r.headers["retry-after"].isdigit()
            retry_after = int(r.headers["retry-after"])
            assert 1 <= retry_after <= math.ceil(1 / RATE)
            r = await hub.client.get(b_url, headers=b_auth)
            assert r.status_code == 200, r.text
        # (Each refusal costs nothing: A's bucket refills at RATE while it is refused.)
        assert time.monotonic() - refused_at < 1 / RATE, "too slow to prove interleaving"

        # B's own budget is the same size: its next request is refused, A's state unchanged.
        r = await hub.client.get(b_url, headers=b_auth)
        assert r.status_code == 429 and r.headers["retry-after"].isdigit()
        # The admin (operator) token is not a hub's and is not limited by one.
        assert (await hub.client.get(a_url, headers=hub.admin)).status_code == 200

        # Retry-After tells the truth: after it, A is served again.
        await asyncio.sleep(retry_after)
        r = await hub.client.get(a_url, headers=a_auth)
        assert r.status_code == 200, r.text
    finally:
        await hub.stop()
