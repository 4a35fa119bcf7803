"""Builds the ``cache`` step from the global ``cache:`` config merged with a pipeline's own options."""

from __future__ import annotations

from typing import Any

from portico.cache.step import CacheLookupStep, CacheMetrics, ExactCache
from portico.cache.store import make_store
from portico.config.schema import CacheConfig
from portico.pipeline.options import parse_options
from portico.pipeline.services import Services


def cache_options(base: CacheConfig, options: dict[str, Any]) -> CacheConfig:
    return parse_options(CacheConfig, {**base.model_dump(), **options})


def cache_step(options: dict[str, Any], services: Services) -> CacheLookupStep:
    cfg = services.cfg
    opts = cache_options(cfg.cache, options)
    store = make_store(opts, cfg.state_dir, cfg.state)
    services.on_close(store.close)
    return CacheLookupStep(ExactCache(store, opts, CacheMetrics(services.metrics), services.prices))
