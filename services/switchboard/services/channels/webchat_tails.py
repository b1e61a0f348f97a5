"""The WebChat gateway's shared tails (`Tails`): one live reader of the `deliveries`
partition per (integration, process), started by its first socket and stopped with its
last, so a thousand visitors of one integration cost one consumer (the tail itself is
`webchat_feed.Tail`).
"""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from switchboard.services.channels.webchat_feed import Closed, Tail
from switchboard.services.runtime import Runtime
from switchboard.services.stream_protocol import CLOSE_TRY_AGAIN
from switchboard.supervision import Supervisor

__all__ = ["Tails"]


class Tails:
    """Reference-counted tails by integration id.

    `supervisor` watches the tails (a dead tail fails liveness); the gateway sets it on
    start, since tails start with a socket, outside any start-up context.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._tails: dict[str, Tail] = {}
        self._lock = asyncio.Lock()
        self.supervisor: Supervisor | None = None

    def __len__(self) -> int:
        return len(self._tails)

    async def acquire(self, integration_id: str, tp: TopicPartition) -> Tail:
        """The integration's running tail on `tp` (started if need be), one more socket on it."""
        async with self._lock:
            tail = self._tails.get(integration_id)
            if tail is None or tail.failed or tail.tp != tp:
                if tail is not None:
                    # Its sockets see `failed` (or their partition changed) and reconnect.
                    del self._tails[integration_id]
                tail = Tail(self._runtime, tp, integration_id, self.supervisor)
                try:
                    await tail.start()
                except Exception as exc:
                    raise Closed(CLOSE_TRY_AGAIN, "broker unavailable") from exc
                self._tails[integration_id] = tail
            tail.refs += 1
            return tail

    async def release(self, tail: Tail) -> None:
        """One socket less on `tail`; the last one stops it."""
        async with self._lock:
            tail.refs -= 1
            if tail.refs > 0:
                return
            if self._tails.get(tail.integration_id) is tail:
                del self._tails[tail.integration_id]
        await tail.stop()

    async def stop(self) -> None:
        """Stop every tail (the gateway is stopping; their sockets are closed first)."""
        async with self._lock:
            tails = list(self._tails.values())
            self._tails.clear()
        for tail in tails:
            await tail.stop()
