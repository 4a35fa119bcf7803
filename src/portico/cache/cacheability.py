"""Whether a request may be answered from the cache, and whether its answer may be stored.

Three sources decide, strictest first: the client (``Cache-Control: no-store / no-cache`` or the body extension
``portico: {cache: {mode: bypass | refresh | use, ttl, namespace}}``), sampling (a sampled answer is one draw of
many: not reused unless the configuration says so), and the query itself (user-specific or time-sensitive
questions — "my order", "the weather today" — have no answer that is right for the next caller or tomorrow).

The query is judged by two checks, and either one saying "don't cache" is enough: first the rules (regexes an
operator can read and extend, ``skip_patterns``), then — only if no rule matched — the classifier in
``cacheability_model.py`` (``skip_classifier``, ``skip_threshold``), which catches the phrasings no rule anticipated.
"OR" because the two errors are not equal: a query wrongly skipped costs one model call; a query wrongly cached
serves someone else's (or yesterday's) answer. The trace note names which check decided, e.g. ``classifier:
user-specific or time-sensitive (p=0.93)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from portico.cache.cacheability_model import CacheabilityModel
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest

# Each is a pattern an operator can read and extend (cache.skip_patterns); the classifier backs them up.
DEFAULT_SKIP_PATTERNS: tuple[str, ...] = (
    # "My order", "our invoices" — but not in a how-to: "how do I reset my password" has one answer for everyone.
    r"^(?!.*\bhow (?:(?:do|can|should|would) (?:i|we|you)|to)\b).*?"
    r"\b(my|mine|our)\s+(\w+\s+)?(orders?|accounts?|balance|passwords?|bookings?|reservations?|subscriptions?|"
    r"invoices?|bills?|cart|profile|package|delivery|shipment|tickets?|appointments?|plan|payments?)\b",
    # Not "should I": on the packaged training set it matched 29 general questions ("how often should I feed my
    # cat") and no personal one the other rules or the classifier miss.
    r"\b(am i|do i have|did i|have i)\b",
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


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """The per-query half of the decision: rules, then the classifier. Built once per step at start-up."""

    rules: re.Pattern[str] | None
    model: CacheabilityModel | None = None
    threshold: float = 0.5

    def reason(self, query: str) -> str:
        """Why this query must not be cached, or "" when it may be."""
        if not query:
            return ""
        m = self.rules.search(query) if self.rules is not None else None
        if m is not None:
            return f'rule: user-specific or time-sensitive ("{m.group(0)[-40:].strip()}")'
        if self.model is not None:
            p = self.model.probability(query)
            if p >= self.threshold:
                return f"classifier: user-specific or time-sensitive (p={p:.2f})"
        return ""


def query_filter(options: Any) -> QueryFilter:
    """From a cache's options (``skip_patterns``, ``skip_classifier``: true | false | a model path,
    ``skip_threshold``): a bad pattern or an unreadable model fails the config at start-up, not a request."""
    rules = compile_patterns(options.skip_patterns)
    spec = options.skip_classifier
    if spec is False:
        return QueryFilter(rules)
    model = CacheabilityModel.load(None if spec is True else spec)
    threshold = options.skip_threshold if options.skip_threshold is not None else model.threshold
    return QueryFilter(rules, model, float(threshold))


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
    skip: QueryFilter | None,
) -> Decision:
    ext = _extension(req)
    ttl, ns = ext.get("ttl"), ext.get("namespace", "")
    directives = {d.strip().lower() for d in (cache_control or "").split(",")}
    if "no-store" in directives or ext.get("mode") == "bypass":
        return Decision(False, False, "client: no-store", ttl, ns)
    read = "no-cache" not in directives and ext.get("mode") != "refresh"
    if sampled(req) and not cache_sampled:
        return Decision(False, False, "sampled request (temperature > 0 or unset, or n > 1)", ttl, ns)
    why = skip.reason(query) if skip is not None else ""
    if why:
        return Decision(False, False, why, ttl, ns)
    return Decision(read, True, "" if read else "client: no-cache", ttl, ns)
