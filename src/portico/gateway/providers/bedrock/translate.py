"""OpenAI chat requests → Bedrock Converse requests, and Converse responses → OpenAI completions.

Converse speaks one shape for every Bedrock model: ``messages`` of content blocks (``text``, ``image``,
``toolUse``, ``toolResult``), ``system`` blocks, ``inferenceConfig`` and ``toolConfig``.
"""

from __future__ import annotations

from typing import Any

import orjson

from portico.gateway.providers.base import Block, alternating_turns, json_instruction, named_tool, tool_arguments
from portico.protocol.anthropic import openai_usage
from portico.protocol.chat import ChatCompletionRequest, ImagePart, Message, TextPart, choice_dict, completion_dict
from portico.protocol.errors import InvalidRequest, UpstreamError

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}  # fmt: skip


def finish_reason(stop_reason: str | None) -> str | None:
    """Converse ``stopReason`` → OpenAI ``finish_reason``; unknown future reasons read as a normal stop."""
    if stop_reason is None:
        return None
    return {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "guardrail_intervened": "content_filter",
        "content_filtered": "content_filter",
    }.get(stop_reason, "stop")


def usage(u: dict[str, Any] | None) -> dict[str, Any]:
    """Converse counts cache reads and writes apart from ``inputTokens``, like Anthropic."""
    u = u or {}
    return openai_usage(
        u.get("inputTokens") or 0, u.get("outputTokens") or 0, u.get("cacheReadInputTokens"),
        u.get("cacheWriteInputTokens"),
    )  # fmt: skip


# ---- request --------------------------------------------------------------------------------------------


def _system(req: ChatCompletionRequest) -> list[Block]:
    texts = []
    for i, msg in enumerate(req.messages):
        if msg.role not in ("system", "developer"):
            continue
        for j, part in enumerate(msg.content if isinstance(msg.content, list) else []):
            if not isinstance(part, TextPart):
                raise InvalidRequest(
                    f"Bedrock system prompts take text only, not '{part.type}'", param=f"messages[{i}].content[{j}]"
                )
        texts.append(msg.text())
    texts.append(json_instruction(req) or "")
    return [{"text": t} for t in texts if t]


def _image(part: ImagePart, param: str) -> Block:
    url = part.image_url.url
    header, sep, data = url.removeprefix("data:").partition(",")
    media_type, _, encoding = header.partition(";")
    fmt = IMAGE_FORMATS.get(media_type.lower())
    if not url.startswith("data:") or not sep or encoding != "base64":
        raise InvalidRequest("Bedrock takes images as base64 data: URLs only", param=f"{param}.image_url.url")
    if fmt is None:
        raise InvalidRequest(f"Bedrock does not take '{media_type}' images", param=f"{param}.image_url.url")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _content(msg: Message, i: int) -> list[Block]:
    if isinstance(msg.content, str):
        return [{"text": msg.content}] if msg.content else []
    blocks: list[Block] = []
    for j, part in enumerate(msg.content or []):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part, param))
        else:
            raise InvalidRequest(f"Bedrock does not accept content parts of type '{part.type}'", param=param)
    return blocks


def _turn(msg: Message, i: int) -> tuple[str, list[Block]]:
    if msg.role == "tool":
        result = _content(msg, i) or [{"text": ""}]
        return "user", [{"toolResult": {"toolUseId": msg.tool_call_id, "content": result, "status": "success"}}]
    if msg.role == "assistant":
        uses = [
            {"toolUse": {"toolUseId": c.id, "name": c.function.name,
                         "input": tool_arguments(c, f"messages[{i}].tool_calls[{j}].function.arguments")}}
            for j, c in enumerate(msg.tool_calls or [])
        ]  # fmt: skip
        return "assistant", _content(msg, i) + uses
    if msg.role == "user":
        blocks = _content(msg, i)
        if not blocks:
            raise InvalidRequest("Bedrock rejects empty user messages", param=f"messages[{i}].content")
        return "user", blocks
    raise InvalidRequest("the legacy 'function' role is not supported; use tools", param=f"messages[{i}].role")


def _messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    return alternating_turns(req, _turn, lambda b: "toolResult" in b, "Bedrock")


def _tool_choice(req: ChatCompletionRequest) -> Block | None:
    choice = req.tool_choice
    if choice is None or choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict):
        return {"tool": {"name": named_tool(req, choice)}}
    return None  # "none": Converse cannot forbid tools; see _tool_config


def _tool_config(req: ChatCompletionRequest, messages: list[dict[str, Any]]) -> Block | None:
    if not req.tools:
        return None
    used = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if req.tool_choice == "none" and not used:
        return None  # no way to say "none" in Converse: not offering the tools is the same
    tools = [
        {"toolSpec": {"name": t.function.name, "description": t.function.description or t.function.name,
                      "inputSchema": {"json": t.function.parameters or {"type": "object", "properties": {}}}}}
        for t in req.tools
    ]  # fmt: skip
    config: Block = {"tools": tools}
    choice = _tool_choice(req)
    if choice is not None:
        config["toolChoice"] = choice
    return config


def chat_body(req: ChatCompletionRequest) -> dict[str, Any]:
    """The Converse body (the model id is in the URL). Penalties, seed and logit_bias have no Converse field."""
    if req.logprobs:
        raise InvalidRequest("Bedrock Converse does not return logprobs", param="logprobs")
    body: dict[str, Any] = {"messages": _messages(req)}
    system = _system(req)
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if req.output_limit is not None:
        inference["maxTokens"] = req.output_limit
    if req.temperature is not None:
        inference["temperature"] = min(req.temperature, 1.0)  # OpenAI allows 0..2, Bedrock's models 0..1
    if req.top_p is not None:
        inference["topP"] = req.top_p
    if req.stop_list:
        inference["stopSequences"] = req.stop_list
    if inference:
        body["inferenceConfig"] = inference
    tools = _tool_config(req, body["messages"])
    if tools is not None:
        body["toolConfig"] = tools
    return body


# ---- response -------------------------------------------------------------------------------------------


def tool_call(use: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": use.get("toolUseId"),
        "type": "function",
        "function": {"name": use.get("name"), "arguments": orjson.dumps(use.get("input") or {}).decode()},
    }


def chat_completion(data: dict[str, Any], model: str) -> dict[str, Any]:
    message = (data.get("output") or {}).get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise UpstreamError("upstream answered without 'output.message.content'", status=502)
    blocks = [b for b in message["content"] if isinstance(b, dict)]
    texts = [b["text"] for b in blocks if isinstance(b.get("text"), str)]
    calls = [tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)]
    text = "".join(texts) if texts else (None if calls else "")
    choice = choice_dict(0, text, finish_reason(data.get("stopReason")) or "stop", calls or None)
    return completion_dict(model=model, choices=[choice], usage=usage(data.get("usage")))
