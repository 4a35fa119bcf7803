"""Chat completions → Anthropic Messages: the ``message`` object, Anthropic's stream events, and errors in
Anthropic's shape (``{"type": "error", "error": {"type", "message"}}``).

The stream is ``message_start``, ``ping``, then per content block ``content_block_start`` / ``_delta`` (text_delta,
or input_json_delta for a tool's arguments) / ``_stop``, then ``message_delta`` (stop reason and the usage
totals) and ``message_stop``. Blocks are strictly sequential, as Anthropic's are: a new block closes the last.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from portico.protocol.anthropic import anthropic_usage, stop_reason
from portico.protocol.errors import PorticoError, UpstreamError

Event = dict[str, Any]

# Portico's HTTP status → Anthropic's error type (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
                504: "timeout_error"}  # fmt: skip


def error_body(e: PorticoError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(e.status, "invalid_request_error" if e.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": e.message}}


def message_id(upstream_id: str | None) -> str:
    """Anthropic upstreams' ids are kept; others get a ``msg_`` id, which is what Anthropic clients expect."""
    return upstream_id if upstream_id and upstream_id.startswith("msg_") else "msg_" + uuid.uuid4().hex[:24]


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(f"the model called a tool with arguments that are not a JSON object: {arguments[:200]}")
    return value


def from_completion(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """A whole ``chat.completion`` as an Anthropic ``message`` (its first choice)."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content") or msg.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                        "name": fn.get("name") or "", "input": _tool_input(fn.get("arguments") or "")})  # fmt: skip
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": completion.get("model") or model, "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason")), "stop_sequence": None,
            "usage": anthropic_usage(completion.get("usage"))}  # fmt: skip


class MessageEvents:
    """One chunk stream as Anthropic's events; a new instance per request."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.index = -1  # the open block's index; -1 before the first
        self.open: str | None = None  # "text", or "tool:<chat tool-call index>"
        self.closed_tools: set[int] = set()
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.started = False

    def _start(self, chunk: dict[str, Any]) -> list[Event]:
        """``message_start`` and a ``ping``, before the first chunk's events: the message takes that chunk's id and
        model (an Anthropic upstream's ``msg_`` id is kept)."""
        self.started = True
        self.model = chunk.get("model") or self.model
        message = {"id": message_id(chunk.get("id")), "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[Event] = [] if self.started else self._start(chunk)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self.open != "text":
                    out += self._open_block({"type": "text", "text": ""}, "text")
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                out += self._tool(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _tool(self, call: dict[str, Any]) -> list[Event]:
        i = call.get("index", 0)
        out: list[Event] = []
        fn = call.get("function") or {}
        if self.open != f"tool:{i}":
            if i in self.closed_tools:  # Anthropic blocks cannot reopen; no known upstream interleaves calls
                raise UpstreamError("the upstream interleaved the arguments of parallel tool calls")
            block = {"type": "tool_use", "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                     "name": fn.get("name") or "", "input": {}}  # fmt: skip
            out += self._open_block(block, f"tool:{i}")
        if fn.get("arguments"):
            out.append(self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]}))
        return out

    def _open_block(self, block: dict[str, Any], kind: str) -> list[Event]:
        out = self._stop()
        self.index += 1
        self.open = kind
        return [*out, {"type": "content_block_start", "index": self.index, "content_block": block}]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def _stop(self) -> list[Event]:
        if self.open is None:
            return []
        if self.open.startswith("tool:"):
            self.closed_tools.add(int(self.open[5:]))
        self.open = None
        return [{"type": "content_block_stop", "index": self.index}]

    def finish(self) -> list[Event]:
        usage = anthropic_usage(self.usage)
        delta = {"stop_reason": stop_reason(self.finish_reason), "stop_sequence": None}
        head = [] if self.started else self._start({})  # an empty stream is still a message
        return [*head, *self._stop(), {"type": "message_delta", "delta": delta, "usage": usage},
                {"type": "message_stop"}]  # fmt: skip

    def failed(self, e: PorticoError) -> list[Event]:
        """The stream broke after the first byte: Anthropic's in-band ``error`` event ends it."""
        return [error_body(e)]
