"""Every knowledge base of a Portico instance, opened on first use and kept open. Where they live is a catalog:
embedded (one SQLite file each under ``<state_dir>/knowledge/``) or PostgreSQL with pgvector."""

from __future__ import annotations

import asyncio
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from portico.context.knowledge.backend import Backend
from portico.context.knowledge.base import FUSIONS, Embed, KBOptions, KnowledgeBase
from portico.protocol.errors import PorticoError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KnowledgeBaseExists(ValueError):
    pass


class UnknownKnowledgeBase(KeyError):
    pass


class Catalog(Protocol):
    async def names(self) -> list[str]: ...
    async def exists(self, name: str) -> bool: ...
    def backend(self, name: str, options: KBOptions | None) -> Backend: ...
    async def close(self) -> None: ...


class EmbeddedCatalog:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.db"

    async def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.db") if NAME.match(p.stem))

    async def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def backend(self, name: str, options: KBOptions | None) -> Backend:
        from portico.context.knowledge.embedded import EmbeddedBackend

        return EmbeddedBackend(self._path(name), options.ann_threshold if options else 20_000)

    async def close(self) -> None:
        return None


def parse_options(raw: dict[str, Any]) -> KBOptions:
    """Options from a request or config mapping; unknown keys and bad values are errors."""
    known = {f.name for f in fields(KBOptions)} - {"embedding_model"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown knowledge base option(s): {', '.join(sorted(unknown))}")
    opts = KBOptions(**raw)
    if not 16 <= opts.chunk_size <= 8192:
        raise ValueError("chunk_size must be between 16 and 8192")
    if not 0 <= opts.chunk_overlap < opts.chunk_size // 2:
        raise ValueError("chunk_overlap must be at least 0 and less than half of chunk_size")
    if opts.dimensions is not None and opts.dimensions < 8:
        raise ValueError("dimensions must be at least 8")
    if opts.fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}")
    if not 0.0 <= opts.bm25_weight <= 1.0:
        raise ValueError("bm25_weight must be between 0 and 1")
    if opts.embed_window and not 0 <= opts.embed_window_overlap < opts.embed_window // 2:
        raise ValueError("embed_window must be 0 (off) or larger than twice embed_window_overlap")
    if not (0 <= opts.feedback_docs <= 100 and 1 <= opts.feedback_terms <= 200 and 0.0 < opts.feedback_weight <= 1.0):
        raise ValueError("feedback_docs must be 0-100, feedback_terms 1-200 and feedback_weight in (0, 1]")
    if not (0 <= opts.hybrid_feedback_docs <= 100 and 1 <= opts.hybrid_feedback_terms <= 200
            and 0.0 <= opts.hybrid_feedback_bm25_weight <= 1.0):  # fmt: skip
        raise ValueError("hybrid_feedback_docs must be 0-100, hybrid_feedback_terms 1-200 and "
                         "hybrid_feedback_bm25_weight in [0, 1]")  # fmt: skip
    return opts


_PROBES = [
    "How do I reset my password?",
    "Quarterly revenue rose 12% to 4.2 million euros, mostly from the new region.",
    "Mitochondrial DNA mutations accumulate with age in human muscle fibres.",
]


class DocumentEmbedderMismatch(PorticoError):
    """The operator's configuration, not the client's request: a 500 that says what to fix."""

    status = 500
    code = "document_embedder_mismatch"


class DocumentEmbedder:
    """Documents through another model than the queries (``knowledge.document_embedder``). Before its first use it
    must agree with the query embedder on probe texts, so a knowledge base never mixes two vector spaces."""

    MIN_COSINE = 0.95  # the packaged MiniLM at int8 vs float32: ≥ 0.98; a different model: far below

    def __init__(self, documents: Embed, queries: Embed, name: str, query_name: str | None) -> None:
        self.documents, self.queries = documents, queries
        self.name, self.query_name = name, query_name
        self._checked = False

    async def __call__(self, texts: list[str]) -> np.ndarray:
        if not self._checked:
            a = np.asarray(await self.documents(_PROBES), dtype=np.float32)
            b = np.asarray(await self.queries(_PROBES), dtype=np.float32)
            seen = _disagreement(a, b, self.MIN_COSINE)
            if seen:
                raise DocumentEmbedderMismatch(
                    f"knowledge.document_embedder '{self.name}' does not embed into the same space as the embedder "
                    f"'{self.query_name}' ({seen}): no document was written"
                )
            self._checked = True
        return await self.documents(texts)


def _disagreement(a: np.ndarray, b: np.ndarray, min_cosine: float) -> str:
    """Why two embedders' vectors of the same texts are not one space ("" when they are)."""
    if a.shape != b.shape:
        return f"vectors of {a.shape[-1]} and {b.shape[-1]} dimensions"
    cos = float((a * b).sum(axis=1).min())
    if cos < min_cosine:
        return f"cosine {cos:.2f} on probe texts; the same model at another precision reaches ≥ {min_cosine}"
    return ""


class KnowledgeBases:
    def __init__(
        self,
        catalog: Catalog | Path,
        embed: Embed | None,
        embedding_model: str | None,
        embed_documents: Embed | None = None,
    ) -> None:
        self.catalog: Catalog = EmbeddedCatalog(catalog) if isinstance(catalog, Path) else catalog
        self.embed = embed
        self.embed_documents = embed_documents  # None: documents go through ``embed`` too
        self.embedding_model = embedding_model
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = asyncio.Lock()

    async def names(self) -> list[str]:
        return await self.catalog.names()

    async def create(self, name: str, options: dict[str, Any] | None = None) -> KnowledgeBase:
        if not NAME.match(name or ""):
            raise ValueError("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        opts = parse_options(options or {})
        async with self._lock:
            if name in self._open or await self.catalog.exists(name):
                raise KnowledgeBaseExists(f"knowledge base '{name}' already exists")
            opts = KBOptions(**{**opts.public(), "embedding_model": self.embedding_model})
            kb = KnowledgeBase(name, self.catalog.backend(name, opts), opts, self.embed, self.embed_documents)
            await kb.open()
            self._open[name] = kb
            return kb

    async def get(self, name: str) -> KnowledgeBase:
        kb = self._open.get(name)
        if kb is not None:
            return kb
        if not NAME.match(name or "") or not await self.catalog.exists(name):
            raise UnknownKnowledgeBase(name)
        async with self._lock:
            kb = self._open.get(name)
            if kb is None:
                kb = await self._load(name)
                self._open[name] = kb
            return kb

    async def _load(self, name: str) -> KnowledgeBase:
        backend = self.catalog.backend(name, None)
        await backend.open()
        stored = (await backend.meta()).get("options") or {}
        opts = KBOptions(**{k: v for k, v in stored.items() if k in {f.name for f in fields(KBOptions)}})
        if opts.embedding_model and self.embedding_model and opts.embedding_model != self.embedding_model:
            await backend.close()
            raise ValueError(f"knowledge base '{name}' was embedded with '{opts.embedding_model}', but the "
                             f"configured embedder is '{self.embedding_model}'")  # fmt: skip
        kb = KnowledgeBase(name, backend, opts, self.embed, self.embed_documents)
        await kb.open()
        return kb

    async def close(self) -> None:
        for kb in self._open.values():
            await kb.close()
        self._open.clear()
        await self.catalog.close()
