"""``pack`` step: put retrieved chunks into the prompt within the target model's token budget, best ones first and
last (models read the edges of a long context best), numbered so the answer can cite them. Its closer adds
``portico.citations`` to the response (the first chunk of a stream) and to the trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from portico.context.knowledge.chunking import count_tokens
from portico.context.rewrite import REWRITE_CALL
from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.chat import Message

_CITATIONS = "pack.citations"
DEFAULT_INSTRUCTIONS = (
    "Answer using the numbered context passages below. Cite the passages you use as [1], [2], … "
    "If the context does not contain the answer, say that you do not know instead of guessing."
)
DEFAULT_WINDOW = 8192
SAFETY = 1.25  # our token estimate counts words and punctuation; BPE/WordPiece tokenizers count a bit more


def estimate_tokens(text: str) -> int:
    return int(count_tokens(text) * SAFETY) + 1


def edges_first(items: list[Any]) -> list[Any]:
    """Best-first input → best at both ends, weakest in the middle: [1, 3, 5, …, 6, 4, 2]."""
    return items[0::2] + items[1::2][::-1]


class PackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instructions: str = DEFAULT_INSTRUCTIONS
    context_window: int | None = Field(default=None, ge=256)  # default: the target model's (config), else 8192
    answer_tokens: int = Field(default=512, ge=1)  # reserved for the answer when the request sets no max_tokens
    max_context_tokens: int | None = Field(default=None, ge=1)  # a cap below what the window allows
    order: str = Field(default="edges", pattern="^(edges|rank)$")


class PackStep(Step):
    name = "pack"
    reads = frozenset({"request", "documents", "target_model", "model"})
    writes = frozenset({"request", "state"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = PackOptions.model_validate(options)
        self.cfg = services.cfg
        self.closer = CiteStep()

    def window(self, ctx: RequestContext) -> int:
        if self.options.context_window:
            return self.options.context_window
        name = ctx.target_model or ctx.model
        app = next((a for a in self.cfg.applications if a.name == name), None)
        m = self.cfg.model(app.model if app else name)
        sizes = []
        for d in m.deployments if m else ():
            size = d.context_window or (getattr(d, "n_ctx", None) if d.provider == "local" else None)
            if size:
                sizes.append(size)
        return min(sizes) if sizes else DEFAULT_WINDOW  # every deployment (and fallback) must fit it

    async def run(self, ctx: RequestContext) -> None:
        docs = ctx.documents or []
        req = ctx.request
        answer = req.max_completion_tokens or req.max_tokens or self.options.answer_tokens
        used = sum(estimate_tokens(m.text()) + 4 for m in req.messages) + estimate_tokens(self.options.instructions)
        budget = self.window(ctx) - answer - used - 16
        if self.options.max_context_tokens is not None:
            budget = min(budget, self.options.max_context_tokens)
        chosen: list[dict[str, Any]] = []
        spent = 0
        for d in docs:  # best first: a chunk that does not fit is skipped, a smaller later one may still fit
            cost = estimate_tokens(d["text"]) + estimate_tokens(_label(d)) + 4
            if spent + cost <= budget:
                chosen.append(d)
                spent += cost
        ordered = edges_first(chosen) if self.options.order == "edges" else chosen
        citations = []
        blocks = []
        for n, d in enumerate(ordered, start=1):
            blocks.append(f"[{n}] {_label(d)}\n{d['text']}")
            citations.append({"index": n, "chunk_id": d["id"], "document_id": d["document_id"],
                              "source": d.get("source"), "title": d.get("title") or None,
                              "section": d.get("section") or None, "score": d.get("score")})  # fmt: skip
        ctx.state[_CITATIONS] = citations
        ctx.note("pack", chunks=[c["chunk_id"] for c in citations], documents=[c["document_id"] for c in citations],
                 sources=[str(c["source"]) for c in citations], dropped=len(docs) - len(chosen),
                 context_tokens=spent, budget=max(budget, 0))  # fmt: skip
        if not blocks:
            text = self.options.instructions + "\n\n(No context passages were found for this question.)"
        else:
            text = self.options.instructions + "\n\n" + "\n\n".join(blocks)
        msgs = list(req.messages)
        at = next((i for i, m in enumerate(msgs) if m.role not in ("system", "developer")), len(msgs))
        msgs.insert(at, Message(role="system", content=text))
        ctx.request = req.model_copy(update={"messages": msgs})


def _label(d: dict[str, Any]) -> str:
    parts = [p for p in (d.get("title"), d.get("section")) if p]
    src = d.get("source")
    if src and src not in parts:
        parts.append(f"({src})")
    return " — ".join(parts) if parts else str(d.get("document_id"))


class CiteStep(Step):
    """Runs last: the answer carries ``portico.citations``; a stream carries them on its first chunk."""

    name = "pack.citations"
    reads = frozenset({"state", "response", "stream"})
    writes = frozenset({"response", "stream"})

    async def run(self, ctx: RequestContext) -> None:
        citations = ctx.state.get(_CITATIONS)
        if citations is None:
            return
        extra: dict[str, Any] = {"citations": citations}
        if ctx.state.get(REWRITE_CALL) is not None:  # the rewrite model call: its query, tokens and cost
            extra["rewrite"] = ctx.state[REWRITE_CALL]
        if ctx.response is not None:
            ext = ctx.response.setdefault("portico", {})
            if isinstance(ext, dict):
                ext.update(extra)
        if ctx.stream is not None:
            ctx.stream = _first_with(ctx.stream, extra)


async def _first_with(chunks: AsyncIterator[dict[str, Any]], extra: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    first = True
    try:
        async for chunk in chunks:
            if first:
                chunk = {**chunk, "portico": {**chunk.get("portico", {}), **extra}}
                first = False
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
