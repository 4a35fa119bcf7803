"""``route_intent``: intents route to their models, out-of-scope gets the stock answer without a model call, a
low-confidence query gets the clarification, and the decision is noted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from portico.config.loader import validate
from portico.gateway.costing import PriceBook
from portico.pipeline import RequestContext
from portico.protocol.chat import ChatCompletionRequest, choice_dict, completion_dict, usage_dict
from portico.protocol.errors import UpstreamError
from portico.routing.intent import RouteIntentStep, classify
from portico.routing.intent_llm import parse_intent
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


# ---- the optional LLM classifier ------------------------------------------------------------------------------


class ScriptedGateway:
    """Answers each chat call with the next scripted text (or raises it) and keeps the requests it got."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.requests: list[ChatCompletionRequest] = []
        self.models = {"billing-model": 1, "tech-model": 1, "app-model": 1, "judge": 1}

    async def chat(self, ctx: RequestContext, model: str) -> None:
        self.requests.append(ctx.request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        ctx.response = completion_dict(model=model, choices=[choice_dict(0, answer, "stop")], usage=usage_dict(90, 1))
        ctx.deployment, ctx.usage = "judge-dep", ctx.response["usage"]


class LlmServices(Services):
    def __init__(self, answers: list[Any]) -> None:
        super().__init__()
        self.gateway = ScriptedGateway(answers)
        self.prices = PriceBook(validate({"models": [{"name": "judge", "deployments": [
            {"provider": "openai", "name": "judge-dep", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk",
             "price": {"input": 1.0, "output": 2.0}}]}]}))  # fmt: skip


def build_llm(answers: list[Any], classifier: str = "llm", **extra: Any) -> tuple[RouteIntentStep, LlmServices]:
    services = LlmServices(answers)
    return build(services, classifier=classifier, llm={"model": "judge"}, **extra), services


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("tech", 1), (" Billing.\n", 0), ('"weather"', 2), ("`tech`", 1), ("unclear", None), ("billing or tech", None),
     ("The intent is billing", None), ("", None), ("sports", None), ("tech\nbilling", None)],
)  # fmt: skip
def test_llm_answers_are_parsed_strictly(answer, expected):
    assert parse_intent(answer, ["billing", "tech", "weather"]) == expected


async def test_llm_classifier_routes_by_the_models_answer():
    # The text is about billing, so the embedding classifier would say billing: the LLM's "tech" decides.
    step, services = build_llm(["tech"])
    ctx = ctx_for("can I get a refund for this invoice")
    await step.run(ctx)
    assert ctx.target_model == "tech-model"
    note = ctx.state["trace.notes"]["route_intent"]
    assert note["classifier"] == "llm" and note["intent"] == "tech" and note["llm_answer"] == "tech"
    assert "confidence" not in note  # no embedding classification ran
    assert services.embedder.embedded == []
    (req,) = services.gateway.requests
    assert req.model == "judge" and req.temperature == 0
    system, user = req.messages
    assert "- billing: refund invoice charge payment" in system.text() and "- weather:" in system.text()
    assert user.text() == "can I get a refund for this invoice"
    # The classifier's call is priced into the request: 90 input tokens at $1/M + 1 output token at $2/M.
    assert note["llm_cost_usd"] == pytest.approx(92e-6)
    (call,) = ctx.state["cost.step_calls"]
    assert call["step"] == "route_intent" and call["model"] == "judge" and call["deployment"] == "judge-dep"


async def test_llm_garbled_answer_or_failure_asks_for_clarification():
    step, _ = build_llm(["I think it is billing, or maybe tech", UpstreamError("down", status=502)])
    for expected in ("llm_answer", "llm_error"):
        ctx = ctx_for("can I get a refund for this invoice")
        await step.run(ctx)
        assert ctx.answered_by == "route_intent" and ctx.target_model is None
        note = ctx.state["trace.notes"]["route_intent"]
        assert note["decision"] == "clarify" and "intent" not in note and expected in note


async def test_fallback_asks_the_llm_only_when_the_embedding_is_unsure():
    step, services = build_llm(["weather"], classifier="fallback")
    ctx = ctx_for("can I get a refund for this invoice")  # confident: no LLM call
    await step.run(ctx)
    assert ctx.target_model == "billing-model" and services.gateway.requests == []
    assert ctx.state["trace.notes"]["route_intent"]["classifier"] == "embedding"
    ctx = ctx_for("hello")  # not confident: the LLM names the intent (weather → the stock answer)
    await step.run(ctx)
    assert len(services.gateway.requests) == 1
    assert ctx.response["choices"][0]["message"]["content"] == INTENTS[2]["answer"]
    note = ctx.state["trace.notes"]["route_intent"]
    assert note["classifier"] == "llm" and note["intent"] == "weather" and note["decision"] == "answer"
    assert note["confidence"] < 0.6  # the embedding's low confidence stays in the note


def test_llm_options_fail_at_build_time():
    with pytest.raises(ValueError, match="needs an 'llm' section"):
        build(classifier="llm")
    with pytest.raises(ValueError, match="not configured"):
        build(classifier="fallback", llm={"model": "nope"})
    with pytest.raises(ValueError, match="rename that intent"):
        build(classifier="llm", llm={"model": "app-model"}, intents=[{"name": "Unclear", "examples": ["a"]}])
