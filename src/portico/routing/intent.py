"""``route_intent`` step: classify what the user wants, then route, answer from stock, or ask to clarify.

Intents come from the config, each with a description and a few examples. At the first request the step embeds
them with the shared embedding model and keeps one unit centroid per intent (nearest-centroid classification:
no training run, and adding an example is a config change). Per request it reuses the query embedding that every
step shares, scores the intents by cosine similarity and a softmax over them, and then:

- confident (probability ≥ ``min_confidence`` and similarity ≥ ``min_similarity``): the intent's ``answer`` is
  returned as a stock answer without any model call, or its ``model`` becomes ``ctx.target_model``;
- not confident: the ``clarification`` text is returned (no model call), unless ``clarification`` is null, in
  which case the request goes on to the application's model.

``classifier`` chooses who names the intent: ``embedding`` (the default, above), ``llm`` (one call to the
configured model through the gateway, see ``intent_llm``; no embedding needed), or ``fallback`` (the embedding
classifier, and the LLM only for the queries it is not confident about). An LLM answer that is not exactly one
intent name counts as not confident. The note says which classifier decided.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from portico.pipeline.context import RequestContext
from portico.pipeline.options import stock_answer
from portico.pipeline.step import Step
from portico.routing.intent_llm import UNCLEAR, LlmClassifier, LlmClassifierOptions


class IntentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    examples: list[str] = Field(default_factory=list)
    model: str | None = None  # route here
    answer: str | None = None  # or answer with this text (out-of-scope, FAQ), no model call

    @model_validator(mode="after")
    def _check(self) -> IntentConfig:
        if not self.description and not self.examples:
            raise ValueError(f"intent '{self.name}' needs a description or examples")
        if self.model is not None and self.answer is not None:
            raise ValueError(f"intent '{self.name}': give either model or answer, not both")
        return self


class RouteIntentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intents: list[IntentConfig] = Field(min_length=1)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)  # softmax probability of the best intent
    min_similarity: float = Field(default=0.3, ge=-1.0, le=1.0)  # cosine similarity to its centroid
    temperature: float = Field(default=0.05, gt=0.0)  # softmax temperature over cosine similarities
    clarification: str | None = "Could you say a bit more about what you need, so I can help with the right thing?"
    classifier: Literal["embedding", "llm", "fallback"] = "embedding"
    llm: LlmClassifierOptions | None = None  # the LLM classifier (classifier: llm or fallback)

    @model_validator(mode="after")
    def _unique(self) -> RouteIntentOptions:
        names = [i.name for i in self.intents]
        if len(set(names)) != len(names):
            raise ValueError("intent names must be unique")
        if self.classifier != "embedding":
            if self.llm is None:
                raise ValueError(f"classifier: {self.classifier} needs an 'llm' section with the classifier's model")
            if UNCLEAR in {n.lower() for n in names}:
                raise ValueError(f"'{UNCLEAR}' is the LLM classifier's answer for no intent; rename that intent")
        return self


def classify(centroids: np.ndarray, query: np.ndarray, temperature: float) -> tuple[int, float, float]:
    """(best intent, its softmax probability, its cosine similarity) for a unit query vector."""
    sims = centroids @ np.asarray(query, dtype=np.float32)
    best = int(np.argmax(sims))
    z = (sims - sims[best]) / temperature
    probs = np.exp(z) / np.exp(z).sum()
    return best, float(probs[best]), float(sims[best])


def centroids_from(vectors: np.ndarray, owners: list[int], n: int) -> np.ndarray:
    """Unit mean of each intent's unit vectors."""
    out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, np.asarray(owners), vectors.astype(np.float32))
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class RouteIntentStep(Step):
    name = "route_intent"
    reads = frozenset({"request", "query"})
    writes = frozenset({"target_model", "response", "stream"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = opts = RouteIntentOptions.model_validate(options)
        self.embedder = services.embedder
        if opts.classifier != "llm":
            self.embedder.require("route_intent")
        gateway = getattr(services, "gateway", None)
        models = getattr(gateway, "models", None)
        if models is not None:
            for intent in opts.intents:
                if intent.model is not None and intent.model not in models:
                    raise ValueError(f"intent '{intent.name}': model '{intent.model}' is not configured")
            if opts.llm is not None and opts.llm.model not in models:
                raise ValueError(f"the LLM classifier's model '{opts.llm.model}' is not configured")
        self.llm = (
            LlmClassifier(opts.llm, opts.intents, gateway, getattr(services, "prices", None))
            if opts.llm is not None and opts.classifier != "embedding"
            else None
        )
        self._centroids: np.ndarray | None = None
        self._lock = asyncio.Lock()

    async def centroids(self) -> np.ndarray:
        if self._centroids is None:
            async with self._lock:
                if self._centroids is None:
                    texts, owners = [], []
                    for i, intent in enumerate(self.options.intents):
                        for t in ([intent.description] if intent.description else []) + intent.examples:
                            texts.append(t)
                            owners.append(i)
                    vecs = np.asarray(await self.embedder.embed(texts), dtype=np.float32)
                    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
                    self._centroids = centroids_from(vecs, owners, len(self.options.intents))
        return self._centroids

    def _answer(self, ctx: RequestContext, text: str) -> None:
        stock_answer(ctx, self.name, text)

    async def run(self, ctx: RequestContext) -> None:
        opts = self.options
        best, confident, note = 0, False, {}
        if opts.classifier != "llm":
            best, prob, sim = classify(await self.centroids(), await self.embedder.query(ctx), opts.temperature)
            confident = prob >= opts.min_confidence and sim >= opts.min_similarity
            note = {"intent": opts.intents[best].name, "confidence": round(prob, 4), "similarity": round(sim, 4),
                    "classifier": "embedding"}  # fmt: skip
        if not confident and self.llm is not None:
            verdict = await self.llm.classify(ctx, self.name)
            note.update(verdict.note, classifier="llm")
            if verdict.intent is not None:
                best, confident = verdict.intent, True
                note["intent"] = opts.intents[best].name
            else:
                note.pop("intent", None)  # the LLM named none: no intent was chosen
        intent = opts.intents[best]
        if not confident:
            if opts.clarification is not None:
                ctx.note(self.name, **note, decision="clarify")
                self._answer(ctx, opts.clarification)
            else:
                ctx.note(self.name, **note, decision="default")
            return
        if intent.answer is not None:
            ctx.note(self.name, **note, decision="answer")
            self._answer(ctx, intent.answer)
        elif intent.model is not None:
            ctx.target_model = intent.model
            ctx.note(self.name, **note, decision="route", target_model=intent.model)
        else:
            ctx.note(self.name, **note, decision="default")
