"""``POST /v1/chat/completions``: authenticate → admit → pipeline → encode → settle (usage, spend, tokens)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.gateway.control import Admission
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import PorticoError, UpstreamError
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import read_model
from portico.server.sse import SSEResponse, completion_as_chunks, encode_events


async def chat_completions(request: Request) -> Response | SSEResponse:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    req = await read_model(request, ChatCompletionRequest, rt.cfg.server.max_body_bytes)
    pipeline, application = rt.pipeline_for(req.model)
    state = request.scope["state"]
    state["model"] = req.model
    adm = await rt.control.admit(caller, req.model, lambda: sum(len(m.text()) for m in req.messages))
    ctx = RequestContext(request=req, request_id=state["request_id"], model=req.model, application=application,
                         caller={"key": caller.name, "key_id": caller.key.id if caller.key else None,
                                 "tools": caller.key.tools if caller.key else None})  # fmt: skip
    cache_control = request.headers.get("cache-control")
    if cache_control:
        ctx.state["http.cache_control"] = cache_control
    try:
        await pipeline.run(ctx)
    except PorticoError as e:
        await _settle(rt, adm, ctx, e.status, e.code or e.type)
        e.headers = {**adm.headers, **e.headers}
        raise
    except Exception:
        await _settle(rt, adm, ctx, 500, "internal_error")  # the middleware logs it and answers 500
        raise
    answered = ctx.deployment or f"portico/{ctx.answered_by}"
    state["deployment"] = answered
    headers = {"x-portico-model": answered, "x-portico-attempts": str(len(ctx.attempts)), **adm.headers,
               **ctx.headers}  # fmt: skip
    if req.stream:
        chunks = ctx.stream if ctx.stream is not None else completion_as_chunks(_required(ctx.response))
        return SSEResponse(encode_events(_settled(rt, adm, ctx, chunks), req.wants_usage_in_stream), headers)
    await _settle(rt, adm, ctx, 200)
    return Response(orjson.dumps(_required(ctx.response)), media_type="application/json", headers=headers)


async def _settled(
    rt: Runtime, adm: Admission, ctx: RequestContext, chunks: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """Pass the stream through; book it when it ends — completed (200), failed, or abandoned by the client."""
    status, error = 200, None
    n = 0
    try:
        async for chunk in chunks:
            if n == 0:
                ctx.state["server.ttft"] = time.perf_counter() - adm.started
            n += 1
            yield chunk
    except PorticoError as e:
        status, error = e.status, e.code or e.type
        raise
    except (asyncio.CancelledError, GeneratorExit):
        status, error = 499, "client_disconnected"
        raise
    finally:
        ctx.state["server.chunks"] = n
        await _settle(rt, adm, ctx, status, error)


async def _settle(rt: Runtime, adm: Admission, ctx: RequestContext, status: int, error: str | None = None) -> None:
    rec = await rt.control.settle(
        adm, request_id=ctx.request_id, endpoint="chat", status=status, usage=ctx.usage,
        cost=rt.prices.request_cost(ctx), deployment=ctx.deployment,
        application=ctx.application, attempts=len(ctx.attempts), error_type=error,
    )  # fmt: skip
    if rec is not None:
        rt.metrics.observe(rec, ttft=ctx.state.get("server.ttft"), chunks=ctx.state.get("server.chunks", 0),
                           attempts=[(a.deployment, a.status) for a in ctx.attempts])  # fmt: skip
        rt.tracing.chat(ctx, rec)  # builds the span tree only; serialising and writing happen in the background


def _required(response: dict | None) -> dict:
    if response is None:  # a pipeline that ends without an answer is a bug in a step, not the client's fault
        raise UpstreamError("the pipeline finished without a response", status=500, code="no_response")
    return response
