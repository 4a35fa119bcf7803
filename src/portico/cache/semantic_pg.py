"""The semantic cache in PostgreSQL + pgvector: one table per cache, shared by every Portico replica that points at
the same database.

Table (created on the first write, when the embedding size is known)::

    id BIGSERIAL, scope TEXT, question TEXT, embedding VECTOR(dim), value BYTEA, expires TIMESTAMPTZ, created
    UNIQUE (scope, question)                      -- the same question again replaces its answer
    HNSW (embedding vector_cosine_ops)            -- the search
    btree (created, id), btree (expires)          -- oldest out, expiry sweep

A search is one query: ``WHERE scope = $s AND expires > now() ORDER BY embedding <=> $v LIMIT k``, so another
scope's or an expired row is never returned, whatever state the sweep is in. Expired rows are deleted by a sweep
that a write runs at most every ``sweep_seconds`` (reads stay read-only). The size bound is exact: the entry count
lives in ``portico_semantic_caches`` and every write takes that row's lock first, so writes from all replicas are
serialised (cheap: a cache write follows an upstream call) and can never deadlock on each other; the oldest rows
(by ``created``) go when a new question would pass the bound. Times are the database's clock, so replicas with
skewed clocks agree on what has expired.

Vectors travel in pgvector's binary format (a codec on each pooled connection), not as text.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time

import asyncpg
import numpy as np

from portico.cache.semantic import Entry

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
DEFAULT_TABLE = "portico_semantic_cache"
_CATALOG = ("CREATE TABLE IF NOT EXISTS portico_semantic_caches (name TEXT PRIMARY KEY, "
            "entries BIGINT NOT NULL DEFAULT 0)")  # fmt: skip

# Session settings, sent as startup parameters so every pooled connection has them (a SET would be undone by the
# pool's RESET ALL on release, and SET LOCAL costs a transaction per lookup).
#
# HNSW with a WHERE filter first takes ef_search nearest rows of the whole table and only then filters them, so
# with many scopes (tenants) in one table a plain scan could return fewer than k rows of the asked-for scope, or
# none. pgvector 0.8's iterative scan keeps walking the graph until k rows pass the filter (or
# hnsw.max_scan_tuples rows have been visited). ``strict_order`` returns them exactly by distance, so the first
# candidate is the nearest: the matcher's similarity floor and margins rely on that. Because the walk goes
# outwards by distance, a scope's nearest entry is missed only when more than max_scan_tuples (20,000) rows of
# other scopes are nearer the query than it is — at the similarity a hit needs, that many near-duplicates of one
# question elsewhere — and the outcome is then a miss, never a wrong answer. (A small scope is usually planned
# as the (scope, question) index plus an exact sort instead; tests/unit/test_semantic_stores.py checks both.)
# ef_search 40 (pgvector's default): a cache lookup's query is a near-duplicate of the entry it should find, which
# HNSW finds with a small candidate list — bench/cache_backends.py measures the best candidate against brute force
# at 10k entries (recall@1 1.0 at every ef from 20 to 128), while ef 128 took 2-3x the time of ef 40.
#
# synchronous_commit off (for this pool's sessions only): a write does not wait for its WAL flush. A crash can
# lose the last fraction of a second of cache writes — for a cache, only a few future misses.
SESSION_SETTINGS = {"hnsw.ef_search": "40", "hnsw.iterative_scan": "strict_order", "synchronous_commit": "off"}


def _encode(v: np.ndarray) -> bytes:
    a = np.ascontiguousarray(v, dtype=">f4")
    return struct.pack(">HH", a.shape[0], 0) + a.tobytes()


def _decode(data: bytes) -> np.ndarray:
    (dim,) = struct.unpack_from(">H", data)
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("vector", schema="public", encoder=_encode, decoder=_decode, format="binary")


class PgSemanticStore:
    """A ``SemanticStore`` in one PostgreSQL table (pgvector ≥ 0.8 for the filtered iterative scan)."""

    def __init__(self, url: str, max_entries: int, *, table: str = DEFAULT_TABLE, sweep_seconds: float = 60.0,
                 pool_size: int = 8) -> None:  # fmt: skip
        if not TABLE_NAME.match(table):
            raise ValueError(f"table {table!r}: use lowercase letters, digits and _ (at most 51), not first a digit")
        self.url = url
        self.max_entries = max_entries
        self.table = table
        self.sweep_seconds = sweep_seconds
        self.pool_size = pool_size
        self.dim: int | None = None
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        # Writes wait for each other here, not holding pooled connections while they queue for the catalog row
        # lock: a burst of writes never leaves lookups without a connection.
        self._writing = asyncio.Lock()
        self._last_sweep = 0.0
        # A small scope may be planned as the (scope, question) index plus a sort (exact); a large one as the
        # HNSW scan with the scope filter, where the iterative scan (SESSION_SETTINGS) matters.
        self.search_sql = (f"SELECT id, question, embedding, value, extract(epoch FROM expires) AS expires, "
                           f"embedding <=> $1 AS distance FROM {table} WHERE scope = $2 AND expires > now() "
                           "ORDER BY embedding <=> $1 LIMIT $3")  # fmt: skip

    # -- connection -------------------------------------------------------------------------------------------
    async def _p(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                conn = await asyncpg.connect(self.url)
                try:  # the extension first: the pool's connections register a codec for its type
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    await conn.execute(_CATALOG)
                    await conn.execute("INSERT INTO portico_semantic_caches (name) VALUES ($1) "
                                       "ON CONFLICT DO NOTHING", self.table)  # fmt: skip
                    version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                finally:
                    await conn.close()
                settings = dict(SESSION_SETTINGS)
                if tuple(int(x) for x in re.findall(r"\d+", version or "0")) < (0, 8):
                    settings.pop("hnsw.iterative_scan")  # older pgvector: a narrow scope may see fewer than k
                pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size,
                                                 init=_init_connection, server_settings=settings)  # fmt: skip
                self.dim = await self._table_dim(pool)
                if self.dim is not None:  # the count is kept by writes; set it right once per process
                    async with pool.acquire() as c, c.transaction():
                        await c.execute("SELECT 1 FROM portico_semantic_caches WHERE name = $1 FOR UPDATE",
                                        self.table)  # fmt: skip
                        await c.execute(f"UPDATE portico_semantic_caches SET entries = (SELECT count(*) FROM "
                                        f"{self.table}) WHERE name = $1", self.table)  # fmt: skip
                self._pool = pool
        assert self._pool is not None
        return self._pool

    async def _table_dim(self, pool: asyncpg.Pool) -> int | None:
        # a vector column's type modifier is its dimension
        return await pool.fetchval(
            "SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = 'embedding'",
            self.table,
        )

    async def _create(self, dim: int) -> None:
        t = self.table
        pool = await self._p()
        async with pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", t)  # replicas creating it at once
            await c.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, scope TEXT NOT NULL, "
                f"question TEXT NOT NULL, embedding VECTOR({dim}) NOT NULL, value BYTEA NOT NULL, "
                "expires TIMESTAMPTZ NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), "
                "UNIQUE (scope, question))"
            )
            await c.execute(f"CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_cosine_ops)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {t}_created ON {t} (created, id)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)")
        self.dim = await self._table_dim(pool)

    # -- SemanticStore ----------------------------------------------------------------------------------------
    async def put(self, scope: str, text: str, vector: np.ndarray, value: bytes, ttl: float) -> None:
        dim = int(vector.shape[-1])
        pool = await self._p()
        if self.dim is None:
            await self._create(dim)
        if dim != self.dim:
            raise ValueError(f"embedding has {dim} dimensions; this cache holds {self.dim}")
        sweep = time.monotonic() - self._last_sweep >= self.sweep_seconds
        t = self.table
        async with self._writing, pool.acquire() as c, c.transaction():
            # The catalog row's lock first, in every write: writes are serialised and cannot deadlock.
            n = await c.fetchval("SELECT entries FROM portico_semantic_caches WHERE name = $1 FOR UPDATE", t)
            if sweep:
                gone = await c.fetchval(f"WITH d AS (DELETE FROM {t} WHERE expires <= now() RETURNING 1) "
                                        "SELECT count(*) FROM d")  # fmt: skip
                n -= gone
            inserted = await c.fetchval(
                f"INSERT INTO {t} (scope, question, embedding, value, expires) "
                "VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT (scope, question) DO UPDATE "
                "SET embedding = EXCLUDED.embedding, value = EXCLUDED.value, expires = EXCLUDED.expires, "
                "created = clock_timestamp() RETURNING (xmax = 0)",
                scope, text, vector, value, float(ttl),
            )  # fmt: skip
            n += 1 if inserted else 0
            if n > self.max_entries:
                gone = await c.fetchval(
                    f"WITH d AS (DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY created, id LIMIT $1) "
                    "RETURNING 1) SELECT count(*) FROM d",
                    n - self.max_entries,
                )  # fmt: skip
                n -= gone
            await c.execute("UPDATE portico_semantic_caches SET entries = $2 WHERE name = $1", t, n)
        if sweep:
            self._last_sweep = time.monotonic()

    async def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[Entry, float]]:
        pool = await self._p()
        if self.dim is None:
            self.dim = await self._table_dim(pool)  # another replica may have created it since
            if self.dim is None:
                return []
        if vector.shape[-1] != self.dim:
            raise ValueError(f"embedding has {vector.shape[-1]} dimensions; this cache holds {self.dim}")
        rows = await pool.fetch(self.search_sql, vector, scope, k)
        return [(Entry(r["id"], scope, r["question"], r["embedding"], r["value"], float(r["expires"])),
                 1.0 - float(r["distance"])) for r in rows]  # fmt: skip

    async def count(self) -> int:
        pool = await self._p()
        return int(await pool.fetchval("SELECT entries FROM portico_semantic_caches WHERE name = $1", self.table))

    async def sweep(self) -> int:
        """Delete the expired rows now; how many went."""
        self._last_sweep = 0.0
        pool = await self._p()
        if self.dim is None:
            return 0
        async with self._writing, pool.acquire() as c, c.transaction():
            await c.execute("SELECT 1 FROM portico_semantic_caches WHERE name = $1 FOR UPDATE", self.table)
            gone = await c.fetchval(f"WITH d AS (DELETE FROM {self.table} WHERE expires <= now() RETURNING 1) "
                                    "SELECT count(*) FROM d")  # fmt: skip
            await c.execute("UPDATE portico_semantic_caches SET entries = entries - $2 WHERE name = $1",
                            self.table, gone)  # fmt: skip
        self._last_sweep = time.monotonic()
        return int(gone)

    async def drop(self) -> None:
        """Remove the table and its catalog row (tests, and a cache being retired)."""
        pool = await self._p()
        async with pool.acquire() as c, c.transaction():
            await c.execute(f"DROP TABLE IF EXISTS {self.table}")
            await c.execute("DELETE FROM portico_semantic_caches WHERE name = $1", self.table)
        self.dim = None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
