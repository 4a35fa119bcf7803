"""``POST /v1/chat/completions``: authenticate → admit → pipeline → encode → settle (usage, spend, tokens).

:func:`answer` is the part every chat-shaped endpoint shares: the Responses and Messages endpoints translate
their requests into a :class:`ChatCompletionRequest` and call it too, so keys, limits, caches, guardrails and
traces behave the same whichever wire format a client speaks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.actions.approvals.inband import DECISIONS, decisions_from_headers
from portico.gateway.control import Admission, Caller
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import PorticoError, UpstreamError
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import read_model
from portico.server.sse import SSEResponse, completion_as_chunks, encode_events


@dataclass(slots=True)
class Answer:
    """A request run through its pipeline. Exactly one of ``response`` (already settled) and ``chunks`` (settled
    when the iterator ends, fails or is closed) is set."""

    ctx: RequestContext
    headers: dict[str, str]
    response: dict[str, Any] | None = None
    chunks: AsyncIterator[dict[str, Any]] | None = None


async def chat_completions(request: Request) -> Response | SSEResponse:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    req = await read_model(request, ChatCompletionRequest, rt.cfg.server.max_body_bytes)
    ans = await answer(request, caller, req, "chat")
    if ans.chunks is not None:
        return SSEResponse(encode_events(ans.chunks, req.wants_usage_in_stream), ans.headers)
    return Response(orjson.dumps(ans.response), media_type="application/json", headers=ans.headers)


async def answer(
    request: Request, caller: Caller, req: ChatCompletionRequest, endpoint: str, extra: dict[str, Any] | None = None
) -> Answer:
    """Admit ``req`` for ``caller``, run its pipeline and book it under ``endpoint`` (usage rows, metrics).
    ``extra``: put in the request context's state before the pipeline runs (the tools a Responses request brings)."""
    rt: Runtime = request.app.state.runtime
    pipeline, application = rt.pipeline_for(req.model)
    pipeline, application, variant = rt.experiments.assign(application, req, caller, pipeline)  # A/B splits
    state = request.scope["state"]
    state["model"] = req.model
    adm = await rt.control.admit(caller, req.model, lambda: sum(len(m.text()) for m in req.messages),
                                 req.output_limit or 0)  # fmt: skip
    ctx = RequestContext(request=req, request_id=state["request_id"], model=req.model, application=application,
                         caller={"key": caller.name, "key_id": caller.key.id if caller.key else None,
                                 "tools": caller.key.tools if caller.key else None})  # fmt: skip
    decisions = decisions_from_headers(request.headers)  # in-band approvals of the caller's own actions
    if decisions:
        ctx.state[DECISIONS] = decisions
    if variant is not None:
        ctx.state["experiment.variant"] = variant  # stored with the request (evaluation.feedback)
        ctx.headers["x-portico-variant"] = variant
    cache_control = request.headers.get("cache-control")
    if cache_control:
        ctx.state["http.cache_control"] = cache_control
    ctx.state.update(extra or {})
    try:
        await pipeline.run(ctx)
    except PorticoError as e:
        await _settle(rt, adm, ctx, endpoint, e.status, e.code or e.type)
        e.headers = {**adm.headers, **e.headers}
        raise
    except Exception:
        await _settle(rt, adm, ctx, endpoint, 500, "internal_error")  # the middleware logs it and answers 500
        raise
    answered = ctx.deployment or f"portico/{ctx.answered_by}"
    state["deployment"] = answered
    headers = {"x-portico-model": answered, "x-portico-attempts": str(len(ctx.attempts)), **adm.headers,
               **ctx.headers}  # fmt: skip
    if req.stream:
        chunks = ctx.stream if ctx.stream is not None else completion_as_chunks(_required(ctx.response))
        return Answer(ctx, headers, chunks=_settled(rt, adm, ctx, endpoint, chunks))
    await _settle(rt, adm, ctx, endpoint, 200)
    return Answer(ctx, headers, response=_required(ctx.response))


async def _settled(
    rt: Runtime, adm: Admission, ctx: RequestContext, endpoint: str, chunks: AsyncIterator[dict[str, Any]]
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
        await _settle(rt, adm, ctx, endpoint, status, error)


async def _settle(
    rt: Runtime, adm: Admission, ctx: RequestContext, endpoint: str, status: int, error: str | None = None
) -> None:
    rec = await rt.control.settle(
        adm, request_id=ctx.request_id, endpoint=endpoint, status=status, usage=ctx.usage,
        cost=rt.prices.request_cost(ctx), deployment=ctx.deployment,
        application=ctx.application, attempts=len(ctx.attempts), error_type=error,
    )  # fmt: skip
    if rec is not None:
        rt.metrics.observe(rec, ttft=ctx.state.get("server.ttft"), chunks=ctx.state.get("server.chunks", 0),
                           attempts=[(a.deployment, a.status) for a in ctx.attempts])  # fmt: skip
        rt.tracing.chat(ctx, rec)  # samples and queues the settled context: the trace is built in the writer thread
        rt.feedback.observe(ctx, rec)  # who asked, for feedback ownership (queued, written in the background)


def _required(response: dict | None) -> dict:
    if response is None:  # a pipeline that ends without an answer is a bug in a step, not the client's fault
        raise UpstreamError("the pipeline finished without a response", status=500, code="no_response")
    return response
