"""``/v1/responses``: OpenAI's Responses API on top of the chat pipeline.

A request is translated into a chat completion request (``protocol/responses.py``) and answered by the same
:func:`portico.server.chat.answer` as ``/v1/chat/completions`` — same keys, limits, caches, guardrails, traces —
then translated back (``protocol/responses_out.py``). With ``store`` (the default) the response is kept in
Portico's database for its key (``storage/responses.py``), which is what ``previous_response_id``, ``GET``,
``DELETE`` and ``input_items`` read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.gateway.control import Caller
from portico.pipeline.context import TOOL_EVENTS
from portico.protocol.errors import InvalidRequest, NotFound
from portico.protocol.responses import InputItem, ResponsesRequest, new_id, to_chat_request
from portico.protocol.responses_out import ResponseEvents, ResponseHead, from_completion
from portico.runtime import Runtime
from portico.server.auth import caller_of
from portico.server.body import read_model
from portico.server.chat import answer
from portico.server.errors import from_validation
from portico.server.responses_builtin import Builtins, builtins
from portico.server.sse import SSEResponse, encode_named, translated

# Stored items (input and output alike) read back as input items for the next turn.
_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def routes() -> list[Route]:
    return [
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]


def owner_of(caller: Caller) -> str:
    """Whose stored responses a caller sees: its key's, the master key's, or (keys off) everyone's."""
    if caller.key is not None:
        return caller.key.id
    return "master" if caller.admin else "anonymous"


def _stored_items(items: list[InputItem]) -> list[dict[str, Any]]:
    """Input items as stored and listed: plain dicts, each with an id."""
    out = []
    for item in items:
        d = item.model_dump(mode="json", by_alias=True, exclude_none=True)
        d.setdefault("type", "message")
        if d["type"] == "message" and isinstance(d["content"], str):  # listed as OpenAI lists them: as parts
            kind = "output_text" if d["role"] == "assistant" else "input_text"
            d["content"] = [{"type": kind, "text": d["content"]}]
        d["id"] = d.get("id") or new_id(_ID_PREFIX.get(d["type"], "item"))
        out.append(d)
    return out


async def create_response(request: Request) -> Response | SSEResponse:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    req = await read_model(request, ResponsesRequest, rt.cfg.server.max_body_bytes)
    owner = owner_of(caller)
    context: list[dict[str, Any]] = []
    if req.previous_response_id:
        row = await rt.responses.get(owner, req.previous_response_id)
        if row is None:
            raise NotFound(f"Previous response with id '{req.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")  # fmt: skip
        context = row["context"]
    try:
        history = _ITEMS.validate_python(context)
        chat = to_chat_request(req, history)
    except ValidationError as e:
        raise from_validation(e) from None
    tools = await builtins(rt, req, history, caller)  # file_search, web_search, mcp: run here, through the agent loop
    ans = await answer(request, caller, chat, "responses", tools.state(rt))
    head = ResponseHead(req)
    inputs = _stored_items(req.items())
    if ans.chunks is None:
        assert ans.response is not None
        resp = from_completion(head, ans.response, tools.items(ans.ctx.state.get(TOOL_EVENTS) or []))
        if req.store:
            await rt.responses.save(owner, resp, inputs, [*context, *inputs, *resp["output"]])
        return Response(orjson.dumps(resp), media_type="application/json", headers=ans.headers)
    events = _events(rt, req, head, ans.chunks, owner, inputs, context, tools)
    return SSEResponse(encode_named(events), ans.headers)


async def _events(
    rt: Runtime,
    req: ResponsesRequest,
    head: ResponseHead,
    chunks: AsyncIterator[dict[str, Any]],
    owner: str,
    inputs: list[dict[str, Any]],
    context: list[dict[str, Any]],
    tools: Builtins | None = None,
) -> AsyncIterator[dict[str, Any]]:
    tools = tools or Builtins()
    tr = ResponseEvents(head, tools.item)
    for event in tr.start():
        yield event
    for item in tools.listed:
        for event in tr.tool_item(item):
            yield event
    async for event in translated(tr, chunks):
        yield event
    if tr.failed_with is not None:
        return
    assert tr.response is not None
    if req.store:  # stored before the client hears "completed", so an immediate follow-up finds it
        await rt.responses.save(owner, tr.response, inputs, [*context, *inputs, *tr.response["output"]])
    for event in tr.completed():
        yield event


async def _row(request: Request) -> dict[str, Any]:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    response_id = request.path_params["response_id"]
    row = await rt.responses.get(owner_of(caller), response_id)
    if row is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id", code="not_found")
    return row


async def get_response(request: Request) -> Response:
    if request.query_params.get("stream", "false").lower() != "false":
        raise InvalidRequest("a stored response is returned whole; replaying it as a stream is not supported",
                             param="stream")  # fmt: skip
    row = await _row(request)
    return Response(orjson.dumps(row["response"]), media_type="application/json")


async def delete_response(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    caller = await caller_of(request)
    response_id = request.path_params["response_id"]
    if not await rt.responses.delete(owner_of(caller), response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id", code="not_found")
    body = {"id": response_id, "object": "response", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json")


async def list_input_items(request: Request) -> Response:
    """A page of the response's own input items: ``limit`` (1 to 100, default 20), ``order`` (desc by default, as
    OpenAI's), ``after`` (an item id)."""
    q = request.query_params
    limit_text = q.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise InvalidRequest("limit must be an integer from 1 to 100", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    items = (await _row(request))["input_items"]
    if order == "desc":
        items = items[::-1]
    after = q.get("after")
    if after:
        ids = [i.get("id") for i in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}' in this response", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[: int(limit_text)]
    body = {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)}  # fmt: skip
    return Response(orjson.dumps(body), media_type="application/json")
