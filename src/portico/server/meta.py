"""``GET /v1/models``, ``/v1/models/{id}``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.observability.metrics import CONTENT_TYPE
from portico.protocol.errors import ModelNotFound
from portico.runtime import Runtime
from portico.server.auth import caller_of, require_admin


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _model_obj(rt: Runtime, name: str, kind: str) -> dict:
    return {"id": name, "object": "model", "created": rt.started_at, "owned_by": "portico", "portico_type": kind}


async def _visible(request: Request) -> list[tuple[str, str]]:
    """The models and applications the caller may use: a key sees its allow-list; with auth on, no key is a 401."""
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    key = caller.key
    return [(n, k) for n, k in rt.model_names() if key is None or key.allows(n)]


async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    return _json({"object": "list", "data": [_model_obj(rt, n, k) for n, k in await _visible(request)]})


async def get_model(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    name = request.path_params["model"]
    for n, k in await _visible(request):
        if n == name:
            return _json(_model_obj(rt, n, k))
    raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", param="model")


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready only when every deployment's backend is loaded (local models take a few seconds)."""
    rt: Runtime = request.app.state.runtime
    backends = rt.gateway.readiness()
    ready = all(v == "ready" for v in backends.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "deployments": backends,
        "inflight": rt.gateway.inflight(),
        "breakers": rt.gateway.breakers(),
    }
    return _json(body, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text format. Guarded like the admin API when a master key is configured."""
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE)
