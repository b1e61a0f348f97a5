"""`GET /healthz` (liveness) and `GET /readyz` (readiness), for every service.

Liveness fails (503) once one of the process's essential loops has ended: a consume loop
that died would otherwise leave a process that answers HTTP but does no work, so the
orchestrator must restart it. A broker outage does not fail liveness (restarting every
pod would not bring the broker back); it fails readiness, which takes the pod out of the
load balancer until the broker answers and the registry view has caught up again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.services.runtime import Runtime
from switchboard.supervision import Supervisor


def health_routes(runtime: Runtime, supervisor: Supervisor) -> list[Route]:
    async def healthz(request: Request) -> Response:
        dead = supervisor.dead()
        if dead:
            return JSONResponse({"status": "dead", "detail": dead}, status_code=503)
        return JSONResponse({"status": "ok", "loops": supervisor.names()})

    async def readyz(request: Request) -> Response:
        dead = supervisor.dead()
        ok, why = (False, "dead: " + ", ".join(dead)) if dead else await runtime.ready()
        return JSONResponse({"status": "ready" if ok else "not_ready", "detail": why},
                            status_code=200 if ok else 503)

    return [Route("/healthz", healthz), Route("/readyz", readyz)]
