"""Caches of intermediate results — retrieval, SQL, tool and web-search calls — by exact key, each kind with its
own namespace and TTL, on the configured exact-cache backend (so they are shared between workers when it is
SQLite or Redis).

    results = services.result_cache("retrieval", ttl_seconds=600)
    hits, cached = await results.get_or_compute({"kb": kb, "query": q, "k": k}, lambda: search(q))

A failure in ``compute`` is never cached; values must be JSON-serialisable.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from portico.cache.store import CacheStore

T = TypeVar("T")

log = logging.getLogger("portico.cache")


class ResultCache:
    def __init__(self, store: CacheStore, namespace: str, ttl_seconds: float, metrics: Any = None) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.store = store
        self.namespace = namespace
        self.ttl = ttl_seconds
        self.lookups = metrics.counter("cache_lookups", "Cache lookups by result", ("cache", "result")) \
            if metrics is not None else None  # fmt: skip

    def key(self, parts: Any) -> str:
        body = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        return f"{self.namespace}:" + hashlib.blake2b(body, digest_size=20).hexdigest()

    async def get(self, parts: Any) -> Any | None:
        raw = await self.store.get(self.key(parts))
        return None if raw is None else orjson.loads(raw)["v"]

    async def put(self, parts: Any, value: Any, ttl_seconds: float | None = None) -> None:
        await self.store.set(self.key(parts), orjson.dumps({"v": value}), ttl_seconds or self.ttl)

    async def get_or_compute(
        self, parts: Any, compute: Callable[[], Awaitable[T]], ttl_seconds: float | None = None
    ) -> tuple[T, bool]:
        """(value, True) from the cache, else (computed value, False) after storing it."""
        key = self.key(parts)
        try:
            raw = await self.store.get(key)
        except Exception:  # the store (Redis) is down: compute without the cache, never fail the request
            self._count("error")
            log.warning("result cache unreachable: lookup bypassed", extra={"namespace": self.namespace})
            return await compute(), False
        if raw is not None:
            self._count("hit")
            return orjson.loads(raw)["v"], True
        self._count("miss")
        value = await compute()
        try:
            await self.store.set(key, orjson.dumps({"v": value}), ttl_seconds or self.ttl)
        except Exception:
            log.warning("result cache unreachable: value not stored", extra={"namespace": self.namespace})
        return value, False

    def _count(self, result: str) -> None:
        if self.lookups is not None:
            self.lookups.labels(self.namespace, result).inc()
