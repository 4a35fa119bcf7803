"""What every exact-cache backend offers, and the factory that picks one from the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

Policy = Literal["lru", "lfu", "fifo"]
Clock = Callable[[], float]


class CacheStore(Protocol):
    """Bytes by key, each with its own TTL; at most ``max_entries``, evicted by the store's policy."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def size(self) -> int: ...

    async def close(self) -> None: ...


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
