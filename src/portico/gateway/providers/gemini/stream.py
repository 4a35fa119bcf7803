"""Gemini ``streamGenerateContent?alt=sse`` → ``chat.completion.chunk`` dicts.

Each SSE ``data:`` payload is a whole ``GenerateContentResponse`` holding only the new parts, so translation is
per payload: text parts become content deltas, function calls arrive complete and become one tool-call delta
each, ``finishReason`` becomes the finish chunk. Usage comes with (at least) the last payload; the latest one
wins and is sent once, as the final chunk, by ``finish``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from portico.protocol.chat import chunk_dict, delta_choice, new_completion_id, new_tool_call_id, usage_dict
from portico.protocol.errors import UpstreamError

_FILTERED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
})  # fmt: skip


# ---- one response's candidates (shared with the non-streaming chat_response) ----------------------------


def raise_if_error(data: Any) -> None:
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        raise UpstreamError(f"Gemini error: {msg}", status=502)


def finish_reason(reason: str | None, has_calls: bool) -> str | None:
    if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"


def candidate_parts(candidate: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(answer texts, OpenAI tool calls) of one candidate. Thought summaries are not part of the answer."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append(tool_call(part["functionCall"]))
    return texts, calls


def tool_call(fc: dict[str, Any]) -> dict[str, Any]:
    args = orjson.dumps(fc.get("args") or {}).decode()
    return {"id": new_tool_call_id(), "type": "function", "function": {"name": fc.get("name", ""), "arguments": args}}


def logprobs(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """``logprobsResult`` (chosen + top candidates per step) → OpenAI's ``{"content": [...]}``."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    tops = result.get("topCandidates") or []

    def entry(c: dict[str, Any]) -> dict[str, Any]:
        token = c.get("token", "")
        return {"token": token, "logprob": c.get("logProbability", 0.0), "bytes": list(token.encode())}

    content = []
    for step, chosen in enumerate(result.get("chosenCandidates") or []):
        top = tops[step].get("candidates", []) if step < len(tops) else []
        content.append({**entry(chosen), "top_logprobs": [entry(c) for c in top]})
    return {"content": content}


def usage_of(meta: dict[str, Any] | None) -> dict[str, Any]:
    meta = meta or {}
    # Tool-use prompt tokens are billed as input; thinking tokens as output.
    prompt = meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0)
    thoughts = meta.get("thoughtsTokenCount", 0)
    out = usage_dict(prompt, meta.get("candidatesTokenCount", 0) + thoughts, meta.get("cachedContentTokenCount"))
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def is_blocked(data: dict[str, Any]) -> bool:
    """The prompt itself was blocked: Gemini answers with ``promptFeedback.blockReason`` and no candidates."""
    return not data.get("candidates") and bool((data.get("promptFeedback") or {}).get("blockReason"))


# ---- the stream ------------------------------------------------------------------------------------------


class GeminiStream:
    """Stateful translator of one Gemini stream; create a new one per request."""

    __slots__ = ("_calls", "_created", "_finished", "_id", "_model", "_started", "_usage")

    def __init__(self, model: str) -> None:
        self._model = model
        self._id: str | None = None  # fixed by the first payload so every chunk shares it
        self._created = int(time.time())
        self._usage: dict[str, Any] | None = None
        self._started: set[int] = set()  # candidate indexes that got their role chunk
        self._calls: dict[int, int] = {}  # candidate index → tool calls emitted (the next tool_calls index)
        self._finished: set[int] = set()

    def feed(self, event: str | None, data: bytes) -> list[dict[str, Any]]:
        if not data.strip():
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("Gemini sent a stream event that is not JSON", status=502) from None
        # Without alt=sse Gemini streams one JSON array; accept it too rather than fail.
        payloads = payload if isinstance(payload, list) else [payload]
        chunks: list[dict[str, Any]] = []
        for item in payloads:
            chunks.extend(self._translate(item))
        return chunks

    def finish(self) -> list[dict[str, Any]]:
        self._fix_identity({})
        return [self._chunk([], usage=usage_of(self._usage))]

    # ---- internals ---------------------------------------------------------------------------------------

    def _translate(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, dict):
            raise UpstreamError("Gemini sent a stream event that is not an object", status=502)
        raise_if_error(data)
        self._fix_identity(data)
        if isinstance(data.get("usageMetadata"), dict):
            self._usage = data["usageMetadata"]
        if is_blocked(data):
            return self._start(0) + self._finish(0, "content_filter")
        chunks: list[dict[str, Any]] = []
        for pos, candidate in enumerate(data.get("candidates") or []):
            chunks.extend(self._candidate(candidate, candidate.get("index", pos)))
        return chunks

    def _fix_identity(self, data: dict[str, Any]) -> None:
        if self._id is None:
            self._id = data.get("responseId") or new_completion_id()
            self._model = data.get("modelVersion") or self._model

    def _candidate(self, candidate: dict[str, Any], index: int) -> list[dict[str, Any]]:
        chunks = self._start(index)
        texts, calls = candidate_parts(candidate)
        probs = logprobs(candidate)  # belongs to this payload's text; ride on its first delta
        for text in filter(None, texts):  # Gemini sometimes sends empty text parts; they carry nothing
            chunks.append(self._chunk([delta_choice(index, {"content": text}, logprobs=probs)]))
            probs = None
        for call in calls:
            call_index = self._calls.get(index, 0)
            self._calls[index] = call_index + 1
            chunks.append(self._chunk([delta_choice(index, {"tool_calls": [{"index": call_index, **call}]})]))
        reason = finish_reason(candidate.get("finishReason"), index in self._calls)
        if reason is not None:
            chunks.extend(self._finish(index, reason))
        return chunks

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self._started:
            return []
        self._started.add(index)
        return [self._chunk([delta_choice(index, {"role": "assistant", "content": ""})])]

    def _finish(self, index: int, reason: str) -> list[dict[str, Any]]:
        if index in self._finished:
            return []  # some payloads repeat the finish reason; OpenAI sends it once
        self._finished.add(index)
        return [self._chunk([delta_choice(index, {}, reason)])]

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._id is not None
        return chunk_dict(id=self._id, model=self._model, created=self._created, choices=choices, usage=usage)
