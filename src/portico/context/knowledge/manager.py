"""Every knowledge base of a Portico instance: one SQLite file each under ``<state_dir>/knowledge/``, opened on
first use and kept open."""

from __future__ import annotations

import asyncio
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from portico.context.knowledge.base import FUSIONS, Embed, KBOptions, KnowledgeBase

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KnowledgeBaseExists(ValueError):
    pass


class UnknownKnowledgeBase(KeyError):
    pass


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
    return opts


class KnowledgeBases:
    def __init__(self, root: Path, embed: Embed | None, embedding_model: str | None) -> None:
        self.root = root
        self.embed = embed
        self.embedding_model = embedding_model
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = asyncio.Lock()

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.db"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.db") if NAME.match(p.stem))

    async def create(self, name: str, options: dict[str, Any] | None = None) -> KnowledgeBase:
        if not NAME.match(name or ""):
            raise ValueError("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        opts = parse_options(options or {})
        async with self._lock:
            if self._path(name).exists():
                raise KnowledgeBaseExists(f"knowledge base '{name}' already exists")
            opts = KBOptions(**{**opts.public(), "embedding_model": self.embedding_model})
            kb = KnowledgeBase(name, self._path(name), opts, self.embed)
            await asyncio.to_thread(kb.load)
            self._open[name] = kb
            return kb

    async def get(self, name: str, create: bool = False) -> KnowledgeBase:
        kb = self._open.get(name)
        if kb is not None:
            return kb
        if not NAME.match(name or "") or not self._path(name).exists():
            if create:
                try:
                    return await self.create(name)
                except KnowledgeBaseExists:
                    return await self.get(name)
            raise UnknownKnowledgeBase(name)
        async with self._lock:
            kb = self._open.get(name)
            if kb is None:
                kb = await asyncio.to_thread(self._load, name)
                self._open[name] = kb
            return kb

    def _load(self, name: str) -> KnowledgeBase:
        from portico.context.knowledge.store import SQLiteStore

        store = SQLiteStore(self._path(name))
        stored = store.meta().get("options") or {}
        store.close()
        opts = KBOptions(**{k: v for k, v in stored.items() if k in {f.name for f in fields(KBOptions)}})
        if opts.embedding_model and self.embedding_model and opts.embedding_model != self.embedding_model:
            raise ValueError(f"knowledge base '{name}' was embedded with '{opts.embedding_model}', but the "
                             f"configured embedder is '{self.embedding_model}'")  # fmt: skip
        kb = KnowledgeBase(name, self._path(name), opts, self.embed)
        kb.load()
        return kb

    async def close(self) -> None:
        for kb in self._open.values():
            kb.close()
        self._open.clear()
