"""Exact-cache store in Redis: shared by every worker and host that points at the same server.

Each entry is a string with Redis's own TTL; a sorted set ranks the live keys for eviction (score: last access
for lru, use count for lfu, insertion time for fifo). Updates go in one MULTI/EXEC so the set and the entries
never disagree for long; an index entry whose value has expired is dropped when it is met.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from portico.cache.store import Policy

PREFIX = "portico:cache"


class RedisStore:
    def __init__(self, url: str, max_entries: int, policy: Policy = "lru", *, prefix: str = PREFIX) -> None:
        # Short timeouts, no retries: a cache that is down is bypassed at once (the step counts it), not waited on.
        self.redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))
        self.max_entries = max_entries
        self.policy = policy
        self.prefix = prefix
        self.index = f"{prefix}:index:{policy}"

    def _k(self, key: str) -> str:
        return f"{self.prefix}:v:{key}"

    async def get(self, key: str) -> bytes | None:
        if self.policy == "fifo":
            value = await self.redis.get(self._k(key))
        else:
            # One round trip: the read and the index update (XX: only a key still indexed is touched).
            async with self.redis.pipeline(transaction=False) as p:
                p.get(self._k(key))
                if self.policy == "lru":
                    p.zadd(self.index, {key: time.time()}, xx=True)
                else:
                    p.zadd(self.index, {key: 1}, xx=True, incr=True)
                value, _ = await p.execute()
        if value is None:
            await self.redis.zrem(self.index, key)
            return None
        return bytes(value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if await self.redis.zscore(self.index, key) is None:  # a new key: make room first
            excess = int(await self.redis.zcard(self.index)) - self.max_entries + 1
            if excess > 0:
                victims = [m.decode() for m, _ in await self.redis.zpopmin(self.index, excess)]
                if victims:
                    await self.redis.delete(*(self._k(v) for v in victims))
        now = time.time()
        async with self.redis.pipeline(transaction=True) as p:
            p.set(self._k(key), value, px=max(1, int(ttl * 1000)))
            if self.policy == "lfu":
                # Use count plus a tiny insertion-time fraction: equal counts evict the older entry first.
                p.zadd(self.index, {key: 1 + now / 1e11}, nx=True)
            elif self.policy == "fifo":
                p.zadd(self.index, {key: now}, nx=True)
            else:
                p.zadd(self.index, {key: now})
            await p.execute()

    async def delete(self, key: str) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(self._k(key))
            p.zrem(self.index, key)
            await p.execute()

    async def size(self) -> int:
        return int(await self.redis.zcard(self.index))

    async def clear(self) -> None:
        """Drop every entry under this prefix (tests, and `portico cache clear` when it exists)."""
        keys = [k async for k in self.redis.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.redis.delete(*keys)

    async def close(self) -> None:
        await self.redis.aclose()
