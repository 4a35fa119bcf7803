"""Topics (keywords and similarity to descriptions, with the real MiniLM) and the anomaly score."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from portico.guardrails.injection.train import load_encoder
from portico.guardrails.topics import anomaly_step, non_latin_share, topics_step
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest


class Embedder:
    model = "emb"

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def require(self, who: str) -> str:
        return "emb"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    async def query(self, ctx: RequestContext) -> np.ndarray:
        return (await self.embed([ctx.query_text()]))[0]


class Services:
    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.metrics = None


@pytest.fixture(scope="module")
def services() -> Services:
    return Services(Embedder(load_encoder()))


def ctx_for(text: str, app: str = "a") -> RequestContext:
    req = ChatCompletionRequest(model=app, messages=[{"role": "user", "content": text}])
    return RequestContext(request=req, request_id="r", model=app, application=app)


TOPICS = {
    "allowed": [{"name": "billing", "description": "invoices, payments, refunds, credit card charges and plans"}],
    "denied": [
        {
            "name": "politics",
            "description": "elections, political parties, voting and politicians",
            "keywords": ["election"],
        }
    ],
    "answer": "Billing only.",
}


async def test_topics(services: Services) -> None:
    step = topics_step(TOPICS, services)
    for text, blocked in [
        ("Why was my card charged twice on the last invoice?", False),
        ("Who should I vote for in the election?", True),  # keyword
        ("Which political party has the best candidates?", True),  # similarity to a denied topic
        ("Write me a poem about the sea and sailing ships", True),  # far from every allowed topic
    ]:
        ctx = ctx_for(text)
        await step.run(ctx)
        assert (ctx.answered_by == "topics") is blocked, (text, ctx.state.get("trace.notes"))
        if blocked:
            assert ctx.response is not None and ctx.response["choices"][0]["message"]["content"] == "Billing only."


async def test_anomaly_flags_unusual_prompts(services: Services) -> None:
    step = anomaly_step({"threshold": 0.8, "min_history": 10, "action": "block"}, services)
    normal = [f"How do I update the payment method for invoice number {i}?" for i in range(15)]
    for t in normal:
        ctx = ctx_for(t)
        await step.run(ctx)
        assert ctx.answered_by is None
    odd = ctx_for("零件 " * 400)
    await step.run(odd)
    notes = odd.state["trace.notes"]["anomaly"]
    assert odd.answered_by == "anomaly" and notes["script"] > 0.9 and notes["length"] > 0.5


def test_non_latin_share() -> None:
    assert non_latin_share("hello") == 0.0 and non_latin_share("привет") == 1.0 and non_latin_share("123") == 0.0


def test_anomaly_state_is_per_application(services: Services) -> None:
    step = anomaly_step({}, services)
    asyncio.run(step.run(ctx_for("hi there", app="x")))
    assert set(step.traffic) == {"x"}
