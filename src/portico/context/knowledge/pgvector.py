"""The PostgreSQL store: documents and chunks in tables per knowledge base, PostgreSQL full-text search (English
stemming, ``ts_rank`` with length normalisation) as the term retriever and pgvector HNSW (cosine) as the vector
retriever. Filters become SQL over the chunk metadata (JSONB), so they apply inside both indexes' scans (HNSW with
pgvector's iterative scan, so a narrow filter does not starve the result list). For several Portico workers or
hosts sharing one knowledge base."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import asyncpg
import numpy as np

from portico.context.knowledge.filters import FilterError
from portico.context.knowledge.store import ChunkRow, DocumentRow

_WORD = re.compile(r"\w+")
_CATALOG = "CREATE TABLE IF NOT EXISTS portico_kb (name TEXT PRIMARY KEY, meta JSONB NOT NULL DEFAULT '{}')"


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


def tsquery(query: str) -> str:
    """Any query word may match (like BM25): ``w1 | w2 | …``; PostgreSQL stems and drops stop words."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(query))
    return " | ".join(words) if words else ""


class SQLFilter:
    """Mongo-style filters (see filters.py) → a SQL condition over ``metadata`` with numbered parameters."""

    def __init__(self, first_param: int) -> None:
        self.params: list[Any] = []
        self.first = first_param

    def _p(self, value: Any) -> str:
        self.params.append(value)
        return f"${self.first + len(self.params) - 1}"

    def build(self, spec: dict[str, Any] | None) -> str:
        if not spec:
            return "TRUE"
        parts = []
        for field, cond in spec.items():
            if field in ("$and", "$or"):
                if not isinstance(cond, list) or not cond:
                    raise FilterError(f"{field} needs a non-empty list of filters")
                joiner = " AND " if field == "$and" else " OR "
                parts.append("(" + joiner.join(self.build(c) for c in cond) + ")")
            elif field.startswith("$"):
                raise FilterError(f"unknown filter operator '{field}'")
            elif isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
                parts.extend(self._op(field, op, want) for op, want in cond.items())
            else:
                parts.append(self._eq(field, cond))
        return "(" + " AND ".join(parts) + ")"

    def _eq(self, field: str, want: Any) -> str:
        # containment matches a scalar field equal to want, and a list field holding want
        doc = self._p(json.dumps({field: want}))
        lst = self._p(json.dumps({field: [want]}))
        return f"(metadata @> {doc}::jsonb OR metadata @> {lst}::jsonb)"

    def _op(self, field: str, op: str, want: Any) -> str:
        key = self._p(field)
        if op == "$eq":
            return self._eq(field, want)
        if op == "$ne":
            return f"NOT {self._eq(field, want)}"
        if op in ("$in", "$nin"):
            if not isinstance(want, list):
                raise FilterError(f"{op} needs a list")
            any_of = "(" + " OR ".join([self._eq(field, w) for w in want] or ["FALSE"]) + ")"
            return any_of if op == "$in" else f"NOT {any_of}"
        if op in ("$gt", "$gte", "$lt", "$lte"):
            sym = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
            if isinstance(want, bool) or not isinstance(want, int | float | str):
                raise FilterError(f"{op} needs a number or a string")
            if isinstance(want, str):
                return f"(jsonb_typeof(metadata -> {key}) = 'string' AND metadata ->> {key} {sym} {self._p(want)})"
            return (f"(jsonb_typeof(metadata -> {key}) = 'number' AND "
                    f"(metadata ->> {key})::float8 {sym} {self._p(float(want))})")  # fmt: skip
        if op == "$exists":
            return f"(metadata ? {key})" if want else f"NOT (metadata ? {key})"
        raise FilterError(f"unknown filter operator '{op}'")


