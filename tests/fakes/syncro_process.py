"""The Syncro fake in a process of its own, for tests that count when requests arrive.

A fake served by the test's own event loop stamps a request when that loop gets to it: a
pause of the test process (its other tasks, a full garbage collection on a loaded
machine) holds requests in the socket and stamps them together, as if they had arrived
at once. In its own process the fake stamps them as they come (``time.monotonic`` is one
clock for every process of the host, so the stamps compare with the test's).

``python -m tests.fakes.syncro_process SUBDOMAIN TOKEN`` prints the fake's URL, then
serves until its standard input closes. ``GET {url}/_log/{subdomain}`` answers the
account's ``{"requests": [...], "paths": [...]}``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.syncro import FakeSyncro

__all__ = ["SyncroProcess"]


class SyncroProcess:
    """A `FakeSyncro` with one account, in a child process."""

    def __init__(self, subdomain: str, token: str) -> None:
        self.subdomain = subdomain
        self.token = token
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    def api_url(self) -> str:
        """The value of ``SWITCHBOARD_SYNCRO_API_URL`` for this fake."""
        return self.url + "/{subdomain}/api/v1"

    async def start(self) -> SyncroProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, self.subdomain, self.token,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line.startswith(b"http://"):
            raise RuntimeError(f"the Syncro fake did not start: {line!r}")
        self.url = line.decode().strip()
        return self

    async def log(self) -> tuple[list[float], list[str]]:
        """The account's request times (monotonic) and paths, in arrival order."""
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"{self.url}/_log/{self.subdomain}")
        resp.raise_for_status()
        body = resp.json()
        return body["requests"], body["paths"]

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _serve(subdomain: str, token: str) -> None:
    fake = FakeSyncro()
    account = fake.add_account(subdomain, token)

    async def log(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"requests": account.requests, "paths": account.paths}
        return JSONResponse(body)

    fake.app.router.routes.append(Route("/_log/{sub}", log, methods=["GET"]))
    await fake.start()
    print(fake.url, flush=True)
    loop = asyncio.get_running_loop()
    # Serve until the test closes our stdin (or exits).
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    await fake.stop()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2]))
