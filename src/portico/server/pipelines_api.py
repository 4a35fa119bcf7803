"""``/admin/applications``: the configured applications (model, version, step count, the experiment splitting their
traffic), and ``/admin/applications/{name}/pipeline``: one application's pipeline as data (steps, branch arms with
their conditions, loops, calls), for the dashboard's Applications tab and trace page. Guarded by the master key
like the rest of ``/admin``."""

from __future__ import annotations

from typing import Any

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


def _count(steps: list[dict[str, Any]]) -> int:
    """Steps in a graph, counting those inside arms, loops, calls and parallel groups."""
    n = 0
    for s in steps:
        if s["kind"] == "step":
            n += 1
        else:  # a construct counts the steps inside it (a branch's arms, the body of a loop, call or group)
            n += _count([st for a in s.get("arms", []) for st in a["steps"]] + s.get("steps", []))
    return n


async def list_applications(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    experiments = {e.application: e for e in rt.cfg.experiments}
    data = []
    for app in rt.cfg.applications:
        g = graph(app.name, app.model, app.version, rt.applications[app.name])
        exp = experiments.get(app.name)
        data.append({
            "object": "application", "name": app.name, "model": app.model, "version": app.version,
            "steps": _count(g["steps"]),
            "experiment": None if exp is None else {
                "name": exp.name, "sticky": exp.sticky, "bandit": exp.bandit is not None,
                "variants": [v.model_dump(mode="json", exclude_none=True) for v in exp.variants]},
        })  # fmt: skip
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


def routes() -> list[Route]:
    return [
        Route("/admin/applications", list_applications, methods=["GET"]),
        Route("/admin/applications/{name}/pipeline", get_pipeline, methods=["GET"]),
    ]
