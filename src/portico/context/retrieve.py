"""``retrieve`` step: search a knowledge base with the request's query; the chunks go to ``ctx.documents``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.context.knowledge.base import SearchRequest
from portico.context.knowledge.filters import compile_filter
from portico.context.knowledge.manager import UnknownKnowledgeBase
from portico.context.knowledge.recency import Recency
from portico.context.knowledge.service import knowledge_of
from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step


class RetrieveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kb: str = Field(min_length=1)
    mode: Literal["bm25", "vector", "hybrid"] = "hybrid"
    k: int = Field(default=5, ge=1, le=100)
    filters: dict[str, Any] | None = None
    fusion: Literal["rrf", "minmax", "zscore", "sequential"] | None = None
    min_score: float | None = None  # drop chunks scoring below this (scale depends on mode and fusion)
    recency: dict[str, Any] | None = None  # {half_life_days, weight, field}: prefer recent chunks


class RetrieveStep(Step):
    name = "retrieve"
    reads = frozenset({"request", "query"})
    writes = frozenset({"documents"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = RetrieveOptions.model_validate(options)
        compile_filter(self.options.filters)  # a bad filter fails at start-up
        self.recency = Recency.parse(self.options.recency)
        self.embedder = services.embedder
        if self.options.mode != "bm25":
            self.embedder.require("retrieve")
        self.kbs = knowledge_of(services)

    async def run(self, ctx: RequestContext) -> None:
        o = self.options
        query = ctx.query_text()
        if not query.strip():
            ctx.documents = []
            ctx.note("retrieve", kb=o.kb, documents=[], reason="no query")
            return
        try:
            kb = await self.kbs.get(o.kb)
        except UnknownKnowledgeBase:
            ctx.documents = []
            ctx.note("retrieve", kb=o.kb, documents=[], reason="knowledge base does not exist")
            return
        vector = None if o.mode == "bm25" else await self.embedder.query(ctx)  # shared with other steps
        hits = await kb.search(SearchRequest(query=query, k=o.k, mode=o.mode, filters=o.filters, fusion=o.fusion,
                                             vector=vector, recency=self.recency))  # fmt: skip
        if o.min_score is not None:
            hits = [h for h in hits if h["score"] >= o.min_score]
        ctx.documents = hits
        ctx.note("retrieve", kb=o.kb, mode=o.mode, documents=[h["id"] for h in hits],
                 scores=[h["score"] for h in hits])  # fmt: skip
