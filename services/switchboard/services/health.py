"""`GET /healthz` (liveness), `GET /readyz` (readiness) and `GET /metrics`
(Prometheus, behind a bearer token), for every service.

Liveness fails (503) once one of the process's essential loops has ended: a consume loop
that died would otherwise leave a process that answers HTTP but does no work, so the
orchestrator must restart it. A broker outage does not fail liveness (restarting every
pod would not bring the broker back); it fails readiness, which takes the pod out of the
load balancer until the broker answers and the registry view has caught up again.
"""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.errors import Unauthorized
from switchboard.keys import tokens_equal
from switchboard.metrics import CONTENT_TYPE
from switchboard.services.runtime import Runtime
from switchboard.supervision import Supervisor

# Set on SIGTERM under `serve` (see cli.DrainingServer): readiness fails from then on.
DRAINING = threading.Event()


def health_routes(runtime: Runtime, supervisor: Supervisor) -> list[Route]:
    async def healthz(request: Request) -> Response:
        dead = supervisor.dead()
        if dead:
            return JSONResponse({"status": "dead", "detail": dead}, status_code=503)
        return JSONResponse({"status": "ok", "loops": supervisor.names()})

    async def readyz(request: Request) -> Response:
        dead = supervisor.dead()
        if DRAINING.is_set():
            return JSONResponse({"status": "not_ready", "detail": "draining"}, status_code=503)
        ok, why = (False, "dead: " + ", ".join(dead)) if dead else await runtime.ready()
        return JSONResponse({"status": "ready" if ok else "not_ready", "detail": why},
                            status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        settings = runtime.settings
        expected = settings.metrics_token or settings.admin_token
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not expected or scheme.lower() != "bearer" or not tokens_equal(given, expected):
            raise Unauthorized("unauthenticated", "GET /metrics needs the metrics token "
                               "(SWITCHBOARD_METRICS_TOKEN, else the admin token)")
        await runtime.metrics.refresh()
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
