"""``route_intent``: intents route to their models, out-of-scope gets the stock answer without a model call, a
low-confidence query gets the clarification, and the decision is noted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from portico.pipeline import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.routing.intent import RouteIntentStep, classify
from portico.runtime import default_registry
from tests.unit.test_routing import embed

INTENTS = [
    {
        "name": "billing",
        "description": "refund invoice charge payment",
        "examples": ["I want a refund for my invoice", "why was my card charged twice", "update my payment card"],
        "model": "billing-model",
    },
    {
        "name": "tech",
        "description": "router wifi connection broken",
        "examples": ["my wifi router keeps dropping the connection", "the connection is broken again"],
        "model": "tech-model",
    },
    {
        "name": "weather",
        "description": "weather forecast rain sun",
        "examples": ["will it rain tomorrow", "what is the weather forecast"],
        "answer": "I can only help with your Acme account and devices.",
    },
]


class Embedder:
    def __init__(self) -> None:
        self.embedded: list[list[str]] = []

    def require(self, who: str) -> str:
        return "emb"

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded.append(list(texts))
        return embed(texts)

    async def query(self, ctx: RequestContext) -> np.ndarray:
        return embed([ctx.query_text()])[0]


class Services:
    def __init__(self) -> None:
        self.embedder = Embedder()
        self.gateway = type("G", (), {"models": {"billing-model": 1, "tech-model": 1, "app-model": 1}})()


def ctx_for(text: str) -> RequestContext:
    req = ChatCompletionRequest.model_validate({"model": "app", "messages": [{"role": "user", "content": text}]})
    return RequestContext(request=req, request_id="r1", model="app", application="app")


def build(services: Any = None, **extra: Any) -> RouteIntentStep:
    kind = default_registry().get("route_intent")
    return kind.factory(
        {"intents": INTENTS, "min_confidence": 0.6, "min_similarity": 0.2, **extra}, services or Services()
    )


@pytest.mark.parametrize(
    ("text", "target"),
    [("can I get a refund for this invoice", "billing-model"), ("the wifi router connection is broken", "tech-model")],
)
async def test_intents_route_to_their_models(text, target):
    ctx = ctx_for(text)
    await build().run(ctx)
    assert ctx.target_model == target
    assert ctx.response is None and ctx.answered_by is None
    assert ctx.state["trace.notes"]["route_intent"]["decision"] == "route"


async def test_out_of_scope_gets_the_stock_answer():
    ctx = ctx_for("will it rain tomorrow in the forecast")
    await build().run(ctx)
    assert ctx.answered_by == "route_intent" and ctx.target_model is None
    assert ctx.response["choices"][0]["message"]["content"] == INTENTS[2]["answer"]
    assert ctx.response["usage"]["total_tokens"] == 0
    assert ctx.state["trace.notes"]["route_intent"]["intent"] == "weather"


async def test_low_confidence_asks_for_clarification_or_passes_through():
    ctx = ctx_for("hello")
    await build(clarification="Billing or tech?").run(ctx)
    assert ctx.answered_by == "route_intent"
    assert ctx.response["choices"][0]["message"]["content"] == "Billing or tech?"
    assert ctx.state["trace.notes"]["route_intent"]["decision"] == "clarify"
    ctx = ctx_for("hello")
    await build(clarification=None).run(ctx)
    assert ctx.answered_by is None and ctx.target_model is None
    assert ctx.state["trace.notes"]["route_intent"]["decision"] == "default"


async def test_centroids_are_embedded_once():
    services = Services()
    step = build(services)
    for text in ("refund please", "wifi broken", "rain tomorrow"):
        await step.run(ctx_for(text))
    assert len(services.embedder.embedded) == 1


def test_classify_confidence():
    c = np.eye(3, dtype=np.float32)
    best, prob, sim = classify(c, np.array([1.0, 0.0, 0.0]), 0.05)
    assert (best, sim) == (0, 1.0) and prob > 0.99
    _, prob, _ = classify(c, np.array([1.0, 1.0, 0.0]) / np.sqrt(2), 0.05)
    assert prob == pytest.approx(0.5, abs=1e-3)


def test_bad_options_fail_at_build_time():
    with pytest.raises(ValueError, match="not configured"):
        build(intents=[{"name": "x", "examples": ["a"], "model": "nope"}])
    with pytest.raises(ValueError, match="either model or answer"):
        build(intents=[{"name": "x", "examples": ["a"], "model": "app-model", "answer": "no"}])
    with pytest.raises(ValueError, match="unique"):
        build(intents=[{"name": "x", "examples": ["a"]}, {"name": "x", "examples": ["b"]}])
