"""The ``semantic_cache`` pipeline step: answer a question that means the same as one answered before.

Only single-turn requests take part (one user message, optionally after system messages, no tools): the
meaning of a follow-up depends on the conversation, which an embedding of its last message does not see. The
scope holds the caller (per key by default), the application, the model and everything else in the request but
the user's question, so two system prompts never share answers. The query embedding is the request's shared
one (``services.embedder.query``), so a router or guardrail that also needs it does not pay twice.

Options (in an application's ``steps:``)::

    - use: semantic_cache
      verifier: /path/to/verifier     # from `portico cache train-verifier`; without one, cosine only
      min_similarity: 0.97            # cosine floor (default 0.97 without a verifier, 0.7 with one)
      verifier_threshold: 0.9         # default: the threshold stored with the verifier
      ttl_seconds: 3600
      max_entries: 100000
      scope: key                      # or global
      store: memory                   # memory (this process, the default) | redis | postgres
      url: redis://127.0.0.1:6379/0   # redis: defaults to the global `state:` when that is Redis;
                                      #   postgres: postgresql://user@host/db (pgvector 0.8+), required
      prefix: portico:semantic        # redis: key prefix (one cache per prefix)
      table: portico_semantic_cache   # postgres: table name (one cache per table)

``memory`` keeps the index in this process; ``redis`` and ``postgres`` share one cache between every Portico
replica pointing at them (semantic_redis.py and semantic_pg.py say how, and what each costs). Applications may
share one prefix or table (their scopes keep answers apart, and ``max_entries`` then bounds them together) if they
use the same embedding model; give each its own otherwise. A store that fails
(down, unreachable) makes the lookup a miss and the write a no-op, with the error logged: a cache outage must not
fail requests.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from portico.cache.cacheability import decide, query_filter
from portico.cache.key import cache_key, pii_scope
from portico.cache.semantic import SemanticIndex, SemanticMatcher, SemanticStore, describe
from portico.cache.step import HEADER, AnswerWriter, CacheMetrics, upstream_cost
from portico.cache.verifier import Verifier
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options
from portico.pipeline.services import Services
from portico.pipeline.step import Step

_PENDING = "semantic_cache.pending"
log = logging.getLogger("portico.cache")


class SemanticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verifier: str | None = None
    min_similarity: float | None = Field(default=None, ge=-1, le=1)
    verifier_threshold: float | None = Field(default=None, ge=0, le=1)
    ttl_seconds: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=100_000, ge=1)
    scope: Literal["key", "global"] = "key"
    cache_sampled: bool = False
    skip_patterns: list[str] | None = None
    skip_classifier: bool | str = True  # as in `cache:`: the packaged model, a path, or false
    skip_threshold: float | None = Field(default=None, ge=0, le=1)
    k: int = Field(default=4, ge=1, le=50)
    store: Literal["memory", "redis", "postgres"] = "memory"
    url: str | None = None
    prefix: str | None = Field(default=None, min_length=1)
    table: str | None = None

    @model_validator(mode="after")
    def _store_options(self) -> SemanticOptions:
        if self.store == "memory" and self.url is not None:
            raise ValueError("url is for store: redis or postgres (the default store, memory, takes none)")
        if self.prefix is not None and self.store != "redis":
            raise ValueError("prefix is for store: redis")
        if self.table is not None and self.store != "postgres":
            raise ValueError("table is for store: postgres")
        if self.store == "postgres" and not (self.url or "").startswith(("postgres://", "postgresql://")):
            raise ValueError("store: postgres needs url: postgresql://user@host/database")
        if self.url is not None and self.store == "redis" and not self.url.startswith(("redis://", "rediss://",
                                                                                        "unix://")):  # fmt: skip
            raise ValueError("store: redis needs url: redis://host:port/db")
        return self


def make_store(opts: SemanticOptions, state_url: str | None = None) -> SemanticStore:
    """The store ``opts`` asks for; ``state_url`` (the global ``state:``) is Redis's default url."""
    if opts.store == "memory":
        return SemanticIndex(None, opts.max_entries)
    if opts.store == "redis":
        from portico.cache.semantic_redis import DEFAULT_PREFIX, RedisSemanticStore

        url = opts.url or state_url or ""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("store: redis needs url: redis://host:port/db (or the global state: to be Redis)")
        return RedisSemanticStore(url, opts.max_entries, prefix=opts.prefix or DEFAULT_PREFIX)
    from portico.cache.semantic_pg import DEFAULT_TABLE, PgSemanticStore

    assert opts.url is not None
    return PgSemanticStore(opts.url, opts.max_entries, table=opts.table or DEFAULT_TABLE)


def single_turn(ctx: RequestContext) -> bool:
    req = ctx.request
    if req.tools:
        return False
    roles = [m.role for m in req.messages]
    return roles[-1] == "user" and roles.count("user") == 1 and all(r in ("system", "developer", "user") for r in roles)


