"""``/admin/evals`` (eval runs and their results) and ``/admin/datasets`` (versioned datasets, and building one from
traces). Guarded by the master key like the rest of ``/admin``."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portico.evaluation.datasets import build_from_traces
from portico.protocol.errors import InvalidRequest, NotFound
from portico.runtime import Runtime
from portico.server.admin import parse_when
from portico.server.auth import require_admin
from portico.server.body import read_model
from portico.storage.evals import get_run, list_datasets, list_runs, pairs_of, results_of


def _json(data: object) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _brief(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's headline for lists: each variant's scorer means, and the gates' outcome."""
    if not summary:
        return None
    variants = {v: {s: x.get("mean") for s, x in st["scorers"].items()} for v, st in summary["variants"].items()}
    gates = summary.get("gates") or []
    return {"variants": variants, "gates": "fail" if any(g["status"] == "fail" for g in gates) else
            ("pass" if gates else None)}  # fmt: skip


async def list_evals(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    q = request.query_params
    try:
        limit = int(q.get("limit") or 100)
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000", param="limit")
    rows = await list_runs(rt.db, q.get("name") or None, limit)
    for r in rows:
        r["summary"] = _brief(r.get("summary"))
    return _json({"object": "list", "data": rows})


async def get_eval(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    run_id = request.path_params["run_id"]
    run = await get_run(rt.db, run_id)
    if run is None:
        raise NotFound(f"No eval run '{run_id}'", code="eval_not_found")
    results = await results_of(rt.db, run_id)
    return _json({"object": "eval.run", **run, "results": results, "pairs": await pairs_of(rt.db, run_id)})


async def get_datasets(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    return _json({"object": "list", "data": await list_datasets(rt.db)})


class FromTraces(BaseModel):
    model_config = ConfigDict(extra="forbid")
    application: str | None = None
    since: float | None = None
    until: float | None = None
    with_feedback: bool = False
    limit: int = Field(default=1000, ge=1, le=100_000)
    name: str | None = Field(default=None, min_length=1, max_length=200)


async def post_from_traces(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    body = await read_model(request, FromTraces, 64 * 1024)
    await rt.tracing.flush()
    return _json(await build_from_traces(rt.db, **body.model_dump()))


async def get_experiments(request: Request) -> Response:
    """Each experiment's variants: share, requests, and feedback metrics with 95% CIs; tests against the first."""
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    await rt.feedback.flush()
    since = parse_when(request.query_params.get("since"), "since")
    return _json({"object": "list", "data": await rt.experiments.report(since)})


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/experiments", get_experiments, methods=["GET"]),
        Route("/admin/evals", list_evals, methods=["GET"]),
        Route("/admin/evals/{run_id}", get_eval, methods=["GET"]),
        Route("/admin/datasets", get_datasets, methods=["GET"]),
        Route("/admin/datasets/from-traces", post_from_traces, methods=["POST"]),
    ]
