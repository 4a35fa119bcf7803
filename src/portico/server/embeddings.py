"""``POST /v1/embeddings``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.pipeline.context import Attempt
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import PorticoError
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import read_model


async def embeddings(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    req = await read_model(request, EmbeddingRequest, rt.cfg.server.max_body_bytes)
    state = request.scope["state"]
    state["model"] = req.model
    texts = req.texts() or []
    adm = await rt.control.admit(caller, req.model, lambda: sum(len(t) for t in texts))
    tries: list[Attempt] = []
    common = {"request_id": state["request_id"], "endpoint": "embeddings", "application": None}
    try:
        out, label = await rt.gateway.embeddings(req, tries)
    except PorticoError as e:
        rec = await rt.control.settle(adm, status=e.status, usage=None, cost=0.0, deployment=None,
                                      error_type=e.code or e.type, attempts=len(tries), **common)  # fmt: skip
        if rec is not None:
            rt.metrics.observe(rec, attempts=[(a.deployment, a.status) for a in tries])
            rt.tracing.embeddings(rec, texts, tries, adm.started)
        e.headers = {**adm.headers, **e.headers}
        raise
    state["deployment"] = label
    usage = out.get("usage")
    rec = await rt.control.settle(adm, status=200, usage=usage, cost=rt.prices.cost(req.model, label, usage),
                                  deployment=label, attempts=len(tries), **common)  # fmt: skip
    if rec is not None:
        rt.metrics.observe(rec, attempts=[(a.deployment, a.status) for a in tries])
        rt.tracing.embeddings(rec, texts, tries, adm.started)
    return Response(orjson.dumps(out), media_type="application/json",
                    headers={"x-portico-model": label, **adm.headers})  # fmt: skip
