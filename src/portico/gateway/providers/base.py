"""The contract every provider folder implements.

An HTTP provider is *translation only*: it turns an OpenAI-shaped request into the upstream's HTTP request,
and the upstream's JSON / SSE events back into OpenAI-shaped dicts. Connection pooling, timeouts, SSE framing,
retries and fallbacks live in ``gateway/`` and are shared by all providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from yarl import URL

from portico.config.schema import HttpDeployment
from portico.protocol.chat import ChatCompletionRequest, Message, ToolCall
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest


@dataclass(slots=True)
class UpstreamRequest:
    """What the transport sends: ``POST url`` with ``headers`` and ``body`` serialised as JSON."""

    url: str | URL  # a yarl URL built with encoded=True is sent byte for byte (a signed path must not change)
    headers: dict[str, str]
    body: dict[str, Any]
    # Extra query parameters (e.g. Azure's api-version, Gemini's alt=sse).
    params: dict[str, str] = field(default_factory=dict)
    # The body already serialised, when the headers depend on its exact bytes (a request signature).
    data: bytes | None = None

    def payload(self) -> bytes:
        return self.data if self.data is not None else orjson.dumps(self.body)


class StreamTranslator(Protocol):
    """Stateful translator of one upstream stream into ``chat.completion.chunk`` dicts.

    ``feed`` gets each SSE event (its ``event:`` name, or None, and the raw ``data:`` payload) and returns the
    chunks to emit, possibly none. ``finish`` is called once after the upstream closes and returns any final
    chunks (e.g. the usage chunk). Returned chunks carry a ``usage`` key only on the final usage chunk.
    """

    def feed(self, event: str | None, data: bytes) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


class HttpProvider(Protocol):
    """Translation between OpenAI chat/embeddings and one upstream API family."""

    name: str

    def chat_request(self, req: ChatCompletionRequest, dep: HttpDeployment, *, stream: bool) -> UpstreamRequest:
        """Build the upstream request. ``dep.model`` is the upstream model id. Raise ``InvalidRequest`` for
        inputs the upstream cannot express (say which field)."""
        ...

    def chat_response(self, data: dict[str, Any], req: ChatCompletionRequest, dep: HttpDeployment) -> dict[str, Any]:
        """Upstream JSON → an OpenAI ``chat.completion`` dict (id, object, created, model, choices, usage)."""
        ...

    def stream_translator(self, req: ChatCompletionRequest, dep: HttpDeployment) -> StreamTranslator: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The upstream's human-readable reason from an error body (fall back to the raw text)."""
        ...

    def embeddings_request(self, req: EmbeddingRequest, dep: HttpDeployment) -> UpstreamRequest:
        """Raise ``InvalidRequest`` when the provider has no embeddings API."""
        ...

    def embeddings_response(
        self, data: dict[str, Any], req: EmbeddingRequest, dep: HttpDeployment
    ) -> dict[str, Any]: ...

    # Optional: ``prepare(dep)``, called once at start-up in a worker thread for set-up that may block.
    # Whether one upstream call returns ``n`` choices; otherwise the gateway makes n calls and merges them.
    supports_n: bool
    # Whether the upstream honours ``dimensions`` itself; otherwise the gateway truncates and re-normalises.
    native_dimensions: bool


FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def error_text(body: bytes) -> str:
    """Best-effort reason from an upstream error body: ``error.message``, ``message``, ``error`` or the text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500] or "no response body"
    if isinstance(data, list) and data:  # Gemini sometimes wraps errors in a list
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return body.decode("utf-8", "replace").strip()[:500]


def json_instruction(req: ChatCompletionRequest) -> str | None:
    """For upstreams without a JSON mode (Anthropic, Bedrock Converse): response_format as a system instruction."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    text = "Respond with only a JSON object: no prose, no markdown code fences."
    if fmt.type == "json_schema" and fmt.json_schema is not None and fmt.json_schema.schema_ is not None:
        schema = orjson.dumps(fmt.json_schema.schema_).decode()
        text += f" The object must match this JSON schema:\n{schema}"
    return text


def tool_arguments(call: ToolCall, param: str) -> dict[str, Any]:
    """An assistant tool call's JSON arguments as the object upstreams with structured tool input want."""
    try:
        args = orjson.loads(call.function.arguments) if call.function.arguments.strip() else {}
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"tool call arguments are not valid JSON: {e}", param=param) from e
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return args


Block = dict[str, Any]


def alternating_turns(
    req: ChatCompletionRequest,
    turn: Callable[[Message, int], tuple[str, list[Block]]],
    is_tool_result: Callable[[Block], bool],
    upstream: str,
) -> list[dict[str, Any]]:
    """Turns for APIs that require user/assistant alternation (Anthropic, Bedrock Converse): ``turn`` maps each
    non-system message to (role, blocks); empty turns are dropped (an assistant turn with no text and no tool calls
    says nothing), consecutive same-role turns merged, and a user turn's tool results moved before its other
    blocks (both APIs want them first)."""
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        if msg.role in ("system", "developer"):
            continue
        role, blocks = turn(msg, i)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out:
        raise InvalidRequest(f"{upstream} needs at least one user or assistant message", param="messages")
    for t in out:
        if t["role"] == "user":
            t["content"].sort(key=lambda b: not is_tool_result(b))  # stable: order within each kind kept
    return out


def named_tool(req: ChatCompletionRequest, choice: dict[str, Any]) -> str:
    """The function an object ``tool_choice`` names, checked against ``tools``."""
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest("tool_choice object must be {type: 'function', function: {name}}", param="tool_choice")
    if name not in {t.function.name for t in req.tools or []}:
        raise InvalidRequest(f"tool_choice names '{name}', which is not in tools", param="tool_choice")
    return name
