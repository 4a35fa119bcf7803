"""ConverseStream events (decoded from AWS event-stream frames by ``gateway.eventstream``) → OpenAI chunks.

Events: ``messageStart``, ``contentBlockStart`` (a tool call's id and name), ``contentBlockDelta`` (text, or a
tool call's partial JSON input), ``contentBlockStop``, ``messageStop`` (the stop reason), ``metadata`` (usage).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from portico.gateway.eventstream import EXCEPTION
from portico.gateway.providers.bedrock.translate import finish_reason, usage
from portico.protocol.chat import chunk_dict, delta_choice, new_completion_id
from portico.protocol.errors import UpstreamError

# The upstream's exception type → the status the client sees (before its first byte; after it, the stream ends).
_EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "validationException": 400,
    "modelTimeoutException": 504,
}


class BedrockStream:
    """Translates one ConverseStream; a new instance per request (it tracks tool-call indexes and usage)."""

    def __init__(self, model: str) -> None:
        self._id = new_completion_id()  # Converse has no message id
        self._model = model
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}  # contentBlockIndex → OpenAI tool-call index
        self._usage: dict[str, Any] | None = None

    def feed(self, event: str | None, data: bytes) -> list[dict[str, Any]]:
        if event and event.startswith(EXCEPTION):
            self._raise(event.removeprefix(EXCEPTION), data)
        try:
            payload = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError as e:
            raise UpstreamError(f"upstream sent a malformed stream event: {e}", status=502) from e
        if not isinstance(payload, dict):
            raise UpstreamError("upstream sent a stream event that is not a JSON object", status=502)
        if event is None and len(payload) == 1:
            # Over SSE (llm-katan, Bedrock-compatible proxies) events come as the SDK shows them: {"name": {...}}.
            [(event, inner)] = payload.items()
            payload = inner if isinstance(inner, dict) else {}
            if event.endswith("Exception"):
                self._raise(event, orjson.dumps(payload))
        handler = {
            "messageStart": self._message_start,
            "contentBlockStart": self._block_start,
            "contentBlockDelta": self._block_delta,
            "messageStop": self._message_stop,
            "metadata": self._metadata,
        }.get(event or "")
        return handler(payload) if handler else []  # contentBlockStop and future events carry nothing to emit

    def finish(self) -> list[dict[str, Any]]:
        return [chunk_dict(id=self._id, model=self._model, created=self._created, choices=[],
                           usage=usage(self._usage))]  # fmt: skip

    # ---- events ----------------------------------------------------------------------------------------------

    def _message_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        use = (payload.get("start") or {}).get("toolUse")
        if not isinstance(use, dict):
            return []
        index = len(self._tool_index)
        self._tool_index[payload.get("contentBlockIndex", index)] = index
        call = {"index": index, "id": use.get("toolUseId"), "type": "function",
                "function": {"name": use.get("name"), "arguments": ""}}  # fmt: skip
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        delta = payload.get("delta") or {}
        text = delta.get("text")
        if isinstance(text, str):
            return [self._chunk({"content": text})] if text else []
        use = delta.get("toolUse")
        if isinstance(use, dict):
            index = self._tool_index.get(payload.get("contentBlockIndex", -1))
            piece = use.get("input") or ""
            if index is None or not piece:
                return []
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})]
        return []  # reasoningContent, citations: nothing OpenAI-shaped to say

    def _message_stop(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        reason = finish_reason(payload.get("stopReason")) or "stop"
        return [self._chunk({}, reason)]

    def _metadata(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(payload.get("usage"), dict):
            self._usage = payload["usage"]
        return []

    def _raise(self, kind: str, data: bytes) -> None:
        try:
            message = orjson.loads(data).get("message") or kind
        except (orjson.JSONDecodeError, AttributeError):
            message = data.decode("utf-8", "replace") or kind
        status = _EXCEPTION_STATUS.get(kind, 502)
        raise UpstreamError(f"upstream error mid-stream ({kind}): {message}", status=status,
                            retryable=status != 400)  # fmt: skip

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return chunk_dict(id=self._id, model=self._model, created=self._created,
                          choices=[delta_choice(0, delta, reason)])  # fmt: skip
