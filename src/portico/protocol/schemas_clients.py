"""Response shapes of ``/v1/responses`` (OpenAI's Responses API) and ``/v1/messages`` (Anthropic's Messages API), for
the OpenAPI document. Like ``schemas.py``: descriptions of the dicts the handlers build, never instantiated per
request, open to extra fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.protocol.messages import TextBlock, ToolUseBlock

_OPEN = ConfigDict(extra="allow")


# ---- /v1/responses ----------------------------------------------------------------------------------------


class OutputMessage(BaseModel):
    model_config = _OPEN
    id: str
    type: Literal["message"]
    status: str
    role: Literal["assistant"]
    content: list[dict[str, Any]] = Field(description="output_text {text, annotations} or refusal {refusal} parts")


class OutputFunctionCall(BaseModel):
    """A tool call the client runs, then answers with a ``function_call_output`` input item."""

    model_config = _OPEN
    id: str
    type: Literal["function_call"]
    status: str
    call_id: str
    name: str
    arguments: str


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


class ResponseUsage(BaseModel):
    model_config = _OPEN
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(BaseModel):
    """A response; with ``store`` (the default) kept for the key that made it, for ``previous_response_id``."""

    model_config = _OPEN
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    model: str
    output: list[OutputItem]
    instructions: str | None
    previous_response_id: str | None
    store: bool
    metadata: dict[str, str]
    text: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    usage: ResponseUsage | None


class ResponseStreamEvent(BaseModel):
    model_config = _OPEN
    type: str = Field(description="response.created, response.output_text.delta, … response.completed")
    sequence_number: int


class DeletedResponse(BaseModel):
    model_config = _OPEN
    id: str
    object: Literal["response"]
    deleted: Literal[True]


class InputItemList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[dict[str, Any]] = Field(description="input items as stored, each with an id (messages as parts)")
    first_id: str | None
    last_id: str | None
    has_more: bool


# ---- /v1/messages (Anthropic's shapes, errors included) -----------------------------------------------------


class AnthropicErrorDetail(BaseModel):
    model_config = _OPEN
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, not_found_error, "
        "request_too_large, rate_limit_error, api_error, overloaded_error, timeout_error"
    )
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error shape: what ``/v1/messages`` answers instead of OpenAI's, with the same statuses."""

    model_config = _OPEN
    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicUsage(BaseModel):
    model_config = _OPEN
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class AnthropicMessage(BaseModel):
    model_config = _OPEN
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Annotated[TextBlock | ToolUseBlock, Field(discriminator="type")]]  # the request's blocks
    stop_reason: str | None
    stop_sequence: str | None
    usage: AnthropicUsage


class AnthropicStreamEvent(BaseModel):
    model_config = _OPEN
    type: str = Field(
        description="message_start, content_block_start/delta/stop, message_delta, message_stop, ping, error"
    )


class TokenCount(BaseModel):
    model_config = _OPEN
    input_tokens: int
