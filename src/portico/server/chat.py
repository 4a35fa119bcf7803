"""``POST /v1/chat/completions``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import UpstreamError
from portico.runtime import Runtime
from portico.server.body import read_model
from portico.server.sse import SSEResponse, completion_as_chunks, encode_events


async def chat_completions(request: Request) -> Response | SSEResponse:
    rt: Runtime = request.app.state.runtime
    req = await read_model(request, ChatCompletionRequest, rt.cfg.server.max_body_bytes)
    pipeline, application = rt.pipeline_for(req.model)
    state = request.scope["state"]
    state["model"] = req.model
    ctx = RequestContext(request=req, request_id=state["request_id"], model=req.model, application=application)
    await pipeline.run(ctx)
    answered = ctx.deployment or f"portico/{ctx.answered_by}"
    state["deployment"] = answered
    headers = {"x-portico-model": answered}
    if req.stream:
        chunks = ctx.stream if ctx.stream is not None else completion_as_chunks(_required(ctx.response))
        return SSEResponse(encode_events(chunks, req.wants_usage_in_stream), headers)
    return Response(orjson.dumps(_required(ctx.response)), media_type="application/json", headers=headers)


def _required(response: dict | None) -> dict:
    if response is None:  # a pipeline that ends without an answer is a bug in a step, not the client's fault
        raise UpstreamError("the pipeline finished without a response", status=500, code="no_response")
    return response
