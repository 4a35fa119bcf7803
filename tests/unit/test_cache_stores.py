"""Exact-cache stores: the same contract on memory, SQLite and the real Redis — TTL, bounds, eviction order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portico.cache.memory import MemoryStore
from portico.cache.redis import RedisStore
from portico.cache.sqlite import SqliteStore
from portico.cache.store import CacheStore

REDIS = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _store(kind: str, policy: str, max_entries: int, tmp: Path, clock: Clock | None) -> CacheStore:
    if kind == "memory":
        return MemoryStore(max_entries, policy, clock=clock)  # type: ignore[arg-type]
    if kind == "sqlite":
        return SqliteStore(str(tmp / "c.db"), max_entries, policy, clock=clock)  # type: ignore[arg-type]
    return RedisStore(REDIS, max_entries, policy, prefix=f"portico:test:{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:
    made: list[CacheStore] = []

    async def factory(policy: str = "lru", max_entries: int = 3, clock: Clock | None = None) -> CacheStore:
        s = await _store(request.param, policy, max_entries, tmp_path, clock)
        made.append(s)
        return s

    factory.kind = request.param  # type: ignore[attr-defined]
    yield factory
    for s in made:
        if isinstance(s, RedisStore):
            await s.clear()
        await s.close()


async def _keys(store: CacheStore, keys: str) -> str:
    """The keys still present (each read counts as a use)."""
    return "".join([k for k in keys if await store.get(k) is not None])


async def test_get_set_replace_delete(make) -> None:  # type: ignore[no-untyped-def]
    s = await make()
    assert await s.get("a") is None
    await s.set("a", b"1", 60)
    await s.set("a", b"2", 60)
    assert await s.get("a") == b"2" and await s.size() == 1
    await s.delete("a")
    assert await s.get("a") is None


async def test_lru_evicts_the_least_recently_used(make) -> None:  # type: ignore[no-untyped-def]
    s = await make("lru", 3)
    for k in "abc":
        await s.set(k, k.encode(), 60)
        await asyncio.sleep(0.002)  # distinct access times for the Redis score
    assert await s.get("a") == b"a"  # a is now the most recent; b the least
    await asyncio.sleep(0.002)
    await s.set("d", b"d", 60)
    assert await s.size() == 3
    assert await s.get("b") is None and await _keys(s, "acd") == "acd"


async def test_fifo_evicts_the_oldest_insert_even_if_used(make) -> None:  # type: ignore[no-untyped-def]
    s = await make("fifo", 3)
    for k in "abc":
        await s.set(k, k.encode(), 60)
        await asyncio.sleep(0.002)
    await s.get("a")
    await s.set("d", b"d", 60)
    assert await s.get("a") is None and await _keys(s, "bcd") == "bcd"


async def test_lfu_evicts_the_least_used(make) -> None:  # type: ignore[no-untyped-def]
    s = await make("lfu", 3)
    for k in "abc":
        await s.set(k, k.encode(), 60)
        await asyncio.sleep(0.002)
    for _ in range(3):
        await s.get("a")
    await s.get("c")
    await s.set("d", b"d", 60)  # b has the fewest uses
    assert await s.get("b") is None and await _keys(s, "acd") == "acd"
    await s.get("d")
    await s.get("d")
    await s.set("e", b"e", 60)  # uses now: a 5, c 3, d 4 (the reads in _keys count)
    assert await s.get("c") is None and await _keys(s, "ade") == "ade"


async def test_entries_expire(make) -> None:  # type: ignore[no-untyped-def]
    if make.kind == "redis":  # Redis keeps its own time: a short real TTL
        s = await make()
        await s.set("a", b"1", 0.05)
        assert await s.get("a") == b"1"
        await asyncio.sleep(0.12)
        assert await s.get("a") is None
        return
    clock = Clock()
    s = await make(clock=clock)
    await s.set("a", b"1", 10)
    clock.t += 9.9
    assert await s.get("a") == b"1"
    clock.t += 0.2
    assert await s.get("a") is None


async def test_sqlite_entries_survive_a_restart(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "c.db"), 10)
    await s.set("a", b"1", 60)
    await s.close()
    s = SqliteStore(str(tmp_path / "c.db"), 10)
    assert await s.get("a") == b"1"
    await s.close()


async def test_memory_store_stays_bounded_under_many_writes() -> None:
    s = MemoryStore(100, "lfu")
    for i in range(1000):
        await s.set(str(i), b"x", 60)
        if i % 3 == 0:
            await s.get(str(i))
    assert await s.size() == 100


async def test_result_cache_computes_once_and_never_caches_a_failure(make) -> None:  # type: ignore[no-untyped-def]
    from portico.cache.results import ResultCache

    results = ResultCache(await make(max_entries=10), "retrieval", ttl_seconds=60)
    calls = 0

    async def search() -> list[dict]:
        nonlocal calls
        calls += 1
        return [{"id": "doc-1", "score": 0.9}]

    async def broken() -> list[dict]:
        raise RuntimeError("index offline")

    key = {"kb": "docs", "query": "refunds", "k": 5}
    assert await results.get_or_compute(key, search) == ([{"id": "doc-1", "score": 0.9}], False)
    assert await results.get_or_compute({"k": 5, "query": "refunds", "kb": "docs"}, search) == (
        [{"id": "doc-1", "score": 0.9}], True)  # fmt: skip
    assert calls == 1
    with pytest.raises(RuntimeError):
        await results.get_or_compute({**key, "k": 6}, broken)
    assert await results.get({**key, "k": 6}) is None
    other = ResultCache(results.store, "sql", ttl_seconds=60)
    assert await other.get(key) is None  # namespaces never share entries
