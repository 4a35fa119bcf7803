"""``/v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API in front of any upstream model.

The request is translated into a chat request (``protocol/messages.py``) and answered by the same
:func:`portico.server.chat.answer` as ``/v1/chat/completions``, then translated back (``protocol/messages_out.py``).
Keys come as ``x-api-key`` (what Anthropic's SDK sends) or a bearer token; ``anthropic-version`` and
``anthropic-beta`` are accepted and not needed. Every error leaves in Anthropic's shape with Portico's status.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import PorticoError
from portico.protocol.messages import CountTokensRequest, MessagesRequest, to_chat_request
from portico.protocol.messages_out import MessageEvents, error_body, from_completion
from portico.routing.context_length import estimate_tokens, tokenizers
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import read_model
from portico.server.chat import answer
from portico.server.errors import from_validation
from portico.server.sse import SSEResponse, encode_named, translated

Handler = Callable[[Request], Awaitable[Response | SSEResponse]]


def routes() -> list[Route]:
    return [
        Route("/v1/messages", anthropic_errors(create_message), methods=["POST"]),
        Route("/v1/messages/count_tokens", anthropic_errors(count_tokens), methods=["POST"]),
    ]


def anthropic_errors(handler: Handler) -> Handler:
    """Errors raised before the first byte, in Anthropic's shape (headers such as Retry-After kept)."""

    async def wrapped(request: Request) -> Response | SSEResponse:
        try:
            return await handler(request)
        except PorticoError as e:
            return Response(orjson.dumps(error_body(e)), status_code=e.status, media_type="application/json",
                            headers=e.headers)  # fmt: skip

    return wrapped


async def _chat_request(
    request: Request, model: type[MessagesRequest]
) -> tuple[MessagesRequest, ChatCompletionRequest]:
    rt: Runtime = request.app.state.runtime
    req = await read_model(request, model, rt.cfg.server.max_body_bytes)
    try:
        return req, to_chat_request(req)
    except ValidationError as e:
        raise from_validation(e) from None


async def create_message(request: Request) -> Response | SSEResponse:
    caller = await caller_of(request)
    req, chat = await _chat_request(request, MessagesRequest)
    ans = await answer(request, caller, chat, "messages")
    if ans.chunks is None:
        assert ans.response is not None
        body = from_completion(ans.response, req.model)
        return Response(orjson.dumps(body), media_type="application/json", headers=ans.headers)
    return SSEResponse(encode_named(translated(MessageEvents(req.model), ans.chunks)), ans.headers)


async def count_tokens(request: Request) -> Response:
    """Prompt tokens of a message request, without running it: by the model's own tokenizer when Portico holds it
    (a local llama.cpp model), else the documented estimate (4 characters a token plus 4 per message, and the
    tools' JSON). An application is counted as its model sees the request, before its steps add anything."""
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    req, chat = await _chat_request(request, CountTokensRequest)
    _, application = rt.pipeline_for(req.model)
    rt.control.check_model(caller, req.model)
    model = next((a.model for a in rt.cfg.applications if a.name == application), req.model)
    return Response(orjson.dumps({"input_tokens": _count(rt, model, chat)}), media_type="application/json")


def _count(rt: Runtime, model: str, chat: ChatCompletionRequest) -> int:
    tools = [t.model_dump(exclude_none=True) for t in chat.tools or []]
    backends = tokenizers(rt.gateway, model)
    if backends and not tools:
        counts = [b.count_tokens([m.model_dump(exclude_none=True) for m in chat.messages]) for b in backends]
        if all(c is not None for c in counts):
            return max(counts)
    tool_chars = len(orjson.dumps(tools)) if tools else 0
    return estimate_tokens(chat.messages) + math.ceil(tool_chars / 4)
