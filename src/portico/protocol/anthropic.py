"""Anthropic Messages ↔ OpenAI chat mappings used in both directions: by the Anthropic provider (Portico calls
Anthropic) and by ``/v1/messages`` (an Anthropic client calls Portico). One table per mapping, read both ways."""

from __future__ import annotations

from typing import Any

from portico.protocol.chat import usage_dict
from portico.protocol.errors import InvalidRequest

# Anthropic stop_reason → OpenAI finish_reason. The reverse direction takes the first stop reason per finish reason.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP = {finish: stop for stop, finish in reversed(_FINISH.items())}


def finish_reason(stop_reason: str | None) -> str | None:
    """Anthropic ``stop_reason`` → OpenAI ``finish_reason``; unknown future reasons read as a normal stop."""
    if stop_reason is None:
        return None
    return _FINISH.get(stop_reason, "stop")


def stop_reason(finish: str | None) -> str:
    """OpenAI ``finish_reason`` → Anthropic ``stop_reason`` (``function_call`` is the legacy name of tool_calls)."""
    return _STOP.get("tool_calls" if finish == "function_call" else finish or "stop", "end_turn")


def openai_usage(
    input_tokens: int, output_tokens: int, cache_read: int | None, cache_write: int | None
) -> dict[str, Any]:
    """Anthropic counts cached prompt tokens separately from ``input_tokens``; OpenAI's prompt_tokens includes them."""
    prompt = input_tokens + (cache_read or 0) + (cache_write or 0)
    usage = usage_dict(prompt, output_tokens, cached=cache_read or 0)
    if cache_write is not None:
        usage["prompt_tokens_details"]["cache_write_tokens"] = cache_write
    return usage


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """The inverse of :func:`openai_usage`."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = details.get("cache_write_tokens")
    out: dict[str, Any] = {
        "input_tokens": max(int(usage.get("prompt_tokens") or 0) - cached - int(written or 0), 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
    }
    if written is not None:
        out["cache_creation_input_tokens"] = int(written)
    return out


def image_block(url: str, param: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` (http(s) or base64 ``data:`` URL) as an Anthropic image block."""
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if sep and encoding == "base64" and media_type:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    raise InvalidRequest("image_url must be an http(s) URL or a base64 data: URL", param=param)


def image_url(source: dict[str, Any], param: str) -> str:
    """The inverse of :func:`image_block`: an Anthropic image ``source`` as an OpenAI image URL."""
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    if source.get("type") == "base64" and source.get("media_type") and isinstance(source.get("data"), str):
        return f"data:{source['media_type']};base64,{source['data']}"
    raise InvalidRequest("an image source must be {type: base64, media_type, data} or {type: url, url}", param=param)
