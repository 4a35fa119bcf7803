"""OpenAI chat requests → Anthropic Messages requests, and Anthropic messages → OpenAI completions."""

from __future__ import annotations

from typing import Any

import orjson

from portico.config.schema import AnthropicDeployment, HttpDeployment, secret
from portico.gateway.providers.anthropic.stream import AnthropicStream, error_reason
from portico.gateway.providers.base import (
    UpstreamRequest,
    alternating_turns,
    error_text,
    json_instruction,
    named_tool,
    tool_arguments,
)
from portico.protocol.anthropic import finish_reason, image_block, openai_usage
from portico.protocol.chat import (
    ChatCompletionRequest,
    ImagePart,
    Message,
    TextPart,
    choice_dict,
    completion_dict,
)
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest, UpstreamError

Block = dict[str, Any]

# ---- request: system prompt -----------------------------------------------------------------------------


def _system_text(msg: Message, i: int) -> str:
    """Anthropic's system prompt is text only, so image or audio parts in a system message cannot be sent."""
    if isinstance(msg.content, str):
        return msg.content
    for j, part in enumerate(msg.content or []):
        if not isinstance(part, TextPart):
            raise InvalidRequest(
                f"Anthropic system prompts take text only, not '{part.type}'", param=f"messages[{i}].content[{j}]"
            )
    return msg.text()


def _system_blocks(req: ChatCompletionRequest) -> list[Block]:
    texts = [_system_text(m, i) for i, m in enumerate(req.messages) if m.role in ("system", "developer")]
    texts.append(json_instruction(req) or "")
    # Anthropic rejects empty text blocks.
    return [{"type": "text", "text": t} for t in texts if t]


# ---- request: content blocks ----------------------------------------------------------------------------


def _content_blocks(msg: Message, i: int) -> list[Block]:
    """Text and image parts of a user, assistant or tool message; empty text is dropped (Anthropic rejects it)."""
    if isinstance(msg.content, str):
        return [{"type": "text", "text": msg.content}] if msg.content else []
    blocks: list[Block] = []
    for j, part in enumerate(msg.content or []):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part.image_url.url, f"{param}.image_url.url"))
        elif part.type == "refusal" and msg.role == "assistant":
            refusal = (part.model_extra or {}).get("refusal")
            if refusal:
                blocks.append({"type": "text", "text": str(refusal)})
        else:
            raise InvalidRequest(f"Anthropic does not accept content parts of type '{part.type}'", param=param)
    return blocks


def _tool_use_blocks(msg: Message, i: int) -> list[Block]:
    blocks: list[Block] = []
    for j, call in enumerate(msg.tool_calls or []):
        args = tool_arguments(call, f"messages[{i}].tool_calls[{j}].function.arguments")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": args})
    return blocks


def _tool_result_block(msg: Message, i: int) -> Block:
    block: Block = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
    if isinstance(msg.content, str):
        if msg.content:
            block["content"] = msg.content
    else:
        content = _content_blocks(msg, i)
        if content:
            block["content"] = content
    return block


def _turn(msg: Message, i: int) -> tuple[str, list[Block]]:
    """One OpenAI message as (Anthropic role, content blocks)."""
    if msg.role == "tool":
        return "user", [_tool_result_block(msg, i)]
    if msg.role == "assistant":
        return "assistant", _content_blocks(msg, i) + _tool_use_blocks(msg, i)
    if msg.role == "user":
        blocks = _content_blocks(msg, i)
        if not blocks:
            raise InvalidRequest("Anthropic rejects empty user messages", param=f"messages[{i}].content")
        return "user", blocks
    raise InvalidRequest("the legacy 'function' role is not supported; use tools", param=f"messages[{i}].role")


def _messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    return alternating_turns(req, _turn, lambda b: b["type"] == "tool_result", "Anthropic")


# ---- request: tools and sampling ------------------------------------------------------------------------


def _tools(req: ChatCompletionRequest) -> list[Block]:
    tools: list[Block] = []
    for t in req.tools or []:
        tool: Block = {"name": t.function.name}
        if t.function.description:
            tool["description"] = t.function.description
        # input_schema is required by Anthropic; a function without parameters takes an empty object.
        tool["input_schema"] = t.function.parameters or {"type": "object", "properties": {}}
        tools.append(tool)
    return tools


def _tool_choice(req: ChatCompletionRequest) -> Block | None:
    choice = req.tool_choice
    if choice == "none":
        return {"type": "none"}  # disable_parallel_tool_use is not allowed with "none"
    if choice is None and req.parallel_tool_calls is not False:
        return None  # Anthropic's default (auto) is OpenAI's default
    if choice is None or choice == "auto":
        out: Block = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": named_tool(req, choice)}
    if req.parallel_tool_calls is False:
        out["disable_parallel_tool_use"] = True
    return out


def _sampling(req: ChatCompletionRequest, body: dict[str, Any]) -> None:
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)  # OpenAI allows 0..2, Anthropic 0..1
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop_list:
        body["stop_sequences"] = req.stop_list
    if req.user:
        body["metadata"] = {"user_id": req.user}


