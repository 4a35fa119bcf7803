"""Routing end to end: a real Portico process with the local MiniLM embedder, llm-katan as both upstream models
(told apart by the ``x-portico-model`` deployment header), the openai SDK as the client. llm-katan's ``/stats``
counts the upstream calls, so a stock answer or a clarification is shown to cost none.

The LLM intent classifier needs an upstream that answers with an intent name, which llm-katan's echo cannot
(it answers "[echo] … User: <query>", which is what a garbled classifier answer looks like, and is tested as
such): a small scripted OpenAI-compatible server in this module answers each classifier query with a set text."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from portico.routing import PairwiseRecord, TrainConfig, train
from portico.routing.local_embed import local_embed_fn
from portico.routing.store import save
from tests.support import free_port, katan_cmd, portico_server, running

MASTER = "mk-" + "r" * 40
STOCK = "I can only help with your Acme account."
CLARIFY = "Do you need help with billing or with a device?"


def hard(i: int) -> str:
    return f"Solve the equation {i + 3}x^2 - {2 * i + 1}x + {i} = 0 and prove that both roots are real numbers."


def easy(i: int) -> str:
    return f"Hi! Could you say hello to my friend number {i} in a friendly way?"


def train_router(root: Path) -> None:
    """Synthetic feedback: the big model wins the math, chit-chat is a tie (so the small one will do)."""
    records = [PairwiseRecord(hard(i), "big", "small", "model_a") for i in range(30)]
    records += [PairwiseRecord(easy(i), "big", "small", "tie") for i in range(30)]
    save(train(records, local_embed_fn(), config=TrainConfig(k=10)), root, "demo")


# What the scripted classifier answers per query: deliberately not what the embedding classifier would pick.
SCRIPT = {
    "my wifi router keeps rebooting": "billing",
    "will it rain tomorrow": "device",
    "hmm, what about the other thing": "unclear",
}


@contextlib.contextmanager
def scripted_upstream(answers: dict[str, str], calls: list[str]) -> Iterator[str]:
    """An OpenAI-compatible chat server answering the last user message from ``answers`` (usage: 50 in, 1 out)."""

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        query = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        calls.append(query)
        return JSONResponse({
            "id": f"chatcmpl-{len(calls)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answers[query]},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51},
        })  # fmt: skip

    port = free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the scripted upstream did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Setup:
    url: str
    katan: str
    classifier_calls: list[str]


@pytest.fixture(scope="module")
def classifier_upstream() -> Iterator[tuple[str, list[str]]]:
    calls: list[str] = []
    with scripted_upstream(SCRIPT, calls) as url:
        yield url, calls


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, classifier_upstream: tuple[str, list[str]]) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("routing")
    train_router(tmp / "routers")
    kport = free_port()
    katan = f"http://127.0.0.1:{kport}"
    # The dashboard middleware is what feeds /stats, so it stays on here.
    kcmd = [a for a in katan_cmd(kport, tmp) if a != "--disable-dashboard"]
    up = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "sk"}
    scripted_url, calls = classifier_upstream
    scripted = {"provider": "openai", "model": "classifier", "base_url": scripted_url, "api_key": "sk",
                "price": {"input": 1.0, "output": 2.0}}  # fmt: skip
    intents = [
        {"name": "billing", "description": "billing, invoices, refunds and payments",
         "examples": ["I was charged twice, please refund me", "where is my invoice",
                      "update the credit card I pay with"], "model": "big"},
        {"name": "device", "description": "problems with a router or modem",
         "examples": ["my wifi router keeps rebooting", "the modem light is blinking red"], "model": "small"},
        {"name": "weather", "description": "weather forecasts",
         "examples": ["will it rain tomorrow", "what is the weather like in Paris"], "answer": STOCK},
    ]  # fmt: skip
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "models": [
            {"name": "big", "deployments": [{**up, "name": "big-dep", "context_window": 100000}]},
            {"name": "small", "deployments": [{**up, "name": "small-dep", "context_window": 400}]},
            {"name": "emb", "type": "embedding", "deployments": [{"provider": "local"}]},
            {"name": "classifier", "deployments": [{**scripted, "name": "scripted"}]},
            {"name": "echo-classifier", "deployments": [
                {**up, "name": "echo-classifier-dep", "price": {"input": 1.0, "output": 2.0}}]},
        ],
        "applications": [
            {"name": "routed", "model": "small", "steps": [
                {"use": "route_preference", "strong": "big", "weak": "small", "router": "demo",
                 "dir": str(tmp / "routers"), "threshold": 0.5}]},
            {"name": "support", "model": "small", "steps": [
                {"use": "route_intent", "min_confidence": 0.5, "min_similarity": 0.35, "clarification": CLARIFY,
                 "intents": intents}]},
            {"name": "support-llm", "model": "small", "steps": [
                {"use": "route_intent", "classifier": "llm", "llm": {"model": "classifier"},
                 "clarification": CLARIFY, "intents": intents}]},
            {"name": "support-fallback", "model": "small", "steps": [
                {"use": "route_intent", "classifier": "fallback", "llm": {"model": "echo-classifier"},
                 "min_confidence": 0.5, "min_similarity": 0.35, "clarification": CLARIFY, "intents": intents}]},
            {"name": "long", "model": "small", "steps": [
                {"use": "route_context", "model": "small", "larger": ["big"], "reserve_output": 100}]},
        ],
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(kcmd, f"{katan}/health", tmp / "katan.log"))
        yield Setup(stack.enter_context(portico_server(cfg, tmp, timeout=120)), katan, calls)


def ask(s: Setup, app: str, prompt: str) -> tuple[str, str, str]:
    """(answer, deployment that answered (or portico/<step> that answered instead), request id)."""
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=MASTER, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(model=app, messages=[{"role": "user", "content": prompt}])
    return (
        raw.parse().choices[0].message.content or "",
        raw.headers.get("x-portico-model", ""),
        raw.headers["x-request-id"],
    )


def upstream_calls(s: Setup) -> int:
    return httpx.get(f"{s.katan}/stats", timeout=5).json()["total"]


def trace(s: Setup, rid: str) -> dict:
    return httpx.get(f"{s.url}/admin/requests/{rid}", headers={"authorization": f"Bearer {MASTER}"}).json()


def notes(s: Setup, rid: str, step: str) -> dict:
    (root,) = trace(s, rid)["spans"]
    (span,) = [c for c in root["children"] if c["name"] == step]
    prefix = f"portico.{step}."
    return {k[len(prefix) :]: v for k, v in span["attributes"].items() if k.startswith(prefix)}


def test_preference_router_sends_hard_prompts_to_the_strong_model(setup: Setup) -> None:
    _, dep, rid = ask(setup, "routed", hard(77))
    assert dep == "big-dep"
    note = notes(setup, rid, "route_preference")
    assert note["decision"] == "strong" and note["p_strong"] >= 0.5 and note["threshold"] == 0.5
    _, dep, rid = ask(setup, "routed", easy(77))
    assert dep == "small-dep"
    assert notes(setup, rid, "route_preference")["decision"] == "weak"


def test_intents_route_answer_from_stock_or_clarify(setup: Setup) -> None:
    before = upstream_calls(setup)
    answer, dep, rid = ask(setup, "support", "What's the weather forecast for Paris tomorrow, will it rain?")
    assert answer == STOCK and dep == "portico/route_intent"
    assert notes(setup, rid, "route_intent")["decision"] == "answer"
    answer, _, rid = ask(setup, "support", "banana")
    assert answer == CLARIFY
    assert notes(setup, rid, "route_intent")["decision"] == "clarify"
    assert upstream_calls(setup) == before  # neither cost a model call
    _, dep, rid = ask(setup, "support", "I was charged twice on my last invoice, can I get a refund?")
    assert dep == "big-dep"
    assert notes(setup, rid, "route_intent")["intent"] == "billing"
    assert upstream_calls(setup) == before + 1


def test_oversized_prompt_moves_to_the_larger_context_model(setup: Setup) -> None:
    _, dep, _ = ask(setup, "long", "Summarise: short text.")
    assert dep == "small-dep"
    _, dep, rid = ask(setup, "long", "Summarise this: " + "lorem ipsum dolor sit amet " * 100)
    assert dep == "big-dep"
    note = notes(setup, rid, "route_context")
    assert note["decision"] == "route" and note["window"] == 400 and note["tokens_needed"] > 400


def test_llm_classifier_routes_by_the_models_answer(setup: Setup) -> None:
    before, seen = upstream_calls(setup), len(setup.classifier_calls)
    # The scripted classifier calls a router problem "billing" (→ big) and a weather question "device" (→ small):
    # the route follows the LLM's answer, not the embedding's nearest intent.
    _, dep, rid = ask(setup, "support-llm", "my wifi router keeps rebooting")
    assert dep == "big-dep"
    note = notes(setup, rid, "route_intent")
    assert note["classifier"] == "llm" and note["intent"] == "billing" and note["llm_answer"] == "billing"
    assert note["llm_deployment"] == "scripted" and note["llm_cost_usd"] == pytest.approx(52e-6)
    _, dep, rid = ask(setup, "support-llm", "will it rain tomorrow")
    assert dep == "small-dep" and notes(setup, rid, "route_intent")["intent"] == "device"
    # "unclear" names no intent: the clarification, with no call to the answering models.
    answer, dep, rid = ask(setup, "support-llm", "hmm, what about the other thing")
    assert answer == CLARIFY and dep == "portico/route_intent"
    assert notes(setup, rid, "route_intent")["decision"] == "clarify"
    assert setup.classifier_calls[seen:] == list(SCRIPT)
    assert upstream_calls(setup) == before + 2
    # The classifier's call is part of the request's cost even when no model answered.
    assert trace(setup, rid)["cost_usd"] == pytest.approx(52e-6)


def test_fallback_asks_the_llm_only_when_unsure_and_a_garbled_answer_clarifies(setup: Setup) -> None:
    before = upstream_calls(setup)
    _, dep, rid = ask(setup, "support-fallback", "I was charged twice on my last invoice, can I get a refund?")
    assert dep == "big-dep" and notes(setup, rid, "route_intent")["classifier"] == "embedding"
    assert upstream_calls(setup) == before + 1  # the answer only: the embedding was confident
    # "banana" is not confident: llm-katan's echo is asked and answers "[echo] …", which is no intent name.
    answer, _, rid = ask(setup, "support-fallback", "banana")
    assert answer == CLARIFY
    note = notes(setup, rid, "route_intent")
    assert note["classifier"] == "llm" and note["decision"] == "clarify" and note["llm_answer"].startswith("[echo]")
    assert note["llm_deployment"] == "echo-classifier-dep" and note["llm_cost_usd"] > 0
    assert upstream_calls(setup) == before + 2  # the classifier's call went through the gateway to llm-katan
