"""Builds the ``cache`` step from the global ``cache:`` config merged with a pipeline's own options, and the exact-cache
backend it names (imported only when chosen: redis and sqlite stay unloaded otherwise)."""

from __future__ import annotations

from typing import Any

from portico.cache.step import CacheLookupStep, CacheMetrics, ExactCache
from portico.cache.store import CacheStore, Clock
from portico.config.schema import CacheConfig
from portico.pipeline.options import parse_options
from portico.pipeline.services import Services


def make_store(cfg: Any, state_dir: str, state_url: str, *, clock: Clock | None = None) -> CacheStore:
    """``cfg`` is a CacheConfig (or the same fields merged with an application's options)."""
    if cfg.backend == "memory":
        from portico.cache.memory import MemoryStore

        return MemoryStore(cfg.max_entries, cfg.policy, clock=clock)
    if cfg.backend == "sqlite":
        from portico.cache.sqlite import SqliteStore

        return SqliteStore(cfg.url or f"{state_dir}/cache.db", cfg.max_entries, cfg.policy, clock=clock)
    from portico.cache.redis import RedisStore

    url = cfg.url or state_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("cache.backend redis needs cache.url (or state) to be a redis:// URL")
    return RedisStore(url, cfg.max_entries, cfg.policy)


def cache_options(base: CacheConfig, options: dict[str, Any]) -> CacheConfig:
    return parse_options(CacheConfig, {**base.model_dump(), **options})


def cache_step(options: dict[str, Any], services: Services) -> CacheLookupStep:
    cfg = services.cfg
    opts = cache_options(cfg.cache, options)
    store = make_store(opts, cfg.state_dir, cfg.state)
    services.on_close(store.close)
    return CacheLookupStep(ExactCache(store, opts, CacheMetrics(services.metrics), services.prices))
