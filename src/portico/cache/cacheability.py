"""Whether a request may be answered from the cache, and whether its answer may be stored.

Three sources decide, strictest first: the client (``Cache-Control: no-store / no-cache`` or the body extension
``portico: {cache: {mode: bypass | refresh | use, ttl, namespace}}``), sampling (a sampled answer is one draw of
many: not reused unless the configuration says so), and the query itself (user-specific or time-sensitive
questions — "my order", "the weather today" — have no answer that is right for the next caller or tomorrow).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest

# Rules, not a trained classifier: each is a pattern an operator can read and extend (cache.skip_patterns).
DEFAULT_SKIP_PATTERNS: tuple[str, ...] = (
    r"\b(my|mine|our)\s+(\w+\s+)?(orders?|accounts?|balance|passwords?|bookings?|reservations?|subscriptions?|"
    r"invoices?|bills?|cart|profile|package|delivery|shipment|tickets?|appointments?|plan|payments?)\b",
    r"\b(am i|do i have|did i|have i|should i)\b",
    r"\b(today|tonight|tomorrow|yesterday|right now|currently|at the moment|this (week|morning|afternoon|evening))\b",
    r"\b(latest|current|recent|breaking|live|newest)\s+(news|prices?|scores?|weather|status|rates?|versions?|events?)\b",
    r"\b(weather|forecast|stock price|exchange rate|what time is it|what day is it)\b",
)
MODES = ("use", "refresh", "bypass")


@dataclass(frozen=True, slots=True)
class Decision:
    read: bool  # look the request up
    write: bool  # store the answer
    reason: str  # why not, when either is off ("" otherwise)
    ttl: float | None = None  # the client's TTL (seconds), else the configured one
    namespace: str = ""


def compile_patterns(patterns: list[str] | None) -> re.Pattern[str] | None:
    """One alternation, compiled once at start-up (a bad pattern fails the config, not a request)."""
    pats = DEFAULT_SKIP_PATTERNS if patterns is None else tuple(patterns)
    if not pats:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"cache.skip_patterns: {e}") from None


def _extension(req: ChatCompletionRequest) -> dict[str, Any]:
    ext = (req.portico or {}).get("cache")
    if ext is None:
        return {}
    if not isinstance(ext, dict):
        raise InvalidRequest("portico.cache must be an object {ttl, namespace, mode}", param="portico.cache")
    unknown = set(ext) - {"ttl", "namespace", "mode"}
    if unknown:
        raise InvalidRequest(f"portico.cache: unknown field '{sorted(unknown)[0]}'", param="portico.cache")
    mode = ext.get("mode", "use")
    if mode not in MODES:
        raise InvalidRequest("portico.cache.mode must be use, refresh or bypass", param="portico.cache.mode")
    ttl = ext.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise InvalidRequest("portico.cache.ttl must be a positive number of seconds", param="portico.cache.ttl")
    ns = ext.get("namespace", "")
    if not isinstance(ns, str) or len(ns) > 200:
        raise InvalidRequest("portico.cache.namespace must be a string of at most 200 characters",
                             param="portico.cache.namespace")  # fmt: skip
    return {"mode": mode, "ttl": float(ttl) if ttl is not None else None, "namespace": ns}


def sampled(req: ChatCompletionRequest) -> bool:
    # Unset temperature means the provider's default, which samples (1.0 at OpenAI).
    return (req.n or 1) > 1 or req.temperature is None or req.temperature > 0


def decide(
    req: ChatCompletionRequest,
    query: str,
    *,
    cache_control: str | None,
    cache_sampled: bool,
    skip: re.Pattern[str] | None,
) -> Decision:
    ext = _extension(req)
    ttl, ns = ext.get("ttl"), ext.get("namespace", "")
    directives = {d.strip().lower() for d in (cache_control or "").split(",")}
    if "no-store" in directives or ext.get("mode") == "bypass":
        return Decision(False, False, "client: no-store", ttl, ns)
    read = "no-cache" not in directives and ext.get("mode") != "refresh"
    if sampled(req) and not cache_sampled:
        return Decision(False, False, "sampled request (temperature > 0 or unset, or n > 1)", ttl, ns)
    if skip is not None and query and skip.search(query):
        return Decision(False, False, "user-specific or time-sensitive query", ttl, ns)
    return Decision(read, True, "" if read else "client: no-cache", ttl, ns)
