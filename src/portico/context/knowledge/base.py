"""A knowledge base: documents in, chunks out, searchable by BM25, by vector and by both.

Writes go to the SQLite store first, then to the in-memory indexes; searches never touch SQLite except to read
the text of the chunks they return. One asyncio lock orders writes; searches run while the lock is free or held.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from portico.context.knowledge.backend import Backend
from portico.context.knowledge.bm25 import Analyzer, Expansion, Feedback
from portico.context.knowledge.chunking import ChunkingOptions, chunk_document, count_tokens, windows
from portico.context.knowledge.filters import compile_filter
from portico.context.knowledge.fusion import normalize, ranked, rrf
from portico.context.knowledge.loaders import LoadedDocument
from portico.context.knowledge.recency import Recency
from portico.context.knowledge.store import ChunkRow, DocumentRow
from portico.context.knowledge.vectors import MAX_VECTORS, top_k

Embed = Callable[[list[str]], Awaitable[np.ndarray]]
Mode = Literal["bm25", "vector", "hybrid"]
Fusion = Literal["rrf", "minmax", "zscore", "sequential"]
MODES = ("bm25", "vector", "hybrid")
FUSIONS = ("rrf", "minmax", "zscore", "sequential")


@dataclass(frozen=True, slots=True)
class KBOptions:
    chunk_size: int = 300
    chunk_overlap: int = 40
    dimensions: int | None = None  # keep the first N embedding dimensions (Matryoshka), re-normalised
    fusion: Fusion = "zscore"
    bm25_weight: float = 0.45  # BM25's share in weighted fusion (vector: 1 - this); tuned on SciFact train (zscore)
    # Candidates per retriever before fusion; their scores' statistics normalise each retriever (z-score, min-max).
    # 1000 was better than 100 on SciFact train (+0.004 nDCG@10): the statistics of a deep list are steadier.
    depth: int = 1000
    # Pseudo-relevance feedback (RM3) for the term retriever: expand the query from its best `feedback_docs` chunks
    # (0 turns it off). Embedded store only (PostgreSQL ranks with its own ts_rank). See bm25.Feedback.
    feedback_docs: int = 10
    feedback_terms: int = 20
    feedback_weight: float = 0.7
    # In hybrid searches the expansion comes instead from the best `hybrid_feedback_docs` chunks of a first z-score
    # fusion of plain BM25 (weight `hybrid_feedback_bm25_weight`) and vector: they are relevant more often than
    # BM25's own best. 1 chunk and 10 terms were chosen by cross-validation on SciFact train (nDCG@10 0.734 → 0.746;
    # bench/results/retrieval_attempts.md). 0 turns it off (hybrid then uses the BM25 feedback above).
    hybrid_feedback_docs: int = 1
    hybrid_feedback_terms: int = 10
    hybrid_feedback_bm25_weight: float = 0.55
    # A chunk longer than `embed_window` tokens is also embedded window by window (title and section prepended to
    # each, `embed_window_overlap` shared) and scores by its best vector. 200 suits models that read 256 word pieces
    # (MiniLM). Off by default: on the benchmark it helped SciFact train (+0.012 vector nDCG@10) but not SciFact
    # test, and it hurt NFCorpus (bench/results/retrieval.md); it is for documents whose chunks must stay long.
    embed_window: int = 0
    embed_window_overlap: int = 40
    embed_batch: int = 64  # chunk texts per embedding call during ingestion (queries wait at most one call)
    ann_threshold: int = 20_000
    description: str = ""
    embedding_model: str | None = None

    def feedback(self) -> Feedback | None:
        return Feedback(self.feedback_docs, self.feedback_terms, self.feedback_weight) if self.feedback_docs else None

    def public(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class IngestResult:
    id: str
    status: Literal["created", "replaced", "unchanged"]
    chunks: int


@dataclass(slots=True)
class SearchRequest:
    query: str
    k: int = 5
    mode: Mode = "hybrid"
    filters: dict[str, Any] | None = None
    fusion: Fusion | None = None
    bm25_weight: float | None = None
    vector: np.ndarray | None = None  # the query's embedding, when the caller has it already
    recency: Recency | None = None  # prefer recent chunks (re-ranks the fused candidates)


def content_hash(doc: LoadedDocument) -> str:
    payload = json.dumps([doc.title, doc.source, [(s.heading, s.text, s.page) for s in doc.sections],
                          doc.metadata], sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


def index_text(title: str, section: str, text: str) -> str:
    """What BM25 and the embedding model see: the title and section give a chunk its context."""
    head = " — ".join(p for p in (title, section) if p and p not in text[:200])
    return f"{head}\n{text}" if head else text


_RECENCY_POOL = 100  # fused chunks a recency preference may reorder (their texts are read)
_ID = re.compile(r"^[^\x00-\x1f]{1,512}$")


class KnowledgeBase:
    def __init__(
        self, name: str, backend: Backend, options: KBOptions, embed: Embed | None, embed_documents: Embed | None = None
    ) -> None:
        self.name = name
        self.options = options
        self.embed_fn = embed  # queries
        self.embed_documents = embed_documents or embed  # chunks (another precision of the same model, if set)
        self.backend = backend
        self.chunking = ChunkingOptions(size=options.chunk_size, overlap=options.chunk_overlap)
        self.analyze = Analyzer()
        self.lock = asyncio.Lock()

    # -- life cycle -------------------------------------------------------------------------------------------
    async def open(self) -> None:
        await self.backend.open()
        if (await self.backend.meta()).get("options") is None:
            await self.backend.set_meta({"options": self.options.public()})
        self.backend.configure(self.options.feedback())

    async def close(self) -> None:
        await self.backend.close()

    async def info(self) -> dict[str, Any]:
        docs, chunks = await self.backend.counts()
        return {"object": "knowledge_base", "id": self.name, "documents": docs, "chunks": chunks,
                **{k: v for k, v in self.options.public().items() if k not in ("embed_batch",)}}  # fmt: skip

    async def documents(self, limit: int = 100, after: str = "") -> list[DocumentRow]:
        return await self.backend.documents(limit, after)

    # -- writes -----------------------------------------------------------------------------------------------
    async def _embed(self, texts: list[str], documents: bool = False) -> np.ndarray:
        fn = self.embed_documents if documents else self.embed_fn
        if fn is None:
            raise RuntimeError(f"knowledge base '{self.name}' has no embedding model")
        out = []
        step = self.options.embed_batch
        for i in range(0, len(texts), step):
            out.append(np.asarray(await fn(texts[i : i + step]), dtype=np.float32))
        return self.shrink(np.concatenate(out)) if out else np.zeros((0, 0), dtype=np.float32)

    def shrink(self, vectors: np.ndarray) -> np.ndarray:
        d = self.options.dimensions
        if d is None or d >= vectors.shape[-1]:
            return vectors
        cut = vectors[..., :d]
        return cut / np.maximum(np.linalg.norm(cut, axis=-1, keepdims=True), 1e-12)

    async def add(
        self, docs: Sequence[tuple[str, LoadedDocument]], on_done: Callable[[int], None] | None = None
    ) -> list[IngestResult]:
        """Add or replace documents (id, document); unchanged content (same hash) is skipped."""
        async with self.lock:
            known = await self.backend.hashes()
            results: list[IngestResult | None] = [None] * len(docs)
            todo = []
            for i, (doc_id, doc) in enumerate(docs):
                if not _ID.match(doc_id):
                    raise ValueError(f"invalid document id {doc_id!r}")
                h = content_hash(doc)
                if known.get(doc_id) == h:
                    results[i] = IngestResult(doc_id, "unchanged", 0)
                    if on_done:
                        on_done(1)
                else:
                    todo.append((i, doc_id, doc, h))
            # Chunk and embed in groups, so a large ingest streams instead of holding every vector at once.
            group: list[tuple[int, str, LoadedDocument, str]] = []
            size = 0
            for item in todo:
                group.append(item)
                size += len(item[2].sections)
                if size >= self.options.embed_batch:
                    await self._write(group, known, results, on_done)
                    group, size = [], 0
            if group:
                await self._write(group, known, results, on_done)
        return [r for r in results if r is not None]

    async def _write(self, group: list, known: dict[str, str], results: list, on_done: Any) -> None:
        rows: list[tuple[DocumentRow, list[ChunkRow]]] = []
        texts: list[str] = []
        now = int(time.time())
        spans: list[int] = []  # vectors per chunk
        for _, doc_id, doc, h in group:
            crow = []
            for c in chunk_document(doc, self.chunking):
                meta = {**doc.metadata, **c.metadata, "source": doc.source, "title": doc.title,
                        "document_id": doc_id, "position": c.position, "ingested_at": now}  # fmt: skip
                it = index_text(doc.title, c.section, c.text)
                more = self._windows(doc.title, c.section, c.text, it)
                texts += [it, *more]
                spans.append(1 + len(more))
                crow.append(ChunkRow(doc_id, c.position, c.section, c.text, c.tokens, meta, self.analyze(it),
                                     np.zeros(0, dtype=np.float32), it))  # fmt: skip
            rows.append((DocumentRow(doc_id, doc.source, doc.title, h, doc.metadata), crow))
        vecs = await self._embed(texts, documents=True)
        at = 0
        chunk_no = 0
        for (i, doc_id, _, h), (drow, crow) in zip(group, rows, strict=True):
            for c in crow:
                n = spans[chunk_no]
                c.vector = vecs[at] if n == 1 else vecs[at : at + n]
                at += n
                chunk_no += 1
            await self.backend.replace(drow, crow)
            results[i] = IngestResult(doc_id, "replaced" if doc_id in known else "created", len(crow))
            known[doc_id] = h
            if on_done:
                on_done(1)

    def _windows(self, title: str, section: str, text: str, full: str) -> list[str]:
        """The windows after the first of a chunk too long for the embedding model (the first is the chunk's own
        vector: the model reads the start of the full text)."""
        size = self.options.embed_window
        if not size or count_tokens(full) <= size:
            return []
        parts = windows(text, size, self.options.embed_window_overlap)[1:MAX_VECTORS]
        return [index_text(title, section, p) for p in parts]

    async def delete(self, doc_id: str) -> bool:
        async with self.lock:
            return await self.backend.delete(doc_id)

    # -- reads ------------------------------------------------------------------------------------------------
    async def query_vector(self, query: str) -> np.ndarray:
        return (await self._embed([query]))[0]

    async def search(self, req: SearchRequest) -> list[dict[str, Any]]:
        if req.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        compile_filter(req.filters)  # a bad filter is the caller's error, whatever the store
        vec = None
        if req.mode != "bm25":
            vec = self.shrink(req.vector) if req.vector is not None else await self.query_vector(req.query)
        if req.recency is not None:  # rank a deeper pool, so recent chunks just below the cut can move up
            keys, scores, parts = await self.rank(replace(req, k=max(req.k, _RECENCY_POOL)), vec)
        else:
            keys, scores, parts = await self.rank(req, vec)
        rows = await self.backend.fetch(keys.tolist())
        out = []
        for key, score in zip(keys.tolist(), scores.tolist(), strict=True):
            row = rows.get(key)
            if row is not None:
                row["score"] = round(float(score), 6)
                for name, p in parts.items():
                    if key in p:
                        row[f"{name}_score"] = round(float(p[key]), 6)
                out.append(row)
        if req.recency is not None:
            out = req.recency.rerank(out)[: req.k]
        return out

    async def rank(self, req: SearchRequest, vec: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict]:
        """(chunk keys, scores, per-retriever scores) best first — the pure ranking, no text."""
        b = self.backend
        k = max(1, req.k)
        depth = max(self.options.depth, k)
        if req.mode == "bm25":
            keys, s = await b.term_search(req.query, k, req.filters)
            return keys, s, {}
        if vec is None:
            raise ValueError("vector search needs a query vector")
        if req.mode == "vector":
            keys, s = await b.vector_search(vec, k, req.filters)
            return keys, s, {}
        fusion = req.fusion or self.options.fusion
        w = self.options.bm25_weight if req.bm25_weight is None else req.bm25_weight
        if fusion == "sequential":  # term candidates, re-scored by embedding similarity
            bk, bs = await b.term_search(req.query, depth, req.filters)
            sims = await b.vector_scores(vec, bk) if len(bk) else np.zeros(0, dtype=np.float32)
            keys, s = top_k(bk, np.asarray(sims, dtype=np.float32), k)
            bm = dict(zip(bk.tolist(), bs.tolist(), strict=True))
            return keys, s, {"bm25": {key: bm[key] for key in keys.tolist()}}
        vk, vs = await b.vector_search(vec, depth, req.filters)
        ex = None
        if b.expands and self.options.feedback_docs and self.options.hybrid_feedback_docs:
            ex = await self._hybrid_expansion(req, vec, depth, vk, vs)
        bk, bs = await b.term_search(req.query, depth, req.filters, ex)
        if fusion == "rrf":
            keys, s = ranked(rrf([bk, vk], [2 * w, 2 * (1 - w)]), k)
            return keys, s, {}
        union, b_u, v_u = await self._both_scores(req.query, vec, bk, vk, ex)
        fused = w * _normalize_by(b_u, bs, fusion) + (1 - w) * _normalize_by(v_u, vs, fusion)
        top = np.lexsort((union, -fused))[:k]  # ties: lower key (older chunk) first, deterministic
        keys, ks = union[top], union[top].tolist()
        parts = {"bm25": dict(zip(ks, b_u[top].tolist(), strict=True)),
                 "vector": dict(zip(ks, v_u[top].tolist(), strict=True))}  # fmt: skip
        return keys, fused[top].astype(np.float32), parts

    async def _both_scores(
        self, query: str, vec: np.ndarray, bk: np.ndarray, vk: np.ndarray, ex: Expansion | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The union of both candidate lists, with each candidate's real score under both retrievers."""
        union = np.unique(np.concatenate([bk, vk]))
        b_u = np.asarray(await self.backend.term_scores(query, union, ex), dtype=np.float64)
        v_u = np.asarray(await self.backend.vector_scores(vec, union), dtype=np.float64)
        return union, b_u, v_u

    async def _hybrid_expansion(
        self, req: SearchRequest, vec: np.ndarray, depth: int, vk: np.ndarray, vs: np.ndarray
    ) -> Expansion:
        """RM3 feedback chunks for a hybrid search: the best of a first z-score fusion of plain BM25 and vector."""
        o = self.options
        plain = Expansion((), o.hybrid_feedback_terms, o.feedback_weight)
        pk, ps = await self.backend.term_search(req.query, depth, req.filters, plain)
        union, p_u, v_u = await self._both_scores(req.query, vec, pk, vk, plain)
        w = o.hybrid_feedback_bm25_weight
        first = w * _normalize_by(p_u, ps, "zscore") + (1 - w) * _normalize_by(v_u, vs, "zscore")
        top = np.lexsort((union, -first))[: o.hybrid_feedback_docs]
        chunks = tuple(zip(union[top].tolist(), first[top].tolist(), strict=True))
        return Expansion(chunks, o.hybrid_feedback_terms, o.feedback_weight)


def _normalize_by(values: np.ndarray, reference: np.ndarray, how: str) -> np.ndarray:
    """Normalise ``values`` with the min/max (or mean/sd) of ``reference`` (a retriever's candidate scores)."""
    if len(reference) == 0:
        return np.zeros_like(values, dtype=np.float64)
    ref = reference.astype(np.float64)
    v = values.astype(np.float64)
    if how == "minmax":
        lo, hi = float(ref.min()), float(ref.max())
        return np.clip((v - lo) / (hi - lo), 0.0, None) if hi > lo else np.ones_like(v)
    sd = float(ref.std())
    if sd > 0:
        return (v - float(ref.mean())) / sd
    top = float(np.abs(ref).max())  # one candidate (or all equal): it scores 1, a zero score 0
    return v / top if top > 0 else np.zeros_like(v)


__all__ = ["IngestResult", "KBOptions", "KnowledgeBase", "SearchRequest", "normalize"]
