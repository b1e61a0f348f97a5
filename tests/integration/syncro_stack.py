"""A second hub process calling Syncro, for `test_syncro_budget`: its own Runtime (broker
connections, budget reader) and `SyncroClient`, settings from the environment.

``python -m tests.integration.syncro_stack SUBDOMAIN TOKEN COUNT PATH`` sends COUNT
``GET PATH`` requests at once (each waits for its slot), prints ``ready`` once started
and ``done`` at the end; any answer but 200 fails the process.
"""

from __future__ import annotations

import asyncio
import sys

from switchboard.services.channels.syncro_client import SyncroClient
from switchboard.services.runtime import Runtime
from switchboard.settings import Settings


async def main(subdomain: str, token: str, count: int, path: str) -> None:
    runtime = Runtime(Settings.from_env())
    await runtime.start()
    try:
        client = SyncroClient(runtime)
        print("ready", flush=True)

        async def one() -> None:
            resp = await client.request(subdomain, token, "GET", path)
            if resp.status_code != 200:
                raise SystemExit(f"{path}: HTTP {resp.status_code}")

        await asyncio.gather(*(one() for _ in range(count)))
        print("done", flush=True)
    finally:
        await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
