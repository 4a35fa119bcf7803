"""Wire types for ``/v1/responses`` (OpenAI's Responses API) and their translation into a chat completion request.

Portico answers every generation as a :class:`ChatCompletionRequest` run through one pipeline; this module is
the Responses API's way in: ``instructions`` + the stored conversation + ``input`` items become chat messages,
``text.format`` becomes ``response_format``, function tools stay function tools. The way out (a completion or its
chunks → a response object or semantic stream events) is in :mod:`portico.protocol.responses_out`.

Requests are validated with pydantic so a bad field is a 400 naming it. Fields Portico does not interpret are
accepted and ignored (they are not forwarded: chat upstreams do not know the Responses API's parameters).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from portico.protocol.chat import ChatCompletionRequest, check_tool_choice
from portico.protocol.errors import InvalidRequest
from portico.protocol.responses_tools import SERVER_TOOLS, history_messages

_OPEN = ConfigDict(extra="allow")

# Tools the Responses API runs on the server. file_search, web_search and mcp run in Portico's agent loop
# (protocol/responses_tools.py); a request naming another gets a 400 that says so, instead of a model that
# silently never calls it.
BUILT_IN_TOOLS = frozenset({
    "file_search", "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
    "mcp", "code_interpreter", "computer_use_preview", "computer_use", "image_generation", "local_shell", "shell",
    "apply_patch",
})  # fmt: skip


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def unsupported_tool(kind: str, param: str) -> InvalidRequest:
    if kind in BUILT_IN_TOOLS:
        why = f"the built-in tool '{kind}' is not available on this server yet; pass function tools instead"
    else:
        why = f"tools of type '{kind}' are not supported; pass function tools"
    return InvalidRequest(f"Unsupported tool: {why}", param=param, code="unsupported_tool")


# ---- input content and items ----------------------------------------------------------------------------


class InputText(BaseModel):
    model_config = _OPEN
    type: Literal["input_text", "output_text"]
    text: str


class Refusal(BaseModel):
    model_config = _OPEN
    type: Literal["refusal"]
    refusal: str


class InputImage(BaseModel):
    model_config = _OPEN
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(BaseModel):
    model_config = _OPEN
    type: Literal["input_file"]
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None
    file_url: str | None = None


class OtherContent(BaseModel):
    model_config = _OPEN
    type: str


def _content_kind(v: Any) -> str:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    if t in ("input_text", "output_text"):
        return "text"
    return t if t in ("refusal", "input_image", "input_file") else "other"


Content = Annotated[
    Annotated[InputText, Tag("text")]
    | Annotated[Refusal, Tag("refusal")]
    | Annotated[InputImage, Tag("input_image")]
    | Annotated[InputFile, Tag("input_file")]
    | Annotated[OtherContent, Tag("other")],
    Discriminator(_content_kind),
]


class MessageItem(BaseModel):
    """A message: ``{"role", "content"}`` (``type: "message"`` optional), as typed by a client or taken from an
    earlier response's output."""

    model_config = _OPEN
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]


class FunctionCallItem(BaseModel):
    model_config = _OPEN
    type: Literal["function_call"]
    id: str | None = None
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = ""


class FunctionCallOutputItem(BaseModel):
    model_config = _OPEN
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str = Field(min_length=1)
    output: str | list[Content]


class OtherItem(BaseModel):
    """Reasoning items (skipped: chat upstreams take no reasoning input) and types Portico cannot send (a 400)."""

    model_config = _OPEN
    type: str


def _item_kind(v: Any) -> str:
    t = v.get("type", "message") if isinstance(v, dict) else getattr(v, "type", None)
    return t if t in ("message", "function_call", "function_call_output") else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


# ---- request ----------------------------------------------------------------------------------------------


