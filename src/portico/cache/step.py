"""The exact cache as two pipeline steps: ``cache`` looks the request up before anything costly runs, and its
closer stores the answer at the very end (after output checks), for plain and streamed answers alike."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from portico.cache.cacheability import Decision, decide, query_filter
from portico.cache.key import cache_key, pii_scope
from portico.cache.store import CacheStore
from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.assemble import assemble

log = logging.getLogger("portico.cache")
HEADER = "x-portico-cache"
_PENDING = "cache.pending"  # ctx.state: (key, ttl) of a miss to store, set by the lookup for its closer


class CacheMetrics:
    """``portico_cache_lookups_total{cache, result}`` and ``portico_cache_saved_usd_total{cache}``."""

    def __init__(self, metrics: Any) -> None:
        self.lookups = metrics.counter("cache_lookups", "Cache lookups by result", ("cache", "result"))
        self.saved = metrics.counter("cache_saved_usd", "Upstream cost not spent thanks to cache hits", ("cache",))


class ExactCache:
    """Shared by the two steps of one pipeline: the store, the options, the compiled rules."""

    def __init__(self, store: CacheStore, options: Any, metrics: CacheMetrics | None, prices: Any = None) -> None:
        self.store = store
        self.ttl = float(options.ttl_seconds)
        self.scope = options.scope
        self.cache_sampled = bool(options.cache_sampled)
        self.skip = query_filter(options)  # rules + classifier, loaded once
        self.metrics = metrics
        self.prices = prices

    def decide(self, ctx: RequestContext) -> Decision:
        return decide(ctx.request, ctx.query_text(), cache_control=ctx.state.get("http.cache_control"),
                      cache_sampled=self.cache_sampled, skip=self.skip)  # fmt: skip

    def key(self, ctx: RequestContext, namespace: str) -> str:
        who = ""
        if self.scope == "key":
            caller = ctx.caller or {}
            who = str(caller.get("key_id") or caller.get("key") or "anonymous")
        scope = f"{who}\x1f{ctx.application or ''}{pii_scope(ctx.state)}"
        return cache_key(ctx.request, ctx.target_model or ctx.model, scope, namespace)

    def count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.lookups.labels("exact", result).inc()


class CacheLookupStep(Step):
    name = "cache"
    reads = frozenset({"request", "model", "target_model", "caller", "application"})
    writes = frozenset({"response", "headers"})

    def __init__(self, cache: ExactCache) -> None:
        self.cache = cache
        self.closer = AnswerWriter("cache_write", _PENDING, self._save)

    async def run(self, ctx: RequestContext) -> None:
        d = self.cache.decide(ctx)
        if not d.write:
            ctx.headers[HEADER] = "bypass"
            ctx.note("cache", result="bypass", reason=d.reason)
            self.cache.count("bypass")
            return
        key = self.cache.key(ctx, d.namespace)
        ctx.state[_PENDING] = (key, d.ttl or self.cache.ttl)
        if not d.read:
            ctx.headers[HEADER] = "bypass"
            ctx.note("cache", result="bypass", reason=d.reason, write=True)
            self.cache.count("bypass")
            return
        try:
            raw = await self.cache.store.get(key)
        except Exception as e:  # the cache's store (Redis) is down: answer without the cache, never fail
            ctx.state.pop(_PENDING, None)
            ctx.headers[HEADER] = "bypass"
            ctx.note("cache", result="bypass", reason="store_unavailable", error=type(e).__name__)
            self.cache.count("error")
            log.warning("cache store unreachable: lookup bypassed", extra={"request_id": ctx.request_id})
            return
        if raw is None:
            ctx.headers[HEADER] = "miss"
            ctx.note("cache", result="miss")
            self.cache.count("miss")
            return
        entry = orjson.loads(raw)
        response = entry["response"]
        response["id"] = f"chatcmpl-{ctx.request_id}"  # a new answer to a new request, with the stored content
        ctx.state.pop(_PENDING, None)
        ctx.headers[HEADER] = "hit"
        age = round(time.time() - entry.get("stored_at", time.time()), 3)
        ctx.note("cache", result="hit", age_s=age, saved_usd=entry.get("cost_usd", 0.0))
        self.cache.count("hit")
        if self.cache.metrics is not None and entry.get("cost_usd"):
            self.cache.metrics.saved.labels("exact").inc(entry["cost_usd"])
        ctx.short_circuit("cache", response=response)

    async def _save(self, ctx: RequestContext, response: dict[str, Any], pending: tuple[str, float]) -> None:
        key, ttl = pending
        entry = {"response": response, "stored_at": time.time(), "cost_usd": upstream_cost(ctx, self.cache.prices)}
        await self.cache.store.set(key, orjson.dumps(entry), ttl)


class AnswerWriter(Step):
    """Stores the final answer of a request its lookup step marked as cacheable: a plain response at once, a
    stream once it has run to its end (a failed or abandoned stream stores nothing)."""

    reads = frozenset({"request", "response", "stream"})
    writes = frozenset({"stream"})

    def __init__(self, name: str, pending_key: str, save: Callable[[RequestContext, dict[str, Any], Any],
                                                               Awaitable[None]]) -> None:  # fmt: skip
        self.name = name  # type: ignore[misc]  # one class, one step name per cache kind
        self.pending_key = pending_key
        self.save = save

    async def run(self, ctx: RequestContext) -> None:
        pending = ctx.state.pop(self.pending_key, None)
        if pending is None:
            return
        if ctx.stream is not None:
            ctx.stream = self._tee(ctx, ctx.stream, pending)
        elif ctx.response is not None:
            await self._save(ctx, ctx.response, pending)

    async def _save(self, ctx: RequestContext, response: dict[str, Any], pending: Any) -> None:
        try:
            await self.save(ctx, response, pending)
        except Exception:  # a cache that cannot write must not fail an answered request
            log.exception("cache write failed", extra={"request_id": ctx.request_id, "step": self.name})

    async def _tee(
        self, ctx: RequestContext, chunks: AsyncIterator[dict[str, Any]], pending: Any
    ) -> AsyncIterator[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async for chunk in chunks:
            seen.append(chunk)
            yield chunk
        # Only a stream that ran to its end gets here (a failure or a disconnect raises out of the loop).
        response = assemble(seen)
        if response is not None:
            await self._save(ctx, response, pending)


def upstream_cost(ctx: RequestContext, prices: Any) -> float:
    # The answer's own call only: a step's model call (a query rewrite) may run before the lookup, and a hit pays
    # it again, so counting it as saved would overstate what the cache saves.
    return float(prices.request_cost(ctx, steps=False)) if prices is not None else 0.0
