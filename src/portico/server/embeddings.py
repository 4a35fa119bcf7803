"""``POST /v1/embeddings``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.protocol.embeddings import EmbeddingRequest
from portico.runtime import Runtime
from portico.server.body import read_model


async def embeddings(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    req = await read_model(request, EmbeddingRequest, rt.cfg.server.max_body_bytes)
    state = request.scope["state"]
    state["model"] = req.model
    out, label = await rt.gateway.embeddings(req)
    state["deployment"] = label
    return Response(orjson.dumps(out), media_type="application/json", headers={"x-portico-model": label})
