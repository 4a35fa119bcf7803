"""``/admin/applications/{name}/pipeline``: an application's pipeline as data (steps, branch arms with their
conditions, loops, calls), for the dashboard's drawing. Guarded by the master key like the rest of ``/admin``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.flow.graph import graph
from portico.protocol.errors import NotFound
from portico.runtime import Runtime
from portico.server.auth import require_admin


async def get_pipeline(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    name = request.path_params["name"]
    app = next((a for a in rt.cfg.applications if a.name == name), None)
    if app is None:
        raise NotFound(f"no application '{name}'", param="name")
    body = graph(app.name, app.model, app.version, rt.applications[app.name])
    return Response(orjson.dumps(body), media_type="application/json")


def routes() -> list[Route]:
    return [Route("/admin/applications/{name}/pipeline", get_pipeline, methods=["GET"])]
