"""The contracts components build on: step notes in spans, a router's target model, the shared query embedding."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from portico.gateway.embedder import QueryEmbedder
from portico.gateway.step import GenerateStep
from portico.observability.spans import build_spans
from portico.pipeline import RequestContext
from portico.pipeline.context import StepTiming
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest


def ctx_of(*messages: dict[str, Any]) -> RequestContext:
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": list(messages)})
    return RequestContext(request=req, request_id="r1", model="m")


def test_query_text_is_last_user_message_unless_rewritten() -> None:
    ctx = ctx_of({"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                 {"role": "user", "content": "second"}, {"role": "assistant", "content": "b"})  # fmt: skip
    assert ctx.query_text() == "second"
    ctx.query = "standalone"
    assert ctx.query_text() == "standalone"


def test_notes_become_attributes_of_their_step_span() -> None:
    ctx = ctx_of({"role": "user", "content": "hi"})
    ctx.note("cache_lookup", similarity=0.97, outcome="semantic-hit")
    ctx.note("cache_lookup", verified=True, skipped=None)
    t0 = ctx.started
    timings = [StepTiming("cache_lookup", t0, 0.001), StepTiming("generate", t0 + 0.001, 0.002)]
    spans = build_spans("chat m", {}, False, timings, [], "chat", t0, t0 + 0.01, ctx.state["trace.notes"])
    by_name = {s.name: s for s in spans}
    attrs = by_name["cache_lookup"].attributes
    assert attrs["portico.cache_lookup.similarity"] == 0.97
    assert attrs["portico.cache_lookup.outcome"] == "semantic-hit"
    assert attrs["portico.cache_lookup.verified"] is True
    assert "portico.cache_lookup.skipped" not in attrs  # None is not an OTLP value
    assert not any(k.startswith("portico.cache_lookup") for k in by_name["generate"].attributes)


class _Gateway:
    def __init__(self) -> None:
        self.models: list[str] = []

    async def chat(self, ctx: RequestContext, model: str) -> None:
        self.models.append(model)


@pytest.mark.parametrize(("target", "fixed", "expected"), [(None, None, "m"), (None, "app-model", "app-model"),
                                                            ("routed", "app-model", "routed")])  # fmt: skip
async def test_generate_prefers_router_target(target: str | None, fixed: str | None, expected: str) -> None:
    gw = _Gateway()
    ctx = ctx_of({"role": "user", "content": "hi"})
    ctx.target_model = target
    await GenerateStep(gw, fixed).run(ctx)  # type: ignore[arg-type]
    assert gw.models == [expected]


class _Backend:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def vectors(self, texts: list[str]) -> np.ndarray:
        self.calls.append(texts)
        await asyncio.sleep(0.01)
        return np.ones((len(texts), 4), dtype=np.float32) / 2


class _Handle:
    def __init__(self, backend: _Backend) -> None:
        self.backend = backend


class _Entry:
    def __init__(self, backend: _Backend) -> None:
        self.handles = [_Handle(backend)]


class _EmbedGateway:
    def __init__(self) -> None:
        self.backend = _Backend()

    def resolve(self, name: str, kind: str) -> _Entry:
        assert (name, kind) == ("emb", "embedding")
        return _Entry(self.backend)


async def test_query_embedding_is_computed_once_for_parallel_steps() -> None:
    gw = _EmbedGateway()
    emb = QueryEmbedder(gw, "emb")
    ctx = ctx_of({"role": "user", "content": "what is portico?"})
    a, b, c = await asyncio.gather(emb.query(ctx), emb.query(ctx), emb.query(ctx))
    assert gw.backend.calls == [["what is portico?"]]
    assert a.shape == (4,) and np.array_equal(a, b) and np.array_equal(b, c)
    ctx.query = "rewritten"  # a new text is a new embedding
    await emb.query(ctx)
    assert gw.backend.calls[-1] == ["rewritten"]


async def test_query_embedder_errors_are_clear() -> None:
    emb = QueryEmbedder(_EmbedGateway(), None)
    with pytest.raises(ValueError, match="semantic cache needs an embedding model"):
        emb.require("semantic cache")
    with pytest.raises(InvalidRequest, match="no user text"):
        await QueryEmbedder(_EmbedGateway(), "emb").query(ctx_of({"role": "system", "content": "x"}))