class TextFormat(BaseModel):
    model_config = _OPEN
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(BaseModel):
    model_config = _OPEN
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(BaseModel):
    model_config = _OPEN
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    reasoning: Reasoning | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None
    # Portico's own request extension (cache control, tracing tags…), handed to the chat request as is.
    portico: dict[str, Any] | None = None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        return check_tool_choice(v)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 16 or any(len(k) > 64 or len(s) > 512 for k, s in v.items())):
            raise ValueError("metadata takes at most 16 pairs, keys up to 64 and values up to 512 characters")
        return v

    @field_validator("background")
    @classmethod
    def _background(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("background responses are not supported; stream instead")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, v: int | None) -> int | None:
        if v:
            raise ValueError("logprobs are not returned by this server")
        return v

    def items(self) -> list[InputItem]:
        """``input`` as items (a string is one user message)."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)

    def function_tools(self) -> list[dict[str, Any]]:
        """``tools`` as chat tools; any other kind is a 400 naming it."""
        out = []
        for i, tool in enumerate(self.tools or []):
            kind = tool.get("type")
            if kind in SERVER_TOOLS:  # run by the server (actions/builtin.py), not offered as a function
                continue
            if kind != "function":
                raise unsupported_tool(str(kind), f"tools[{i}].type")
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest("a function tool needs 'name'", param=f"tools[{i}].name")
            fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
            out.append({"type": "function", "function": fn})
        return out


# ---- items → chat messages -------------------------------------------------------------------------------


def _parts(content: list[Content], where: str, role: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        if isinstance(part, InputText):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, Refusal):
            out.append({"type": "text", "text": part.refusal})
        elif isinstance(part, InputImage):
            if not part.image_url:
                why = "input_image needs 'image_url' (an http(s) or data: URL); file ids are not supported"
                raise InvalidRequest(why, param=f"{param}.image_url")
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail:
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
        elif isinstance(part, InputFile):
            if not part.file_data:
                why = "input_file needs 'file_data' (a base64 data: URL); file ids and URLs are not supported"
                raise InvalidRequest(why, param=f"{param}.file_data")
            file = {"file_data": part.file_data, **({"filename": part.filename} if part.filename else {})}
            out.append({"type": "file", "file": file})
        else:
            raise InvalidRequest(f"content of type '{part.type}' is not supported in {role} input", param=param)
    return out


def _text_only(parts: list[dict[str, Any]], param: str) -> str:
    if any(p["type"] != "text" for p in parts):
        raise InvalidRequest("this content may hold text only", param=param)
    return "".join(p["text"] for p in parts)


def to_messages(items: list[InputItem], where: str = "input") -> list[dict[str, Any]]:
    """Items as chat messages: consecutive function calls join one assistant message (after its text, if any),
    each function output is a ``tool`` message, reasoning items are dropped."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"{where}[{i}]"
        if isinstance(item, MessageItem):
            content: Any = item.content
            if not isinstance(content, str):
                parts = _parts(content, param, item.role)
                # Assistant and system turns are text on every upstream; users may send images and files.
                content = parts if item.role == "user" else _text_only(parts, f"{param}.content")
            out.append({"role": item.role, "content": content})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}  # fmt: skip
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output
            if not isinstance(output, str):
                output = _text_only(_parts(output, param, "tool"), f"{param}.output")
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        elif item.type in ("mcp_call", "mcp_approval_request"):
            out += history_messages(item)
        elif item.type not in ("reasoning", "mcp_approval_response", "mcp_list_tools", "file_search_call",
                               "web_search_call"):  # fmt: skip
            raise InvalidRequest(f"input items of type '{item.type}' are not supported", param=f"{param}.type",
                                 code="unsupported_input_item")  # fmt: skip
    return out


# ---- request → chat request --------------------------------------------------------------------------------


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if not fmt.name or fmt.schema_ is None:
        raise InvalidRequest("text.format of type 'json_schema' needs 'name' and 'schema'", param="text.format")
    spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    if fmt.description:
        spec["description"] = fmt.description
    return {"type": "json_schema", "json_schema": spec}


def _tool_choice(req: ResponsesRequest, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """(chat tool_choice, chat tools). ``allowed_tools`` narrows the tools list itself, which every upstream
    understands."""
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        return choice, tools
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or name not in {t["function"]["name"] for t in tools}:
            raise InvalidRequest("tool_choice must name one of the function tools", param="tool_choice.name")
        return {"type": "function", "function": {"name": name}}, tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise InvalidRequest("allowed_tools needs 'mode' (auto or required) and a 'tools' list",
                                 param="tool_choice")  # fmt: skip
        for j, t in enumerate(allowed):
            if not isinstance(t, dict) or t.get("type") != "function":
                raise unsupported_tool(str(t.get("type") if isinstance(t, dict) else t), f"tool_choice.tools[{j}]")
        names = {t.get("name") for t in allowed}
        return mode, [t for t in tools if t["function"]["name"] in names]
    raise unsupported_tool(str(kind), "tool_choice.type")


def to_chat_request(req: ResponsesRequest, history: list[InputItem]) -> ChatCompletionRequest:
    """The chat request this response is generated from: ``instructions`` (as the system message; they are not
    carried over from a previous response), then the stored conversation, then the new input."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    messages += to_messages(history, "previous_response_id")
    messages += to_messages(req.items())
    if not messages:
        raise InvalidRequest("input is empty", param="input")
    tools = req.function_tools()
    choice, tools = _tool_choice(req, tools)
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    optional = {
        "stream": req.stream or None,
        "stream_options": {"include_usage": True} if req.stream else None,
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": tools or None,
        "tool_choice": choice if tools else None,  # upstreams reject a tool_choice without tools
        "parallel_tool_calls": req.parallel_tool_calls if tools else None,
        "response_format": _response_format(req.text),
        "verbosity": req.text.verbosity if req.text else None,
        "reasoning_effort": req.reasoning.effort if req.reasoning else None,
        "metadata": req.metadata or None,
        "user": req.user,
        "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key,
        "portico": req.portico,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return ChatCompletionRequest.model_validate(body)
