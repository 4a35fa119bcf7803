"""The RAG steps (rewrite → retrieve → pack → generate → citations) with fake services: a scripted rewrite model, a
bag-of-words embedder and a generate step that echoes the prompt it was given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from portico.config.schema import PorticoConfig
from portico.context.knowledge.service import knowledge_of
from portico.context.pack import PackStep, edges_first
from portico.context.retrieve import RetrieveStep
from portico.context.rewrite import RewriteStep, parse
from portico.gateway.costing import PriceBook
from portico.pipeline import Pipeline, Step
from portico.pipeline.context import Attempt, RequestContext
from portico.protocol.chat import ChatCompletionRequest
from tests.unit.test_knowledge import doc, fake_embed


class FakeEmbedder:
    def require(self, who: str) -> str:
        return "emb"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await fake_embed(texts)

    async def query(self, ctx: RequestContext) -> np.ndarray:
        return (await fake_embed([ctx.query_text()]))[0]


class FakeGateway:
    def __init__(self, answer: str = "") -> None:
        self.answer = answer
        self.calls: list[ChatCompletionRequest] = []

    async def chat(self, ctx: RequestContext, model: str) -> None:
        self.calls.append(ctx.request)
        ctx.response = {"choices": [{"message": {"role": "assistant", "content": self.answer}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5}}  # fmt: skip
        ctx.usage = ctx.response["usage"]
        ctx.deployment = "m-0"


class Services:
    def __init__(self, tmp: Path, answer: str = "", window: int = 4000) -> None:
        chat = {"provider": "openai", "base_url": "http://x/v1", "context_window": window, "name": "m-0",
                "price": {"input": 1.0, "output": 2.0}}  # fmt: skip
        emb = {"provider": "openai", "base_url": "http://x/v1"}
        self.cfg = PorticoConfig.model_validate(
            {
                "state_dir": str(tmp),
                "models": [
                    {"name": "m", "deployments": [chat]},
                    {"name": "emb", "type": "embedding", "deployments": [emb]},
                ],
                "applications": [{"name": "bot", "model": "m"}],
            }
        )
        self.embedder = FakeEmbedder()
        self.gateway = FakeGateway(answer)
        self.prices = PriceBook(self.cfg)
        self.closers: list[Any] = []

    def on_close(self, close: Any) -> None:
        self.closers.append(close)


class EchoGenerate(Step):
    """Answers with the system prompt it received, so tests can see what pack put there."""

    name = "generate"
    reads = frozenset({"request"})
    writes = frozenset({"response", "stream", "deployment", "usage"})

    async def run(self, ctx: RequestContext) -> None:
        system = "\n".join(m.text() for m in ctx.request.messages if m.role == "system")
        if ctx.request.stream:

            async def chunks():  # type: ignore[no-untyped-def]
                yield {"choices": [{"index": 0, "delta": {"content": system}}]}
                yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

            ctx.stream = chunks()
        else:
            ctx.response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": system}}]}


def ctx_of(*turns: tuple[str, str], stream: bool = False) -> RequestContext:
    msgs = [{"role": r, "content": c} for r, c in turns]
    req = ChatCompletionRequest.model_validate({"model": "bot", "messages": msgs, "stream": stream})
    return RequestContext(request=req, request_id="r1", model="bot", application="bot")


async def _seed(svc: Services) -> None:
    kb = await knowledge_of(svc).create("docs")
    await kb.add([
        ("refunds", doc("Refunds are paid within 14 days of the return.", "Refund policy", source="policy.md")),
        ("shipping", doc("Parcels ship from Rotterdam every weekday.", "Shipping", source="shipping.md")),
        ("emily", doc("Emily Doe last bought a blue kettle on 3 May 2026.", "Customer: Emily Doe", source="crm")),
    ])  # fmt: skip


def _pipeline(svc: Services, pack: dict | None = None, rewrite: bool = True) -> Pipeline:
    steps: list[Step] = []
    if rewrite:
        steps.append(RewriteStep({"model": "m"}, svc))
    steps.append(RetrieveStep({"kb": "docs", "k": 3}, svc))
    p = PackStep(pack or {}, svc)
    assert p.closer is not None
    return Pipeline("bot", [*steps, p, EchoGenerate(), p.closer])


async def test_retrieve_pack_and_citations(tmp_path: Path) -> None:
    svc = Services(tmp_path)
    await _seed(svc)
    ctx = ctx_of(("system", "Be nice."), ("user", "how long do refunds take?"))
    await _pipeline(svc, rewrite=False).run(ctx)
    assert ctx.documents and ctx.documents[0]["document_id"] == "refunds"
    msgs = ctx.request.messages
    assert [m.role for m in msgs] == ["system", "system", "user"] and msgs[0].text() == "Be nice."
    assert "[1] Refund policy" in msgs[1].text() and "14 days" in msgs[1].text()
    cites = ctx.response["portico"]["citations"]  # type: ignore[index]
    assert cites[0] == {"index": 1, "chunk_id": "refunds#0", "document_id": "refunds", "source": "policy.md",
                        "title": "Refund policy", "section": None, "score": cites[0]["score"]}  # fmt: skip
    notes = ctx.state["trace.notes"]
    assert notes["retrieve"]["documents"][0] == "refunds#0" and notes["pack"]["chunks"][0] == "refunds#0"


async def test_streams_carry_citations_on_the_first_chunk(tmp_path: Path) -> None:
    svc = Services(tmp_path)
    await _seed(svc)
    ctx = ctx_of(("user", "where do parcels ship from?"), stream=True)
    await _pipeline(svc, rewrite=False).run(ctx)
    assert ctx.stream is not None
    chunks = [c async for c in ctx.stream]
    assert chunks[0]["portico"]["citations"][0]["document_id"] == "shipping"
    assert "portico" not in chunks[1]


async def test_budget_follows_the_context_window(tmp_path: Path) -> None:
    svc = Services(tmp_path, window=650)  # after 512 answer tokens and the instructions: room for about two passages
    await _seed(svc)
    ctx = ctx_of(("user", "refunds shipping Emily kettle Rotterdam"))
    await _pipeline(svc, rewrite=False).run(ctx)
    assert len(ctx.documents or []) == 3
    packed = ctx.state["trace.notes"]["pack"]
    assert 1 <= len(packed["chunks"]) < 3 and packed["dropped"] >= 1
    svc2 = Services(tmp_path / "b", window=100_000)
    await _seed(svc2)
    ctx2 = ctx_of(("user", "refunds shipping Emily kettle Rotterdam"))
    await _pipeline(svc2, {"max_context_tokens": 10}, rewrite=False).run(ctx2)
    assert ctx2.state["trace.notes"]["pack"]["chunks"] == []
    assert "No context passages" in ctx2.request.messages[0].text()


def test_edges_first() -> None:
    assert edges_first([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]
    assert edges_first([1, 2]) == [1, 2] and edges_first([]) == []


async def test_rewrite_resolves_references_from_history(tmp_path: Path) -> None:
    svc = Services(tmp_path, answer="When did Emily Doe last buy something from us?")
    await _seed(svc)
    ctx = ctx_of(("user", "When did John Smith last buy something from us?"), ("assistant", "On 2 April."),
                 ("user", "How about Emily Doe?"))  # fmt: skip
    await _pipeline(svc).run(ctx)
    (call,) = svc.gateway.calls
    prompt = call.messages[-1].text()
    assert "John Smith" in prompt and "How about Emily Doe?" in prompt and call.temperature == 0
    assert ctx.query == "When did Emily Doe last buy something from us?"
    assert ctx.documents and ctx.documents[0]["document_id"] == "emily"
    assert ctx.state["trace.notes"]["rewrite"]["resolved"] is True


async def test_rewrite_call_is_part_of_the_request_cost(tmp_path: Path) -> None:
    svc = Services(tmp_path, answer="When did Emily Doe last buy something from us?")
    await _seed(svc)
    ctx = ctx_of(("user", "When did John Smith last buy something?"), ("assistant", "On 2 April."),
                 ("user", "How about Emily Doe?"))  # fmt: skip
    await _pipeline(svc).run(ctx)
    rewrite = (10 * 1.0 + 5 * 2.0) / 1e6  # 10 prompt and 5 completion tokens at $1 / $2 per 1M
    assert ctx.state["trace.notes"]["rewrite"]["cost_usd"] == pytest.approx(rewrite)
    assert ctx.response is not None and ctx.response["portico"]["rewrite"] == {
        "model": "m", "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": pytest.approx(rewrite)}  # fmt: skip
    # EchoGenerate reports no usage: the request's cost is the rewrite call alone, and the answer's cost adds to it.
    assert svc.prices.request_cost(ctx) == pytest.approx(rewrite)
    assert svc.prices.request_cost(ctx, steps=False) == 0.0
    ctx.usage, ctx.deployment = {"prompt_tokens": 100, "completion_tokens": 50}, "m-0"
    ctx.attempts.append(Attempt(deployment="m-0", model="m", started=0.0))  # the answer came from model m
    assert svc.prices.request_cost(ctx) == pytest.approx(rewrite + (100 + 100) / 1e6)


async def test_rewrite_says_when_it_cannot_resolve(tmp_path: Path) -> None:
    svc = Services(tmp_path, answer="UNRESOLVED: Which order do you mean?")
    await _seed(svc)
    ctx = ctx_of(("user", "hi"), ("assistant", "hello"), ("user", "and that one?"))
    await _pipeline(svc).run(ctx)
    assert ctx.answered_by == "rewrite" and ctx.documents is None
    assert ctx.response["choices"][0]["message"]["content"] == "Which order do you mean?"  # type: ignore[index]
    keep = RewriteStep({"model": "m", "on_unresolved": "keep"}, svc)
    ctx2 = ctx_of(("user", "hi"), ("assistant", "hello"), ("user", "and that one?"))
    await keep.run(ctx2)
    assert ctx2.answered_by is None and ctx2.query is None


async def test_first_turn_needs_no_model_call(tmp_path: Path) -> None:
    svc = Services(tmp_path, answer="should not be used")
    await RewriteStep({"model": "m"}, svc).run(c := ctx_of(("user", "refunds?")))
    assert svc.gateway.calls == [] and c.query is None


def test_parse_and_options(tmp_path: Path) -> None:
    assert parse(' "standalone query" \nextra') == ("standalone query", None)
    assert parse("unresolved: who is she?") == (None, "who is she?")
    svc = Services(tmp_path)
    with pytest.raises(ValueError):
        RewriteStep({"model": "nope"}, svc)
    with pytest.raises(ValueError):
        RetrieveStep({"kb": "docs", "filters": {"a": {"$regex": 1}}}, svc)
    with pytest.raises(ValueError):
        RetrieveStep({"kb": "docs", "top": 3}, svc)


async def test_missing_knowledge_base_gives_no_documents(tmp_path: Path) -> None:
    svc = Services(tmp_path)
    ctx = ctx_of(("user", "anything"))
    await RetrieveStep({"kb": "nothing-here"}, svc).run(ctx)
    assert ctx.documents == [] and "does not exist" in ctx.state["trace.notes"]["retrieve"]["reason"]


def test_knowledge_store_from_config(tmp_path: Path) -> None:
    from portico.context.knowledge.manager import EmbeddedCatalog
    from portico.context.knowledge.pgvector import PgCatalog
    from portico.context.knowledge.service import catalog_for

    base = {"state_dir": str(tmp_path), "models": [{"name": "m", "deployments": [{"provider": "local"}]}]}
    assert isinstance(catalog_for(PorticoConfig.model_validate(base)), EmbeddedCatalog)
    pg = PorticoConfig.model_validate({**base, "knowledge": {"store": "postgres", "url": "postgresql://u@h/db"}})
    cat = catalog_for(pg)
    assert isinstance(cat, PgCatalog) and cat.url == "postgresql://u@h/db"
    with pytest.raises(ValueError, match=r"knowledge\.url"):
        catalog_for(PorticoConfig.model_validate({**base, "knowledge": {"store": "postgres"}}))
