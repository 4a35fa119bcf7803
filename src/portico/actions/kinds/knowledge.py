"""The ``knowledge`` tool kind: search one configured knowledge base with the existing hybrid retrieval.

The model sends ``{query, k?}``; it reads the chunks numbered with their ids (``[doc#3]``), so its answer can
cite them, and the result's ``citations`` carry id, document, title and source for the client and the trace.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.actions.tool import SingleTool, Tool, ToolContext, ToolResult
from portico.config.tools import ToolConfig
from portico.context.knowledge.base import SearchRequest
from portico.context.knowledge.filters import compile_filter
from portico.context.knowledge.manager import KnowledgeBases, UnknownKnowledgeBase
from portico.context.knowledge.recency import Recency
from portico.context.knowledge.service import knowledge_of
from portico.pipeline.options import parse_options


class KnowledgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kb: str = Field(min_length=1)
    mode: Literal["bm25", "vector", "hybrid"] = "hybrid"
    k: int = Field(default=5, ge=1, le=50)  # when the model does not say
    max_k: int = Field(default=20, ge=1, le=100)  # the most the model may ask for
    filters: dict[str, Any] | None = None  # fixed by the operator: the model cannot widen them
    fusion: Literal["rrf", "minmax", "zscore", "sequential"] | None = None
    min_score: float | None = None
    recency: dict[str, Any] | None = None
    max_chunk_chars: int = Field(default=2000, ge=100, le=100_000)  # per chunk, in what the model reads


def parameters(o: KnowledgeOptions) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "description": "What to search for, in plain words"},
            "k": {
                "type": "integer",
                "minimum": 1,
                "maximum": o.max_k,
                "description": f"How many passages to return (default {o.k})",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }


class KnowledgeTool(Tool):
    kind = "knowledge"

    def __init__(self, cfg: ToolConfig, options: KnowledgeOptions, kbs: KnowledgeBases, embedder: Any) -> None:
        description = cfg.description or f"Search the knowledge base '{options.kb}'; returns passages with ids to cite"
        super().__init__(cfg.name, description, cfg.parameters or parameters(options), write=cfg.write,
                         timeout=cfg.timeout)  # fmt: skip
        compile_filter(options.filters)  # a bad filter fails at start-up
        self.recency = Recency.parse(options.recency)
        self.options = options
        self.kbs = kbs
        self.embedder = embedder

    def public(self) -> dict[str, Any]:
        return {"kb": self.options.kb, "mode": self.options.mode}

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        o = self.options
        query = str(arguments.get("query") or "").strip()
        k = min(int(arguments.get("k") or o.k), o.max_k)
        try:
            kb = await self.kbs.get(o.kb)
        except UnknownKnowledgeBase:
            return ToolResult(f"The knowledge base '{o.kb}' does not exist (yet).", is_error=True)
        vector = None
        if o.mode != "bm25":
            vector = (await self.embedder.embed([query]))[0]
        hits = await kb.search(SearchRequest(query=query, k=k, mode=o.mode, filters=o.filters, fusion=o.fusion,
                                             vector=vector, recency=self.recency))  # fmt: skip
        if o.min_score is not None:
            hits = [h for h in hits if h["score"] >= o.min_score]
        if not hits:
            return ToolResult(f"No passages in '{o.kb}' match this query.", data=[])
        blocks = []
        for h in hits:
            head = " — ".join(str(p) for p in (h.get("title"), h.get("section")) if p)
            text = h["text"] if len(h["text"]) <= o.max_chunk_chars else h["text"][: o.max_chunk_chars] + " …"
            blocks.append(f"[{h['id']}]{' ' + head if head else ''}\n{text}")
        content = "Passages (cite them by their id in brackets):\n\n" + "\n\n".join(blocks)
        citations = [{"id": h["id"], "document_id": h["document_id"], "title": h.get("title"),
                      "source": h.get("source"), "score": h["score"]} for h in hits]  # fmt: skip
        return ToolResult(content, data=hits, citations=citations)


def knowledge_kind(cfg: ToolConfig, services: Any) -> SingleTool:
    options = parse_options(KnowledgeOptions, cfg.options)
    if options.mode != "bm25":
        services.embedder.require(f"the knowledge tool '{cfg.name}'")
    return SingleTool(KnowledgeTool(cfg, options, knowledge_of(services), services.embedder))
