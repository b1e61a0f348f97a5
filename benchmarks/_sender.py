"""Baseline for the deliverer benchmarks: a raw aiohttp loop POSTing signed webhooks.

What a deliverer has to do at the least, in one process: for each prepared delivery, sign
``{id}.{timestamp}.{body}`` with the destination's Ed25519 key (switchboard.webhooks.Signer,
as the deliverer does) and POST it with aiohttp's client, keeping at most ``concurrency``
requests in flight overall, ``per_destination`` per destination and ``per_hub`` per hub.
No Kafka, no lanes, no retries, no bookkeeping. Reads a job file written by the benchmark
(orjson):

    {"destinations": [[url, whsk_secret, hub_index], ...],
     "requests": [[destination_index, webhook_id, body], ...],
     "concurrency": 256, "per_destination": 8, "per_hub": 64, "timeout_s": 10,
     "linger_s": 3}

and prints ``{"sent": n, "statuses": {...}, "seconds": s}`` when done, then stays
``linger_s`` seconds so the benchmark can still read its CPU time.

    python benchmarks/_sender.py JOB.json
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from switchboard.webhooks import Signer


async def blast(job: dict) -> dict:  # type: ignore[type-arg]
    destinations = job["destinations"]
    requests = job["requests"]
    signers = [Signer(ed25519=[secret]) for _, secret, _ in destinations]
    per_dest = [asyncio.Semaphore(job["per_destination"]) for _ in destinations]
    hubs = 1 + max(hub for _, _, hub in destinations)
    per_hub = [asyncio.Semaphore(job["per_hub"] or 1_000_000) for _ in range(hubs)]
    statuses: collections.Counter[int] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=job["concurrency"], limit_per_host=0,
                                     keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=job["timeout_s"])
    items = iter(requests)
    start = time.perf_counter()
    async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent"),
            trust_env=False) as session:

        async def worker() -> None:
            for dest, wid, body in items:
                url, _, hub = destinations[dest]
                data = body.encode()
                async with per_dest[dest], per_hub[hub]:
                    ts = int(time.time())
                    headers = {
                        "content-type": "application/json",
                        "user-agent": "Switchboard/0.1",
                        "webhook-id": wid,
                        "webhook-timestamp": str(ts),
                        "webhook-signature": signers[dest].sign(wid, ts, data),
                    }
                    try:
                        async with session.post(url, data=data, headers=headers,
                                                allow_redirects=False) as resp:
                            await resp.read()
                            statuses[resp.status] += 1
                    except (aiohttp.ClientError, TimeoutError):
                        statuses[0] += 1

        await asyncio.gather(*(worker() for _ in range(job["concurrency"])))
    return {"sent": sum(statuses.values()), "statuses": {str(k): v for k, v in statuses.items()},
            "seconds": time.perf_counter() - start}


def main() -> None:
    job = orjson.loads(Path(sys.argv[1]).read_bytes())
    import uvloop

    result = uvloop.run(blast(job))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    # Stay a moment, so the benchmark can still read our CPU time after the last answer.
    time.sleep(job.get("linger_s", 0))


if __name__ == "__main__":
    main()
