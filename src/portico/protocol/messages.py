"""Wire types for ``/v1/messages`` (Anthropic's Messages API, inbound) and their translation into a chat request.

An Anthropic client reaches any upstream model through the chat pipeline: ``system`` becomes the system message,
``tool_use`` blocks become an assistant's ``tool_calls``, each ``tool_result`` a ``tool`` message, images become
``image_url`` parts. The way back (a completion or its chunks → a message or Anthropic's stream events) is in
:mod:`portico.protocol.messages_out`.

Parameters with no chat equivalent: ``top_k`` is dropped, ``thinking`` is accepted and ignored, and more than
four ``stop_sequences`` are a 400 (chat upstreams take at most four).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from portico.protocol.anthropic import image_url
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest

_OPEN = ConfigDict(extra="allow")


class TextBlock(BaseModel):
    model_config = _OPEN
    type: Literal["text"]
    text: str


class ImageBlock(BaseModel):
    model_config = _OPEN
    type: Literal["image"]
    source: dict[str, Any]


class ToolUseBlock(BaseModel):
    model_config = _OPEN
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = _OPEN
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None


class OtherBlock(BaseModel):
    """Thinking blocks (dropped from history: chat upstreams take no reasoning input) and kinds Portico cannot
    send (documents, server tool results: a 400 naming them)."""

    model_config = _OPEN
    type: str


def _block_kind(v: Any) -> str:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return t if t in ("text", "image", "tool_use", "tool_result") else "other"


Block = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_kind),
]


class InputMessage(BaseModel):
    model_config = _OPEN
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(BaseModel):
    model_config = _OPEN
    type: str | None = None  # "custom" or absent; dated types (web_search_20250305, bash_…) are server tools
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(BaseModel):
    model_config = _OPEN
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(BaseModel):
    model_config = _OPEN
    user_id: str | None = None


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: Metadata | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    # Portico's own request extension (cache control, tracing tags…), handed to the chat request as is.
    portico: dict[str, Any] | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > 4:
            raise ValueError("at most 4 stop sequences are supported (the limit of chat upstreams)")
        return v

    @field_validator("mcp_servers")
    @classmethod
    def _mcp(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v:
            raise ValueError("MCP servers are not available on this server yet")
        return v


class CountTokensRequest(MessagesRequest):
    """``/v1/messages/count_tokens`` takes a message request without ``max_tokens``."""

    max_tokens: int = Field(default=1, ge=1)


# ---- translation -------------------------------------------------------------------------------------------


def _text_and_images(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        if isinstance(b, TextBlock):
            parts.append({"type": "text", "text": b.text})
        elif isinstance(b, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": image_url(b.source, f"{where}[{j}].source")}})
    return parts


def _tool_result(block: ToolResultBlock, where: str) -> dict[str, Any]:
    content = block.content
    if isinstance(content, list):
        if any(isinstance(b, ImageBlock) for b in content):
            raise InvalidRequest("tool results may hold text only", param=f"{where}.content")
        content = "".join(b.text for b in content if isinstance(b, TextBlock))
    text = content or ""
    if block.is_error:  # chat has no error flag on tool results: say it in the text the model reads
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _turn(msg: InputMessage, where: str) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages: a user turn's tool results first (as ``tool`` messages), then its
    text and images; an assistant turn's text with its tool calls."""
    if isinstance(msg.content, str):
        return [{"role": msg.role, "content": msg.content}]
    out: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(msg.content):
        param = f"{where}.content[{j}]"
        if isinstance(b, ToolResultBlock):
            if msg.role != "user":
                raise InvalidRequest("tool_result blocks belong in user turns", param=param)
            out.append(_tool_result(b, param))
        elif isinstance(b, ToolUseBlock):
            if msg.role != "assistant":
                raise InvalidRequest("tool_use blocks belong in assistant turns", param=param)
            args = orjson.dumps(b.input).decode()
            calls.append({"id": b.id, "type": "function", "function": {"name": b.name, "arguments": args}})
        elif isinstance(b, OtherBlock) and b.type not in ("thinking", "redacted_thinking"):
            raise InvalidRequest(f"content blocks of type '{b.type}' are not supported", param=f"{param}.type")
    parts = _text_and_images(msg.content, f"{where}.content")
    if msg.role == "assistant":
        if any(p["type"] != "text" for p in parts):
            raise InvalidRequest("assistant turns may hold text and tool_use only", param=f"{where}.content")
        text = "".join(p["text"] for p in parts)
        if text or calls:
            out.append({"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _tools(req: MessagesRequest) -> list[dict[str, Any]]:
    tools = []
    for i, t in enumerate(req.tools or []):
        if t.type not in (None, "custom"):
            raise InvalidRequest(f"Unsupported tool: server tools such as '{t.type}' are not available on this "
                                 "server; define custom tools with input_schema", param=f"tools[{i}].type",
                                 code="unsupported_tool")  # fmt: skip
        fn: dict[str, Any] = {"name": t.name, "parameters": t.input_schema or {"type": "object", "properties": {}}}
        if t.description:
            fn["description"] = t.description
        tools.append({"type": "function", "function": fn})
    return tools


def _tool_choice(req: MessagesRequest) -> tuple[Any, bool | None]:
    """(chat tool_choice, parallel_tool_calls)."""
    c = req.tool_choice
    if c is None:
        return None, None
    parallel = False if c.disable_parallel_tool_use else None
    if c.type == "tool":
        if not c.name or c.name not in {t.name for t in req.tools or []}:
            raise InvalidRequest("tool_choice of type 'tool' must name one of the tools", param="tool_choice.name")
        return {"type": "function", "function": {"name": c.name}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[c.type], parallel


def to_chat_request(req: MessagesRequest) -> ChatCompletionRequest:
    messages: list[dict[str, Any]] = []
    system = req.system if isinstance(req.system, str) else "".join(b.text for b in req.system or [])
    if system:
        messages.append({"role": "system", "content": system})
    for i, msg in enumerate(req.messages):
        messages += _turn(msg, f"messages[{i}]")
    tools = _tools(req)
    choice, parallel = _tool_choice(req)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "max_completion_tokens": req.max_tokens}
    optional = {
        "stream": req.stream or None,
        "stream_options": {"include_usage": True} if req.stream else None,
        "stop": req.stop_sequences or None,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": req.metadata.user_id if req.metadata else None,
        "tools": tools or None,
        "tool_choice": choice if tools else None,
        "parallel_tool_calls": parallel if tools else None,
        "portico": req.portico,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return ChatCompletionRequest.model_validate(body)