class PgCatalog:
    """Knowledge bases in one PostgreSQL database (pgvector required)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(self.url, min_size=1, max_size=8)
            async with pool.acquire() as c:
                await c.execute("CREATE EXTENSION IF NOT EXISTS vector")
                await c.execute(_CATALOG)
            self._pool = pool
        return self._pool

    async def names(self) -> list[str]:
        pool = await self.pool()
        return [r["name"] for r in await pool.fetch("SELECT name FROM portico_kb ORDER BY name")]

    async def exists(self, name: str) -> bool:
        pool = await self.pool()
        return await pool.fetchval("SELECT 1 FROM portico_kb WHERE name = $1", name) is not None

    def backend(self, name: str, options: Any) -> PgBackend:
        return PgBackend(self, name)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class PgBackend:
    def __init__(self, catalog: PgCatalog, name: str) -> None:
        self.catalog = catalog
        self.name = name
        h = hashlib.sha1(name.encode()).hexdigest()[:16]
        self.docs = f"pkb_{h}_docs"
        self.chunks = f"pkb_{h}_chunks"
        self.windows = f"pkb_{h}_windows"  # further vectors of chunks longer than the embedding window
        self.dim: int | None = None
        self.pool: asyncpg.Pool | None = None

    @property
    def p(self) -> asyncpg.Pool:
        assert self.pool is not None, "the store is not open"
        return self.pool

    expands = False  # PostgreSQL's term retriever is its own ts_rank: no query expansion

    def configure(self, feedback: Any) -> None:
        """Query expansion is the embedded store's: PostgreSQL's term retriever is its own ts_rank."""

    async def open(self) -> None:
        self.pool = await self.catalog.pool()
        async with self.p.acquire() as c, c.transaction():
            await c.execute("INSERT INTO portico_kb (name) VALUES ($1) ON CONFLICT DO NOTHING", self.name)
            await c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.docs} (id TEXT PRIMARY KEY, source TEXT NOT NULL, "
                "title TEXT NOT NULL, hash TEXT NOT NULL, metadata JSONB NOT NULL, chunks INT NOT NULL, "
                "created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
            )
        dim = (await self.meta()).get("dim")
        if dim is not None:
            self.dim = int(dim)
            await self._create_windows(self.dim)  # knowledge bases made before windows existed lack the table

    async def _create_chunks(self, dim: int) -> None:
        async with self.p.acquire() as c, c.transaction():
            await c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.chunks} (key BIGSERIAL PRIMARY KEY, document_id TEXT NOT NULL, "
                "position INT NOT NULL, section TEXT NOT NULL, text TEXT NOT NULL, tokens INT NOT NULL, "
                f"metadata JSONB NOT NULL, tsv TSVECTOR NOT NULL, embedding VECTOR({dim}) NOT NULL)"
            )
            await c.execute(f"CREATE INDEX IF NOT EXISTS {self.chunks}_doc ON {self.chunks} (document_id)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {self.chunks}_tsv ON {self.chunks} USING gin (tsv)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {self.chunks}_meta ON {self.chunks} USING gin (metadata)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {self.chunks}_hnsw ON {self.chunks} "
                            "USING hnsw (embedding vector_cosine_ops)")  # fmt: skip
        await self._create_windows(dim)
        await self.set_meta({"dim": dim})
        self.dim = dim

    async def _create_windows(self, dim: int) -> None:
        async with self.p.acquire() as c, c.transaction():
            await c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.windows} (key BIGINT NOT NULL REFERENCES {self.chunks} (key) "
                f"ON DELETE CASCADE, embedding VECTOR({dim}) NOT NULL)"
            )
            await c.execute(f"CREATE INDEX IF NOT EXISTS {self.windows}_key ON {self.windows} (key)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {self.windows}_hnsw ON {self.windows} "
                            "USING hnsw (embedding vector_cosine_ops)")  # fmt: skip

    async def close(self) -> None:
        self.pool = None  # the pool belongs to the catalog

    async def meta(self) -> dict[str, Any]:
        raw = await self.p.fetchval("SELECT meta FROM portico_kb WHERE name = $1", self.name)
        return json.loads(raw) if raw else {}

    async def set_meta(self, values: dict[str, Any]) -> None:
        await self.p.execute("UPDATE portico_kb SET meta = meta || $2::jsonb WHERE name = $1", self.name,
                             json.dumps(values))  # fmt: skip

    async def hashes(self) -> dict[str, str]:
        return {r["id"]: r["hash"] for r in await self.p.fetch(f"SELECT id, hash FROM {self.docs}")}

    async def replace(self, doc: DocumentRow, chunks: list[ChunkRow]) -> None:
        if chunks and self.dim is None:
            await self._create_chunks(int(chunks[0].vector.shape[-1]))
        now = time.time()
        async with self.p.acquire() as c, c.transaction():
            created = await c.fetchval(f"SELECT created_at FROM {self.docs} WHERE id = $1 FOR UPDATE", doc.id)
            if self.dim is not None:
                await c.execute(f"DELETE FROM {self.chunks} WHERE document_id = $1", doc.id)
            doc.created_at, doc.updated_at, doc.chunks = created or now, now, len(chunks)
            await c.execute(
                f"INSERT INTO {self.docs} (id, source, title, hash, metadata, chunks, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET source = $2, "
                "title = $3, hash = $4, metadata = $5::jsonb, chunks = $6, updated_at = $8",
                doc.id, doc.source, doc.title, doc.hash, json.dumps(doc.metadata), doc.chunks, doc.created_at, now,
            )  # fmt: skip
            if chunks:
                await c.executemany(
                    f"INSERT INTO {self.chunks} (document_id, position, section, text, tokens, metadata, tsv, "
                    "embedding) VALUES ($1, $2, $3, $4, $5, $6::jsonb, to_tsvector('english', $7), $8::vector)",
                    [(ch.document_id, ch.position, ch.section, ch.text, ch.tokens, json.dumps(ch.metadata),
                      ch.index_text or ch.text, _vec(ch.vector.reshape(-1, self.dim)[0])) for ch in chunks],
                )  # fmt: skip
                more = [(doc.id, ch.position, _vec(v)) for ch in chunks for v in ch.vector.reshape(-1, self.dim)[1:]]
                if more:
                    await c.executemany(
                        f"INSERT INTO {self.windows} (key, embedding) SELECT key, $3::vector FROM {self.chunks} "
                        "WHERE document_id = $1 AND position = $2",
                        more,
                    )

    async def delete(self, doc_id: str) -> bool:
        async with self.p.acquire() as c, c.transaction():
            if self.dim is not None:
                await c.execute(f"DELETE FROM {self.chunks} WHERE document_id = $1", doc_id)
            return await c.fetchval(f"DELETE FROM {self.docs} WHERE id = $1 RETURNING 1", doc_id) is not None

    async def documents(self, limit: int, after: str) -> list[DocumentRow]:
        rows = await self.p.fetch(
            f"SELECT id, source, title, hash, metadata, chunks, created_at, updated_at FROM {self.docs} "
            "WHERE id > $1 ORDER BY id LIMIT $2",
            after, limit,
        )  # fmt: skip
        return [DocumentRow(r["id"], r["source"], r["title"], r["hash"], json.loads(r["metadata"]), r["chunks"],
                            r["created_at"], r["updated_at"]) for r in rows]  # fmt: skip

    async def counts(self) -> tuple[int, int]:
        docs = await self.p.fetchval(f"SELECT count(*) FROM {self.docs}")
        chunks = await self.p.fetchval(f"SELECT count(*) FROM {self.chunks}") if self.dim is not None else 0
        return int(docs), int(chunks)

    async def fetch(self, keys: list[int]) -> dict[int, dict[str, Any]]:
        if not keys or self.dim is None:
            return {}
        rows = await self.p.fetch(
            f"SELECT c.key, c.document_id, c.position, c.section, c.text, c.metadata, d.source, d.title "
            f"FROM {self.chunks} c JOIN {self.docs} d ON d.id = c.document_id WHERE c.key = ANY($1::bigint[])",
            keys,
        )
        return {r["key"]: {"id": f"{r['document_id']}#{r['position']}", "document_id": r["document_id"],
                           "position": r["position"], "section": r["section"], "text": r["text"],
                           "source": r["source"], "title": r["title"], "metadata": json.loads(r["metadata"])}
                for r in rows}  # fmt: skip

    async def document_ids(self, keys: list[int]) -> list[str]:
        if not keys or self.dim is None:
            return []
        rows = await self.p.fetch(f"SELECT key, document_id FROM {self.chunks} WHERE key = ANY($1::bigint[])", keys)
        by = {r["key"]: r["document_id"] for r in rows}
        return [by[k] for k in keys if k in by]

    async def term_search(
        self, query: str, k: int, filters: dict[str, Any] | None, expansion: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = tsquery(query)
        if not q or self.dim is None:
            return _empty()
        f = SQLFilter(3)
        where = f.build(filters)
        rows = await self.p.fetch(
            f"SELECT key, ts_rank(tsv, q, 1) AS s FROM {self.chunks}, to_tsquery('english', $1) q "
            f"WHERE tsv @@ q AND {where} ORDER BY s DESC, key LIMIT $2",
            q, k, *f.params,
        )  # fmt: skip
        return _arrays(rows)

    async def vector_search(
        self, vector: np.ndarray, k: int, filters: dict[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.dim is None:
            return _empty()
        f = SQLFilter(3)
        where = f.build(filters)
        async with self.p.acquire() as c, c.transaction():
            await c.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * k))}")
            await c.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            # A chunk scores by its best vector: its own or one of its windows' (both HNSW scans, then merged).
            rows = await c.fetch(
                f"SELECT key, max(s) AS s FROM ("
                f"(SELECT key, 1 - (embedding <=> $1::vector) AS s FROM {self.chunks} WHERE {where} "
                "ORDER BY embedding <=> $1::vector LIMIT $2) UNION ALL "
                f"(SELECT w.key, 1 - (w.embedding <=> $1::vector) AS s FROM {self.windows} w JOIN {self.chunks} c "
                f"ON c.key = w.key WHERE {where} ORDER BY w.embedding <=> $1::vector LIMIT $2)"
                ") t GROUP BY key ORDER BY s DESC, key LIMIT $2",
                _vec(vector), k, *f.params,
            )  # fmt: skip
        keys, scores = _arrays(rows)
        order = np.argsort(-scores, kind="stable")  # relaxed order: re-sort the few out-of-place rows
        return keys[order], scores[order]

    async def term_scores(self, query: str, keys: np.ndarray, expansion: Any = None) -> np.ndarray:
        q = tsquery(query)
        if not q or self.dim is None or not len(keys):
            return np.zeros(len(keys), dtype=np.float32)
        rows = await self.p.fetch(
            f"SELECT key, ts_rank(tsv, q, 1) AS s FROM {self.chunks}, to_tsquery('english', $1) q "
            "WHERE key = ANY($2::bigint[])",
            q, keys.tolist(),
        )  # fmt: skip
        return _aligned(rows, keys)

    async def vector_scores(self, vector: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if self.dim is None or not len(keys):
            return np.zeros(len(keys), dtype=np.float32)
        rows = await self.p.fetch(
            f"SELECT key, max(1 - (embedding <=> $1::vector)) AS s FROM (SELECT key, embedding FROM {self.chunks} "
            f"WHERE key = ANY($2::bigint[]) UNION ALL SELECT key, embedding FROM {self.windows} "
            "WHERE key = ANY($2::bigint[])) t GROUP BY key",
            _vec(vector), keys.tolist(),
        )  # fmt: skip
        return _aligned(rows, keys)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


def _arrays(rows: list) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray([r["key"] for r in rows], dtype=np.int64),
            np.asarray([r["s"] for r in rows], dtype=np.float32))  # fmt: skip


def _aligned(rows: list, keys: np.ndarray) -> np.ndarray:
    by = {r["key"]: r["s"] for r in rows}
    return np.asarray([by.get(int(k), 0.0) for k in keys], dtype=np.float32)
