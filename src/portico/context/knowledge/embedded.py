"""The embedded store: SQLite for documents, chunks and vectors (the source of truth), bm25s for BM25 and an
exact/hnswlib vector index in memory, rebuilt from SQLite when the knowledge base is opened. Needs no server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from portico.context.knowledge.bm25 import BM25Index, Expansion, Feedback
from portico.context.knowledge.filters import compile_filter
from portico.context.knowledge.store import ChunkRow, DocumentRow, SQLiteStore
from portico.context.knowledge.vectors import VectorIndex, top_k


class EmbeddedBackend:
    expands = True  # the term retriever takes an Expansion (RM3 from chunks the caller chose)

    def __init__(self, path: Path, ann_threshold: int = 20_000) -> None:
        self.path = path
        self.ann_threshold = ann_threshold
        self.store: SQLiteStore | None = None
        self.bm25 = BM25Index()
        self.vectors: VectorIndex | None = None
        self.chunk_meta: dict[int, dict[str, Any]] = {}  # chunk key → filterable metadata

    @property
    def db(self) -> SQLiteStore:
        assert self.store is not None, "the store is not open"
        return self.store

    async def open(self) -> None:
        await asyncio.to_thread(self._load)

    def configure(self, feedback: Feedback | None) -> None:
        self.bm25.feedback = feedback

    def _load(self) -> None:
        self.store = SQLiteStore(self.path)
        keys: list[int] = []
        vecs: list[np.ndarray] = []
        for key, _doc_id, meta, terms, vec in self.store.scan():
            self.bm25.add_tokens(key, terms)
            self.chunk_meta[key] = meta
            keys.append(key)
            vecs.append(np.frombuffer(vec, dtype=np.float32))
        meta = self.store.meta()
        self.ann_threshold = int((meta.get("options") or {}).get("ann_threshold", self.ann_threshold))
        dim = meta.get("dim")
        if dim is not None:
            self.vectors = VectorIndex(int(dim), self.ann_threshold)
            if keys:  # a chunk's blob holds one vector, or one per embedding window
                self.vectors.add(keys, [v.reshape(-1, int(dim)) for v in vecs])

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()

    async def meta(self) -> dict[str, Any]:
        return self.db.meta()

    async def set_meta(self, values: dict[str, Any]) -> None:
        await asyncio.to_thread(self.db.set_meta, values)

    async def hashes(self) -> dict[str, str]:
        return await asyncio.to_thread(self.db.hashes)

    async def replace(self, doc: DocumentRow, chunks: list[ChunkRow]) -> None:
        if chunks and self.vectors is None:
            dim = int(chunks[0].vector.shape[-1])
            self.vectors = VectorIndex(dim, self.ann_threshold)
            await self.set_meta({"dim": dim})
        old, new = await asyncio.to_thread(self.db.replace, doc, chunks)
        self._drop(old)
        for key, c in zip(new, chunks, strict=True):
            self.bm25.add_tokens(key, c.terms)
            self.chunk_meta[key] = c.metadata
        if new and self.vectors is not None:
            self.vectors.add(new, [c.vector for c in chunks])

    def _drop(self, keys: list[int]) -> None:
        for k in keys:
            self.bm25.remove(k)
            self.chunk_meta.pop(k, None)
        if keys and self.vectors is not None:
            self.vectors.remove(keys)

    async def delete(self, doc_id: str) -> bool:
        old = await asyncio.to_thread(self.db.delete, doc_id)
        if old is None:
            return False
        self._drop(old)
        return True

    async def documents(self, limit: int, after: str) -> list[DocumentRow]:
        return await asyncio.to_thread(self.db.documents, limit, after)

    async def counts(self) -> tuple[int, int]:
        return self.db.counts()

    async def fetch(self, keys: list[int]) -> dict[int, dict[str, Any]]:
        return await asyncio.to_thread(self.db.chunks, keys)

    async def document_ids(self, keys: list[int]) -> list[str]:
        return [self.chunk_meta[k]["document_id"] for k in keys]

    def _allowed(self, filters: dict[str, Any] | None, keys: np.ndarray) -> np.ndarray | None:
        pred = compile_filter(filters)
        if pred is None:
            return None
        meta = self.chunk_meta
        return np.fromiter((pred(meta.get(int(k), {})) for k in keys), dtype=bool, count=len(keys))

    async def term_search(
        self, query: str, k: int, filters: dict[str, Any] | None, expansion: Expansion | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        keys, scores = self.bm25.scores(query, expansion)
        if not len(scores):
            return keys[:0], scores
        mask = scores > 0
        allowed = self._allowed(filters, keys)
        if allowed is not None:
            mask &= allowed
        return top_k(keys, scores, k, mask)

    async def vector_search(
        self, vector: np.ndarray, k: int, filters: dict[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.vectors is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if not filters:
            return self.vectors.search(vector, k)
        keys, sims = self.vectors.scores(vector)  # filtered: exact over the allowed rows, never starved
        return top_k(keys, sims, k, self._allowed(filters, keys))

    async def term_scores(self, query: str, keys: np.ndarray, expansion: Expansion | None = None) -> np.ndarray:
        _, scores = self.bm25.scores(query, expansion)
        return scores[self.bm25.rows(keys)] if len(scores) else np.zeros(len(keys), dtype=np.float32)

    async def vector_scores(self, vector: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if self.vectors is None:
            return np.zeros(len(keys), dtype=np.float32)
        return self.vectors.key_scores(vector, keys)