class SemanticCacheStep(Step):
    name = "semantic_cache"
    reads = frozenset({"request", "model", "target_model", "caller", "application", "query"})
    writes = frozenset({"response", "headers"})

    def __init__(self, opts: SemanticOptions, embedder: Any, metrics: CacheMetrics | None, prices: Any,
                 store: SemanticStore | None = None) -> None:  # fmt: skip
        self.opts = opts
        self.embedder = embedder
        self.metrics = metrics
        self.prices = prices
        verifier = Verifier.load(opts.verifier) if opts.verifier else None
        floor = opts.min_similarity if opts.min_similarity is not None else (0.7 if verifier else 0.97)
        self.index = store if store is not None else make_store(opts)
        self.matcher = SemanticMatcher(self.index, min_similarity=floor, verifier=verifier,
                                       threshold=opts.verifier_threshold, k=opts.k)  # fmt: skip
        self.skip = query_filter(opts)
        self.closer = AnswerWriter("semantic_cache_write", _PENDING, self._save)

    def _scope(self, ctx: RequestContext, namespace: str) -> str:
        who = ""
        if self.opts.scope == "key":
            who = str((ctx.caller or {}).get("key_id") or (ctx.caller or {}).get("key") or "anonymous")
        # Everything but the question: model, system prompt, sampling and format parameters.
        rest = ctx.request.model_copy(update={"messages": [m for m in ctx.request.messages if m.role != "user"]})
        scope = f"{who}\x1f{ctx.application or ''}{pii_scope(ctx.state)}"  # see pii_scope: never another's values
        return cache_key(rest, ctx.target_model or ctx.model, scope, namespace)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.lookups.labels("semantic", result).inc()

    async def run(self, ctx: RequestContext) -> None:
        if not single_turn(ctx):
            return self._bypass(ctx, "multi-turn or tools")
        text = ctx.query_text().strip()
        d = decide(ctx.request, text, cache_control=ctx.state.get("http.cache_control"),
                   cache_sampled=self.opts.cache_sampled, skip=self.skip)  # fmt: skip
        if not d.write or not text:
            return self._bypass(ctx, d.reason or "no question text")
        vector = await self.embedder.query(ctx)
        scope = self._scope(ctx, d.namespace)
        if d.read:
            try:
                m = await self.matcher.amatch(scope, text, vector)
            except Exception as e:  # a cache outage is a miss, not a failed request
                log.warning("semantic cache lookup failed (%s): %s", self.opts.store, e)
                ctx.note("semantic_cache", result="error", error=str(e)[:200])
                self._count("error")
                ctx.headers.setdefault(HEADER, "miss")
                return None
            if m.entry is not None:
                entry = orjson.loads(m.entry.value)
                response = entry["response"]
                response["id"] = f"chatcmpl-{ctx.request_id}"
                ctx.headers[HEADER] = "semantic-hit"
                ctx.note("semantic_cache", result="hit", saved_usd=entry.get("cost_usd", 0.0), **describe(m))
                self._count("hit")
                if self.metrics is not None and entry.get("cost_usd"):
                    self.metrics.saved.labels("semantic").inc(entry["cost_usd"])
                ctx.short_circuit("semantic_cache", response=response)
                return None
            ctx.note("semantic_cache", result="miss", **describe(m))
            self._count("miss")
            ctx.headers.setdefault(HEADER, "miss")
        else:
            self._bypass(ctx, d.reason, write=True)
        ctx.state[_PENDING] = (scope, text, np.asarray(vector, dtype=np.float32), d.ttl or self.opts.ttl_seconds)
        return None

    def _bypass(self, ctx: RequestContext, reason: str, write: bool = False) -> None:
        ctx.headers.setdefault(HEADER, "bypass")
        ctx.note("semantic_cache", result="bypass", reason=reason, **({"write": True} if write else {}))
        self._count("bypass")

    async def _save(self, ctx: RequestContext, response: dict[str, Any], pending: Any) -> None:
        scope, text, vector, ttl = pending
        entry = {"response": response, "stored_at": time.time(), "cost_usd": upstream_cost(ctx, self.prices)}
        try:
            await self.index.put(scope, text, vector, orjson.dumps(entry), ttl)
        except Exception as e:
            log.warning("semantic cache write failed (%s): %s", self.opts.store, e)


def _lower_precision(cfg: Any, model: str) -> str | None:
    """The precision of a local embedder below float32, if any (its vectors move the verifier's inputs)."""
    m = cfg.model(model) if cfg is not None and hasattr(cfg, "model") else None
    for d in getattr(m, "deployments", None) or []:
        if getattr(d, "precision", "float32") != "float32":
            return str(d.precision)
    return None


def semantic_cache_step(options: dict[str, Any], services: Services) -> SemanticCacheStep:
    opts = parse_options(SemanticOptions, options)
    model = services.embedder.require("semantic_cache")
    low = _lower_precision(getattr(services, "cfg", None), model)
    if low is not None:
        log.warning("semantic_cache: the embedder '%s' runs at precision %s, but the verifier and min_similarity were "
                    "fitted on float32 vectors, so hit precision may differ; for faster ingestion set "
                    "knowledge.document_embedder instead", model, low)  # fmt: skip
    store = make_store(opts, getattr(getattr(services, "cfg", None), "state", None))
    if opts.store != "memory":
        services.on_close(store.close)
    return SemanticCacheStep(opts, services.embedder, CacheMetrics(services.metrics), services.prices, store)
