"""In-process exact-cache store: LRU, LFU and FIFO with O(1) get, set and eviction.

One worker's memory: with several workers each has its own cache (use sqlite or redis to share).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from portico.cache.store import Clock, Policy


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires: float
    freq: int = 1


class MemoryStore:
    def __init__(self, max_entries: int, policy: Policy = "lru", *, clock: Clock | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.policy = policy
        self.clock = clock or time.monotonic
        # lru/fifo: one ordered dict, oldest first (lru moves a hit to the end, fifo never reorders).
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # lfu: keys by use count, each bucket oldest-first so ties go to the least recently used.
        self._by_freq: dict[int, OrderedDict[str, None]] = {}
        self._min_freq = 0

    async def get(self, key: str) -> bytes | None:
        e = self._entries.get(key)
        if e is None:
            return None
        if e.expires <= self.clock():
            self._remove(key)
            return None
        if self.policy == "lru":
            self._entries.move_to_end(key)
        elif self.policy == "lfu":
            self._bump(key, e)
        return e.value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        expires = self.clock() + ttl
        e = self._entries.get(key)
        if e is not None:  # a refresh replaces the value and keeps the entry's standing
            e.value, e.expires = value, expires
            if self.policy == "lru":
                self._entries.move_to_end(key)
            return
        while len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[key] = _Entry(value, expires)
        if self.policy == "lfu":
            self._by_freq.setdefault(1, OrderedDict())[key] = None
            self._min_freq = 1

    async def delete(self, key: str) -> None:
        if key in self._entries:
            self._remove(key)

    async def size(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        self._entries.clear()
        self._by_freq.clear()

    def _bump(self, key: str, e: _Entry) -> None:
        bucket = self._by_freq[e.freq]
        del bucket[key]
        if not bucket:
            del self._by_freq[e.freq]
            if self._min_freq == e.freq:
                self._min_freq = e.freq + 1
        e.freq += 1
        self._by_freq.setdefault(e.freq, OrderedDict())[key] = None

    def _evict(self) -> None:
        if self.policy == "lfu":
            while self._min_freq not in self._by_freq:  # after removals the minimum may have moved up
                self._min_freq = min(self._by_freq)
            key = next(iter(self._by_freq[self._min_freq]))
        else:
            key = next(iter(self._entries))
        self._remove(key)

    def _remove(self, key: str) -> None:
        e = self._entries.pop(key)
        if self.policy == "lfu":
            bucket = self._by_freq[e.freq]
            del bucket[key]
            if not bucket:
                del self._by_freq[e.freq]