def chat_body(req: ChatCompletionRequest, dep: AnthropicDeployment, *, stream: bool) -> dict[str, Any]:
    """The Messages API body. Penalties, seed and logit_bias have no Anthropic equivalent and are dropped."""
    if req.logprobs:
        raise InvalidRequest("Anthropic does not return logprobs", param="logprobs")
    body: dict[str, Any] = {"model": dep.model, "max_tokens": req.output_limit or dep.default_max_tokens}
    system = _system_blocks(req)
    if system:
        body["system"] = system
    body["messages"] = _messages(req)
    if req.tools:
        body["tools"] = _tools(req)
        choice = _tool_choice(req)
        if choice is not None:
            body["tool_choice"] = choice
    _sampling(req, body)
    if stream:
        body["stream"] = True
    prompt_cache = (req.portico or {}).get("prompt_cache")
    if prompt_cache:
        mark_prompt_cache(body, int(prompt_cache.get("min_tokens", 1024)) if isinstance(prompt_cache, dict) else 1024)
    return body


# ---- request: prompt caching ----------------------------------------------------------------------------

EPHEMERAL = {"type": "ephemeral"}


def _size(value: Any) -> int:
    """A token estimate (about 4 characters per token) without a tokenizer."""
    return len(orjson.dumps(value)) // 4


def _mark_last_block(message: dict[str, Any]) -> None:
    content = message["content"]
    if isinstance(content, str):
        message["content"] = content = [{"type": "text", "text": content}]
    if content:
        content[-1] = {**content[-1], "cache_control": EPHEMERAL}


def mark_prompt_cache(body: dict[str, Any], min_tokens: int) -> None:
    """Mark the stable prefix for Anthropic's prompt cache: the end of the tools, of the system prompt, and of
    the conversation before the newest turn, each once the prefix up to it is long enough to be cached (Anthropic
    ignores shorter ones; 1,024 tokens on most models). At most the API's four breakpoints."""
    prefix = 0
    marks = 0
    tools = body.get("tools")
    if tools:
        prefix += _size(tools)
        if prefix >= min_tokens:
            tools[-1] = {**tools[-1], "cache_control": EPHEMERAL}
            marks += 1
    system = body.get("system")
    if system:
        prefix += _size(system)
        if prefix >= min_tokens:
            system[-1] = {**system[-1], "cache_control": EPHEMERAL}
            marks += 1
    messages = body.get("messages") or []
    if len(messages) > 1 and marks < 4:
        prefix += _size(messages[:-1])
        if prefix >= min_tokens:
            _mark_last_block(messages[-2])


# ---- response -------------------------------------------------------------------------------------------


def _tool_call(block: Block) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}


def completion_from_message(data: dict[str, Any], model: str) -> dict[str, Any]:
    if data.get("type") == "error":
        raise UpstreamError(f"upstream error: {error_reason(data)}", status=502)
    content = data.get("content")
    if not isinstance(content, list):
        raise UpstreamError("upstream answered without 'content'", status=502)
    texts = [b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text"]
    calls = [_tool_call(b) for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]
    # OpenAI sends content null on a pure tool-call answer; thinking blocks are not part of the answer.
    text = "".join(texts) if texts else (None if calls else "")
    u = data.get("usage") or {}
    usage = openai_usage(
        u.get("input_tokens") or 0,
        u.get("output_tokens") or 0,
        u.get("cache_read_input_tokens"),
        u.get("cache_creation_input_tokens"),
    )
    choice = choice_dict(0, text, finish_reason(data.get("stop_reason")) or "stop", calls or None)
    return completion_dict(model=data.get("model") or model, choices=[choice], usage=usage, id=data.get("id"))


# ---- provider -------------------------------------------------------------------------------------------


def _anthropic(dep: HttpDeployment) -> AnthropicDeployment:
    if not isinstance(dep, AnthropicDeployment):
        raise TypeError(f"the anthropic provider needs an AnthropicDeployment, got {type(dep).__name__}")
    return dep


class AnthropicProvider:
    name = "anthropic"
    supports_n = False  # returns n choices from one call
    native_dimensions = False

    def _headers(self, dep: AnthropicDeployment) -> dict[str, str]:
        h = {"content-type": "application/json", "anthropic-version": dep.anthropic_version}
        key = secret(dep.api_key)
        if key:
            h["x-api-key"] = key
        h.update(dep.headers)
        return h

    def chat_request(self, req: ChatCompletionRequest, dep: HttpDeployment, *, stream: bool) -> UpstreamRequest:
        a = _anthropic(dep)
        url = a.base_url.rstrip("/") + "/v1/messages"
        return UpstreamRequest(url, self._headers(a), chat_body(req, a, stream=stream))

    def chat_response(self, data: dict[str, Any], req: ChatCompletionRequest, dep: HttpDeployment) -> dict[str, Any]:
        return completion_from_message(data, dep.model or req.model)

    def stream_translator(self, req: ChatCompletionRequest, dep: HttpDeployment) -> AnthropicStream:
        return AnthropicStream(dep.model or req.model)

    def error_message(self, status: int, body: bytes) -> str:
        return error_text(body)

    def embeddings_request(self, req: EmbeddingRequest, dep: HttpDeployment) -> UpstreamRequest:
        raise InvalidRequest("Anthropic has no embeddings API", param="model")

    def embeddings_response(self, data: dict[str, Any], req: EmbeddingRequest, dep: HttpDeployment) -> dict[str, Any]:
        raise InvalidRequest("Anthropic has no embeddings API", param="model")
