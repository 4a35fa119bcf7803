"""``GET /admin/tools``: the configured tools and the health of their sources. Guarded by the master key."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.actions.describe import describe
from portico.runtime import Runtime
from portico.server.auth import require_admin


async def list_tools(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    return Response(orjson.dumps(describe(rt.tools)), media_type="application/json")


def routes() -> list[Route]:
    return [Route("/admin/tools", list_tools, methods=["GET"])]
