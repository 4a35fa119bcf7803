"""What every exact-cache backend offers (``cache.factory.make_store`` picks one from the config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

Policy = Literal["lru", "lfu", "fifo"]
Clock = Callable[[], float]


class CacheStore(Protocol):
    """Bytes by key, each with its own TTL; at most ``max_entries``, evicted by the store's policy."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def size(self) -> int: ...

    async def close(self) -> None: ...
