"""Prices (USD per 1M tokens) and cost of a call.

A deployment's own ``price`` wins; otherwise the packaged table below is matched by upstream model id (exact,
then the longest known prefix, so dated ids like ``gpt-4o-mini-2024-07-18`` match). Unknown models cost 0 and
are reported as unpriced by the caller. The table is a starting point: set ``price`` where it matters.
"""

from __future__ import annotations

from typing import Any

from portico.config.schema import Price

# (input, output, cached input). Public list prices as of 2025; local models are free.
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "o3-mini": (1.10, 4.40, 0.55),
    "o4-mini": (1.10, 4.40, 0.275),
    "text-embedding-3-small": (0.02, 0.0, 0.02),
    "text-embedding-3-large": (0.13, 0.0, 0.13),
    "claude-3-5-haiku": (0.80, 4.00, 0.08),
    "claude-3-5-sonnet": (3.00, 15.00, 0.30),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "claude-opus-4": (15.00, 75.00, 1.50),
    "gemini-2.0-flash": (0.10, 0.40, 0.025),
    "gemini-2.5-flash": (0.30, 2.50, 0.075),
    "gemini-2.5-pro": (1.25, 10.00, 0.31),
    "gemini-1.5-pro": (1.25, 5.00, 0.3125),
    "gemini-1.5-flash": (0.075, 0.30, 0.01875),
}


def resolve_price(explicit: Price | None, model_id: str | None, provider: str) -> Price | None:
    if explicit is not None:
        return explicit
    if provider == "local":
        return Price(input=0.0, output=0.0, cached_input=0.0)
    if not model_id:
        return None
    mid = model_id.removeprefix("models/")
    key = mid if mid in DEFAULT_PRICES else max((k for k in DEFAULT_PRICES if mid.startswith(k)), key=len, default=None)
    if key is None:
        return None
    i, o, c = DEFAULT_PRICES[key]
    # Anthropic bills prompt-cache writes (5-minute entries) at 1.25x the input price.
    write = i * 1.25 if key.startswith("claude") else None
    return Price(input=i, output=o, cached_input=c, cache_write=write)


def cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


def cache_write_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cache_write_tokens") or 0)


def cost_usd(price: Price | None, usage: dict[str, Any] | None) -> float:
    if price is None or not usage:
        return 0.0
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = min(cached_tokens(usage), prompt)
    written = min(cache_write_tokens(usage), prompt - cached)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    write_rate = price.cache_write if price.cache_write is not None else price.input
    fresh = prompt - cached - written
    return (fresh * price.input + cached * cached_rate + written * write_rate + completion * price.output) / 1_000_000
