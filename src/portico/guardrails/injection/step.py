"""The ``injection`` step: block prompt injections and jailbreaks before any model call.

Options (in an application's ``steps:``)::

    - use: injection
      threshold: 0.5          # default: the threshold shipped with the weights (FPR ≤ 5% on validation data)
      roles: [user, tool]     # messages to scan, whole (in overlapping chunks), never truncated
      action: block           # block: answer with block_message, no model call; flag: note and count only
      block_message: "I can't help with that request."
      model: fast             # fast: hashed char n-grams + heuristics; full: + MiniLM embeddings of every chunk
      weights: /path/to/injection.npz   # default: the packaged weights of that model

Without ``model``, the variant chosen by the training's fixed rule on validation data from the train splits
(``models/injection_selection.json``, written by ``python -m portico.guardrails.injection.train``). ``full`` needs
an embedding model in the config (the shared embedder: MiniLM in-process by default).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from portico.guardrails.common import GuardMetrics
from portico.guardrails.injection.heuristics import matched
from portico.guardrails.injection.model import (
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    SELECTION,
    InjectionModel,
    design,
    ngram_vectorizer,
)
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options, stock_answer
from portico.pipeline.services import Services
from portico.pipeline.step import Step


class InjectionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(default=None, ge=0, le=1)
    roles: list[str] = Field(default_factory=lambda: ["user", "tool"])
    action: Literal["block", "flag"] = "block"
    block_message: str = "I can't help with that request."
    # fast: n-grams + heuristics, a few ms per 1k tokens; full: also MiniLM embeddings of every chunk;
    # unset: the default chosen by the training's validation rule (models/injection_selection.json)
    model: Literal["full", "fast"] | None = None
    weights: str | None = None


class InjectionDetector:
    """Scores texts: the highest chunk probability over every chunk of every text."""

    def __init__(self, model: InjectionModel, embed: Any) -> None:
        self.model = model
        self.embed = embed  # async (list[str]) -> (n, dim) normalised embeddings
        self.vectorizer = ngram_vectorizer()

    async def score(self, texts: list[str]) -> tuple[float, list[str]]:
        pieces = [c for t in texts for c in self.model.chunks(t)]
        if not pieces:
            return 0.0, []
        vectors = await self.embed(pieces) if self.model.uses_embeddings else None
        rows, rules = await asyncio.to_thread(self._rows, vectors, pieces, texts)
        return float(np.max(self.model.chunk_scores(rows))), rules

    def _rows(self, vectors: np.ndarray | None, pieces: list[str], texts: list[str]) -> tuple[np.ndarray, list[str]]:
        rules = sorted({r for t in texts for r in matched(t)})
        return design(vectors, pieces, self.vectorizer), rules


class InjectionStep(Step):
    name = "injection"
    reads = frozenset({"request"})
    writes = frozenset()

    def __init__(self, options: InjectionOptions, detector: InjectionDetector, metrics: GuardMetrics) -> None:
        self.options = options
        self.detector = detector
        self.metrics = metrics
        self.threshold = options.threshold if options.threshold is not None else detector.model.threshold
        self.roles = set(options.roles)

    async def run(self, ctx: RequestContext) -> None:
        texts = [m.text() for m in ctx.request.messages if m.role in self.roles and m.text()]
        score, rules = await self.detector.score(texts)
        flagged = score >= self.threshold
        decision = ("block" if self.options.action == "block" else "flag") if flagged else "pass"
        ctx.note(self.name, score=round(score, 4), threshold=round(self.threshold, 4), decision=decision,
                 rules=rules)  # fmt: skip
        self.metrics.count(self.name, decision)
        if decision == "block":
            stock_answer(ctx, self.name, self.options.block_message)


def default_variant() -> str:
    """The variant the training's validation rule chose (see injection/train.py)."""
    return str(json.loads(SELECTION.read_text())["default"])


def injection_step(options: dict[str, Any], services: Services) -> InjectionStep:
    opts = parse_options(InjectionOptions, options)
    variant = opts.model or default_variant()
    model = InjectionModel.load(opts.weights or (FAST_WEIGHTS if variant == "fast" else DEFAULT_WEIGHTS))
    if model.uses_embeddings:
        services.embedder.require("the injection step")
    return InjectionStep(opts, InjectionDetector(model, services.embedder.embed), GuardMetrics(services.metrics))
