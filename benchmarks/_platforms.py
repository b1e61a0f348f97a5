"""The platform fakes of `sync_throughput.py`, in their own process: the reference fake
(tests/fakes/platform.py, the contract) with its listings, e-mail lookups and writes made
O(log n) instead of O(n) — the reference scans every record per request, which at
100,000 contacts would measure the fake — and no rate limit.

    python benchmarks/_platforms.py --ports A,B,C --contacts N

Serves one platform per port (the first preloaded with N contacts of user u1, token
``bench``), plus test hooks on each: ``GET /_bench/count`` (live contacts) and
``POST /_bench/edit?n=K`` (K contacts edited as a user would). Prints ``ready`` when up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.platform import (
    KINDS,
    FakePlatform,
    _after,
    _fold,
    error,
)
from tests.support import LoopbackServer

TOKEN = "bench"


class _Tracked(dict[str, dict[str, Any]]):
    """A kind's records; every replacement bumps `version` (the indexes are rebuilt
    lazily from it)."""

    version = 0

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.version += 1
        super().__setitem__(key, value)


class FastPlatform(FakePlatform):
    """The reference fake with indexed listings and e-mail lookups (same answers)."""

    def __init__(self, port: int) -> None:
        # Unique e-mails are not enforced (the reference scans every contact per write);
        # the benchmark's e-mails are unique anyway.
        super().__init__(page_size=200, unique_emails=False)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.records = {k: _Tracked() for k in KINDS}
        self._order: dict[str, tuple[int, list[tuple[int, str]], list[dict[str, Any]]]] = {}
        self._emails: dict[str, tuple[int, dict[str, list[dict[str, Any]]]]] = {}
        self.add_user(TOKEN, email="bench@platform.test")
        # The reference's routes, behind the benchmark's hooks.
        app = Starlette(routes=[
            Route("/_bench/count", self._count),
            Route("/_bench/edit", self._edit, methods=["POST"]),
            Route("/me", self._me, methods=["GET"]),
            Route("/users", self._users, methods=["GET"]),
            Route("/me/{res}", self._mine, methods=["GET"]),
            Route("/{res}", self._collection, methods=["GET", "POST"]),
            Route("/{res}/{id}", self._one, methods=["GET", "PATCH", "DELETE"]),
        ])
        self._http = LoopbackServer(app, port)

    def edit(self, kind: Any, rid: str, **values: Any) -> dict[str, Any]:
        rec = super().edit(kind, rid, **values)
        self.records[kind][rid] = rec  # in place upstream: count it as a change
        return rec

    def _sorted(self, kind: str) -> tuple[list[tuple[int, str]], list[dict[str, Any]]]:
        records = self.records[kind]
        assert isinstance(records, _Tracked)
        cached = self._order.get(kind)
        if cached is None or cached[0] != records.version:
            recs = sorted(records.values(), key=lambda r: (r["modifiedAt"], r["id"]))
            cached = (records.version, [(r["modifiedAt"], r["id"]) for r in recs], recs)
            self._order[kind] = cached
        return cached[1], cached[2]

    async def _mine(self, request: Request) -> Response:
        user = self._auth(request)
        if isinstance(user, Response):
            return user
        kind = self._kind(request)
        if isinstance(kind, Response):
            return kind
        q = request.query_params
        limit = min(500, max(1, int(q.get("limit", self.page_size))))
        keys, recs = self._sorted(kind)
        since = q.get("updatedSince")
        start = 0 if since is None else bisect.bisect_left(keys, (int(since), ""))
        if "cursor" in q:
            start = max(start, bisect.bisect_right(keys, _after(q["cursor"])))
        page: list[dict[str, Any]] = []
        i = start
        while i < len(recs) and len(page) <= limit:
            r = recs[i]
            if r.get("ownerId") == user.user_id and (since is not None
                                                     or not r.get("deleted")):
                page.append(r)
            i += 1
        more = len(page) > limit
        page = page[:limit]
        return JSONResponse({"records": [self._public(r, kind) for r in page],
                             "nextCursor": _cursor_of(page[-1]) if more else None})

    def _lookup(self, kind: Any, request: Request) -> list[dict[str, Any]] | Response:
        q = request.query_params
        if "email" not in q:
            return super()._lookup(kind, request)
        records = self.records[kind]
        assert isinstance(records, _Tracked)
        cached = self._emails.get(kind)
        if cached is None or cached[0] != records.version:
            index: dict[str, list[dict[str, Any]]] = {}
            for r in records.values():
                if not r.get("deleted") and r.get("email"):
                    index.setdefault(_fold(r["email"]), []).append(r)
            cached = self._emails[kind] = (records.version, index)
        return [r for e in {_fold(e) for e in q.getlist("email")} for r in cached[1].get(e, [])]

    async def _count(self, request: Request) -> Response:
        return JSONResponse({"contacts": sum(1 for r in self.records["contact"].values()
                                             if not r.get("deleted"))})

    async def _edit(self, request: Request) -> Response:
        n = int(request.query_params.get("n", "100"))
        live = [r for r in self.records["contact"].values() if not r.get("deleted")]
        if len(live) < n:
            return error(400, "bad_request", "not that many contacts")
        step = len(live) // n
        for i in range(n):
            r = live[i * step]
            self.edit("contact", r["id"], title=f"edited {r['title'] or ''}".strip()[:100])
        return JSONResponse({"edited": n})


def _cursor_of(rec: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{rec['modifiedAt']}:{rec['id']}".encode()).decode()


async def serve(ports: list[int], contacts: int) -> None:
    fakes = [FastPlatform(p) for p in ports]
    for i in range(contacts):
        fakes[0].add("contact", firstName=f"First{i}", lastName=f"Last{i}",
                     email=f"c{i}@bench{i % 97}.test", phone=f"+1555{i:07d}", title="")
    for f in fakes:
        await f.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for f in fakes:
            await f.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--contacts", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.run(serve([int(p) for p in args.ports.split(",")], args.contacts))
    except ImportError:  # pragma: no cover
        asyncio.run(serve([int(p) for p in args.ports.split(",")], args.contacts))


if __name__ == "__main__":
    main()
