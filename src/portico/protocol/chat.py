"""Wire types for ``/v1/chat/completions``.

Requests are validated with pydantic (clear 400s that name the field); fields Portico does not know are kept
(``extra="allow"``) so OpenAI-compatible upstreams receive them unchanged. Responses and stream chunks stay
plain dicts in OpenAI's shape: they are built by provider translators and serialised once with orjson, which
keeps the hot path free of model re-validation.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

_OPEN = ConfigDict(extra="allow")


class TextPart(BaseModel):
    model_config = _OPEN
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = _OPEN
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    model_config = _OPEN
    type: Literal["image_url"]
    image_url: ImageURL


class OtherPart(BaseModel):
    """Audio, files, refusals and future part types: passed through, not interpreted."""

    model_config = _OPEN
    type: str


def _part_kind(v: Any) -> str:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return t if t in ("text", "image_url") else "other"


# Known part types are validated strictly (a text part without text is a 400); others pass through.
ContentPart = Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[ImagePart, Tag("image_url")] | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


class FunctionCall(BaseModel):
    model_config = _OPEN
    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    model_config = _OPEN
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = _OPEN
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs 'tool_call_id'")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a message with role '{self.role}' needs 'content'")
        return self

    def text(self) -> str:
        """The message's text parts joined; what guardrails and retrieval read."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class FunctionDef(BaseModel):
    model_config = _OPEN
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = _OPEN
    type: Literal["function"] = "function"
    function: FunctionDef


class JSONSchemaSpec(BaseModel):
    model_config = _OPEN
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    model_config = _OPEN
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs 'json_schema'")
        return self


class StreamOptions(BaseModel):
    model_config = _OPEN
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Portico's own request extension (cache control, tracing tags…); never forwarded upstream.
    portico: dict[str, Any] | None = None

    # Field validators (not one model validator) so a 400's ``param`` names the offending field.
    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("none", "auto", "required"):
            raise ValueError("tool_choice must be 'none', 'auto', 'required' or an object naming a function")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs: true")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return v

    @property
    def output_limit(self) -> int | None:
        """The client's output-token cap, whichever of the two spellings it used."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def upstream_dict(self) -> dict[str, Any]:
        """The request as an OpenAI-compatible upstream should receive it (unknown fields included)."""
        return self.model_dump(exclude_none=True, by_alias=True, exclude={"portico"})


# ---- response builders (plain dicts in OpenAI's shape) -------------------------------------------------


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def usage_dict(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    return u


def completion_dict(
    *,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": id or new_completion_id(),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def choice_dict(
    index: int,
    content: str | None,
    finish_reason: str | None,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}


def chunk_dict(
    *,
    id: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def delta_choice(
    index: int, delta: dict[str, Any], finish_reason: str | None = None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}


# A stream item that is not an answer chunk: the SSE encoder writes it as a comment line (": text"), which clients
# and the OpenAI SDK skip. Steps that work for a while mid-stream (an agent running tools) keep the connection
# alive with it.
COMMENT_OBJECT = "portico.comment"


def comment_chunk(text: str) -> dict[str, Any]:
    return {"object": COMMENT_OBJECT, "comment": " ".join(text.split()), "choices": []}


def completion_chunks(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished ``chat.completion`` as the chunks a stream of it would have had (usage chunk last)."""
    base = {"id": resp.get("id", ""), "model": resp.get("model", ""), "created": resp.get("created", 0)}
    out = []
    for c in resp.get("choices", []):
        msg = c.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [dict(tc, index=i) for i, tc in enumerate(msg["tool_calls"])]
        index = c.get("index", 0)
        out.append(chunk_dict(**base, choices=[delta_choice(index, delta, logprobs=c.get("logprobs"))]))
        out.append(chunk_dict(**base, choices=[delta_choice(index, {}, c.get("finish_reason") or "stop")]))
    if resp.get("usage"):
        out.append(chunk_dict(**base, choices=[], usage=resp["usage"]))
    return out
