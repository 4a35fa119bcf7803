"""Out-of-scope topics and unusual prompts, before any model call.

``topics``: a denied topic matches by keyword or when the query embedding is close to its description; with
``allowed`` topics, a query far from every one of them is out of scope. A blocked prompt gets the stock answer::

    - use: topics
      allowed:
        - {name: billing, description: "invoices, payments, refunds and subscription plans"}
      denied:
        - {name: politics, description: "elections, political parties and politicians", keywords: [election]}
      min_similarity: 0.25     # an allowed topic must be at least this close (cosine)
      max_similarity: 0.45     # a denied topic closer than this blocks
      answer: "I can only help with billing questions."

``anomaly``: a score in [0, 1] from the prompt's length against recent traffic, its share of letters outside
the Latin script, and its embedding's distance from the recent traffic's mean; ``action: flag`` only records
it, ``block`` answers with the stock answer above ``threshold``::

    - use: anomaly
      threshold: 0.8
      action: flag
      window: 500              # recent prompts remembered (per process, per application)
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from portico.guardrails.common import GuardMetrics
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options, stock_answer
from portico.pipeline.services import Services
from portico.pipeline.step import Step


class Topic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    keywords: list[str] = Field(default_factory=list)


class TopicsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allowed: list[Topic] = Field(default_factory=list)
    denied: list[Topic] = Field(default_factory=list)
    min_similarity: float = Field(default=0.25, ge=-1, le=1)
    max_similarity: float = Field(default=0.45, ge=-1, le=1)
    answer: str = "Sorry, I can't help with that topic."


def _keywords(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


class TopicsStep(Step):
    name = "topics"
    reads = frozenset({"request", "query"})
    writes = frozenset()

    def __init__(self, options: TopicsOptions, embedder: Any, metrics: GuardMetrics) -> None:
        self.o = options
        self.embedder = embedder
        self.metrics = metrics
        self.denied_kw = [(t.name, _keywords(t.keywords)) for t in options.denied]
        self.allowed_kw = [(t.name, _keywords(t.keywords)) for t in options.allowed]
        self._vectors: dict[str, np.ndarray] | None = None  # description embeddings, computed on first use

    async def vectors(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            topics = [t for t in (*self.o.allowed, *self.o.denied) if t.description]
            vecs = await self.embedder.embed([t.description for t in topics]) if topics else []
            self._vectors = {t.name: v for t, v in zip(topics, vecs, strict=True)}
        return self._vectors

    def _block(self, ctx: RequestContext, **note: Any) -> None:
        ctx.note(self.name, decision="block", **note)
        self.metrics.count(self.name, "block")
        stock_answer(ctx, self.name, self.o.answer)

    async def run(self, ctx: RequestContext) -> None:
        text = ctx.query_text()
        if not text:
            return
        for name, rx in self.denied_kw:
            if rx is not None and rx.search(text):
                return self._block(ctx, topic=name, by="keyword")
        vectors = await self.vectors()
        sims: dict[str, float] = {}
        if vectors:
            q = await self.embedder.query(ctx)
            sims = {name: float(v @ q) for name, v in vectors.items()}
        for t in self.o.denied:
            if t.name in sims and sims[t.name] >= self.o.max_similarity:
                return self._block(ctx, topic=t.name, by="similarity", similarity=round(sims[t.name], 4))
        if self.o.allowed:
            if any(rx is not None and rx.search(text) for _, rx in self.allowed_kw):
                best = 1.0
            else:
                best = max((sims.get(t.name, -1.0) for t in self.o.allowed), default=-1.0)
            if best < self.o.min_similarity:
                return self._block(ctx, topic="out_of_scope", by="similarity", similarity=round(best, 4))
        ctx.note(self.name, decision="pass", **{f"sim_{k}": round(v, 4) for k, v in sims.items()})
        self.metrics.count(self.name, "pass")
        return None


def topics_step(options: dict[str, Any], services: Services) -> TopicsStep:
    opts = parse_options(TopicsOptions, options)
    if any(t.description for t in (*opts.allowed, *opts.denied)):
        services.embedder.require("the topics step")
    return TopicsStep(opts, services.embedder, GuardMetrics(services.metrics))


class AnomalyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.8, ge=0, le=1)
    action: Literal["flag", "block"] = "flag"
    window: int = Field(default=500, ge=10)
    min_history: int = Field(default=20, ge=1)
    answer: str = "Sorry, I can't process that request."


class Traffic:
    """Recent prompts of one application in this process: lengths and a running mean embedding."""

    def __init__(self, window: int) -> None:
        self.lengths: deque[float] = deque(maxlen=window)
        self.vectors: deque[np.ndarray] = deque(maxlen=window)

    def score(self, length: int, vector: np.ndarray | None, min_history: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(self.lengths) >= min_history:
            logs = np.log1p(np.asarray(self.lengths))
            z = abs(math.log1p(length) - float(logs.mean())) / max(float(logs.std()), 0.25)
            out["length"] = min(z / 4.0, 1.0)  # 4 standard deviations (of log length) → 1
            if vector is not None and self.vectors:
                mean = np.mean(np.stack(self.vectors), axis=0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    out["distance"] = float(np.clip((1.0 - float(vector @ (mean / norm))) / 1.0, 0.0, 1.0))
        return out

    def add(self, length: int, vector: np.ndarray | None) -> None:
        self.lengths.append(float(length))
        if vector is not None:
            self.vectors.append(vector)


def non_latin_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(ord(c) > 0x24F for c in letters) / len(letters)


class AnomalyStep(Step):
    name = "anomaly"
    reads = frozenset({"request", "query", "application"})
    writes = frozenset()

    def __init__(self, options: AnomalyOptions, embedder: Any, metrics: GuardMetrics) -> None:
        self.o = options
        self.embedder = embedder
        self.metrics = metrics
        self.traffic: dict[str, Traffic] = {}

    async def run(self, ctx: RequestContext) -> None:
        text = ctx.query_text()
        if not text:
            return
        vector = await self.embedder.query(ctx) if self.embedder is not None else None
        traffic = self.traffic.setdefault(ctx.application or "", Traffic(self.o.window))
        parts = traffic.score(len(text), vector, self.o.min_history)
        parts["script"] = non_latin_share(text)
        score = max(parts.values())
        traffic.add(len(text), vector)
        flagged = score >= self.o.threshold
        decision = ("block" if self.o.action == "block" else "flag") if flagged else "pass"
        ctx.note(self.name, score=round(score, 4), decision=decision, **{k: round(v, 4) for k, v in parts.items()})
        self.metrics.count(self.name, decision)
        if decision == "block":
            stock_answer(ctx, self.name, self.o.answer)


def anomaly_step(options: dict[str, Any], services: Services) -> AnomalyStep:
    opts = parse_options(AnomalyOptions, options)
    embedder = services.embedder if getattr(services.embedder, "model", None) else None
    return AnomalyStep(opts, embedder, GuardMetrics(services.metrics))
