"""Anthropic Messages SSE events → OpenAI ``chat.completion.chunk`` dicts.

The stop-reason and usage mappings live in ``portico.protocol.anthropic``, shared with the inbound
``/v1/messages`` endpoint; ``error_reason`` here is shared with the non-streaming path in ``translate.py``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from portico.protocol.anthropic import finish_reason, openai_usage
from portico.protocol.chat import chunk_dict, delta_choice, new_completion_id
from portico.protocol.errors import UpstreamError


def error_reason(data: dict[str, Any]) -> str:
    """The message of an Anthropic ``{"type": "error", "error": {...}}`` payload."""
    err = data.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or err)
    return str(err or data)


class AnthropicStream:
    """Translates one Anthropic stream; a new instance per request because it tracks ids and tool indexes."""

    def __init__(self, model: str) -> None:
        # Defaults in case the upstream skips message_start; message_start overrides them before any chunk.
        self._id = new_completion_id()
        self._model = model
        self._created = int(time.time())
        self._started = False
        # Anthropic numbers content blocks (text and tool_use alike); OpenAI numbers tool calls only.
        self._tool_index: dict[int, int] = {}
        self._input_tokens = 0
        self._output_tokens = 0
        self._cache_read: int | None = None
        self._cache_write: int | None = None

    # ---- protocol ------------------------------------------------------------------------------------

    def feed(self, event: str | None, data: bytes) -> list[dict[str, Any]]:
        if not data.strip():
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UpstreamError(f"upstream sent a malformed stream event: {e}", status=502) from e
        if not isinstance(payload, dict):
            raise UpstreamError("upstream sent a stream event that is not a JSON object", status=502)
        kind = payload.get("type") or event
        handler = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "message_delta": self._message_delta,
            "error": self._error,
        }.get(kind or "")
        # ping, content_block_stop, message_stop and event types added later carry nothing to emit.
        return handler(payload) if handler else []

    def finish(self) -> list[dict[str, Any]]:
        usage = openai_usage(self._input_tokens, self._output_tokens, self._cache_read, self._cache_write)
        return [chunk_dict(id=self._id, model=self._model, created=self._created, choices=[], usage=usage)]

    # ---- event handlers ------------------------------------------------------------------------------

    def _message_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        message = payload.get("message") or {}
        if not self._started:
            self._id = message.get("id") or self._id
            self._model = message.get("model") or self._model
        self._update_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        block = payload.get("content_block") or {}
        if block.get("type") == "text":
            text = block.get("text") or ""
            return [self._chunk({"content": text})] if text else []
        if block.get("type") != "tool_use":
            return []  # thinking, server tool results…: nothing OpenAI-shaped to say
        index = len(self._tool_index)
        self._tool_index[payload.get("index", index)] = index
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text") or ""
            return [self._chunk({"content": text})] if text else []
        if kind == "input_json_delta":
            piece = delta.get("partial_json") or ""
            index = self._tool_index.get(payload.get("index", -1))
            if not piece or index is None:
                return []
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})]
        return []  # thinking_delta, signature_delta, citations_delta

    def _message_delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        self._update_usage(payload.get("usage"))
        reason = finish_reason((payload.get("delta") or {}).get("stop_reason"))
        return [self._chunk({}, reason)] if reason else []

    def _error(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        raise UpstreamError(f"upstream error mid-stream: {error_reason(payload)}", status=502)

    # ---- helpers -------------------------------------------------------------------------------------

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        self._started = True
        return chunk_dict(
            id=self._id, model=self._model, created=self._created, choices=[delta_choice(0, delta, reason)]
        )

    def _update_usage(self, usage: dict[str, Any] | None) -> None:
        """message_start carries input counts, message_delta the cumulative output count (and sometimes both)."""
        if not usage:
            return
        if usage.get("input_tokens") is not None:
            self._input_tokens = usage["input_tokens"]
        if usage.get("output_tokens") is not None:
            self._output_tokens = usage["output_tokens"]
        if usage.get("cache_read_input_tokens") is not None:
            self._cache_read = usage["cache_read_input_tokens"]
        if usage.get("cache_creation_input_tokens") is not None:
            self._cache_write = usage["cache_creation_input_tokens"]
