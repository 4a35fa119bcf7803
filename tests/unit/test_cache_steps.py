"""The exact cache in a pipeline: keys, cacheability, hits, scoping per key, client controls, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from portico.cache.cacheability import QueryFilter, compile_patterns, decide
from portico.cache.key import cache_key
from portico.cache.memory import MemoryStore
from portico.cache.step import CacheLookupStep, ExactCache
from portico.config.schema import CacheConfig
from portico.pipeline import Pipeline, Step
from portico.pipeline.context import RequestContext
from portico.protocol.assemble import assemble
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest


def req(content: str = "What is the capital of France?", **kw: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "temperature": 0, **kw}
    return ChatCompletionRequest.model_validate(body)


class FakeGenerate(Step):
    """Answers with a numbered completion (a stream when asked) and counts its calls."""

    name = "generate"
    reads = frozenset({"request"})
    writes = frozenset({"response", "stream", "usage"})

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, ctx: RequestContext) -> None:
        self.calls += 1
        text = f"answer {self.calls}"
        ctx.usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if ctx.request.stream:
            ctx.stream = self._chunks(text)
        else:
            ctx.response = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}], "usage": ctx.usage}  # fmt: skip

    async def _chunks(self, text: str) -> AsyncIterator[dict[str, Any]]:
        base = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        for word in text.split(" "):
            yield {**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@pytest.fixture
def setup() -> tuple[Pipeline, FakeGenerate]:
    gen = FakeGenerate()
    lookup = CacheLookupStep(ExactCache(MemoryStore(100), CacheConfig(), None))
    assert lookup.closer is not None
    return Pipeline("t", [lookup, gen, lookup.closer]), gen


async def run(p: Pipeline, r: ChatCompletionRequest, key: str = "k1", cc: str | None = None) -> RequestContext:
    ctx = RequestContext(request=r, request_id="rid", model="m", caller={"key": key, "key_id": key})
    if cc:
        ctx.state["http.cache_control"] = cc
    await p.run(ctx)
    return ctx


def text(ctx: RequestContext) -> str:
    assert ctx.response is not None
    return ctx.response["choices"][0]["message"]["content"]


async def test_a_repeated_request_is_answered_from_the_cache(setup) -> None:  # type: ignore[no-untyped-def]
    p, gen = setup
    first = await run(p, req())
    second = await run(p, req())
    assert first.headers["x-portico-cache"] == "miss" and second.headers["x-portico-cache"] == "hit"
    assert text(second) == text(first) == "answer 1" and gen.calls == 1
    assert second.answered_by == "cache" and second.usage is None  # nothing billed for a hit
    assert second.response is not None and second.response["id"] == "chatcmpl-rid"


async def test_no_answer_crosses_keys(setup) -> None:  # type: ignore[no-untyped-def]
    p, gen = setup
    await run(p, req(), key="alice")
    other = await run(p, req(), key="bob")
    assert other.headers["x-portico-cache"] == "miss" and text(other) == "answer 2" and gen.calls == 2


async def test_different_requests_miss(setup) -> None:  # type: ignore[no-untyped-def]
    p, gen = setup
    await run(p, req())
    assert (await run(p, req("What is the capital of Spain?"))).headers["x-portico-cache"] == "miss"
    assert (await run(p, req(max_tokens=5))).headers["x-portico-cache"] == "miss"
    assert gen.calls == 3


async def test_sampled_requests_bypass(setup) -> None:  # type: ignore[no-untyped-def]
    p, gen = setup
    for r in (req(temperature=0.7), req(temperature=None), req(n=2)):
        await run(p, r)
        assert (await run(p, r)).headers["x-portico-cache"] == "bypass"
    assert gen.calls == 6


async def test_no_store_neither_reads_nor_writes_and_no_cache_refreshes(setup) -> None:  # type: ignore[no-untyped-def]
    p, gen = setup
    await run(p, req(), cc="no-store")
    assert (await run(p, req())).headers["x-portico-cache"] == "miss"  # no-store wrote nothing
    refreshed = await run(p, req(), cc="no-cache")
    assert refreshed.headers["x-portico-cache"] == "bypass" and text(refreshed) == "answer 3"
    assert text(await run(p, req())) == "answer 3"  # the refresh replaced the entry
    ext = await run(p, req(portico={"cache": {"mode": "bypass"}}))
    assert ext.headers["x-portico-cache"] == "bypass" and gen.calls == 4


async def test_namespace_separates_entries(setup) -> None:  # type: ignore[no-untyped-def]
    p, _ = setup
    await run(p, req(portico={"cache": {"namespace": "a"}}))
    assert (await run(p, req(portico={"cache": {"namespace": "b"}}))).headers["x-portico-cache"] == "miss"
    assert (await run(p, req(portico={"cache": {"namespace": "a"}}))).headers["x-portico-cache"] == "hit"


async def test_a_stream_fills_the_cache_and_a_plain_request_reads_it(setup) -> None:  # type: ignore[no-untyped-def]
    p, gen = setup
    streamed = await run(p, req(stream=True))
    assert streamed.stream is not None
    chunks = [c async for c in streamed.stream]
    assert len(chunks) == 4  # role, "answer ", "1 ", finish
    again = await run(p, req())
    assert again.headers["x-portico-cache"] == "hit" and text(again) == "answer 1 " and gen.calls == 1


async def test_an_abandoned_stream_is_not_cached(setup) -> None:  # type: ignore[no-untyped-def]
    p, _ = setup
    streamed = await run(p, req(stream=True))
    assert streamed.stream is not None
    async for _ in streamed.stream:
        break
    await streamed.stream.aclose()  # type: ignore[attr-defined]
    assert (await run(p, req())).headers["x-portico-cache"] == "miss"


async def test_user_specific_and_time_sensitive_queries_are_not_cached(setup) -> None:  # type: ignore[no-untyped-def]
    p, _ = setup
    for q in ("Where is my order #1234?", "What's the weather in Paris today?", "latest news about rust"):
        await run(p, req(q))
        assert (await run(p, req(q))).headers["x-portico-cache"] == "bypass", q


def test_key_ignores_transport_fields_and_field_order() -> None:
    a = req(stream=True, user="u1", metadata={"x": "y"})
    b = ChatCompletionRequest.model_validate(
        {"temperature": 0, "messages": [{"content": "What is the capital of France?", "role": "user"}], "model": "m"}
    )
    assert cache_key(a, "m", "s") == cache_key(b, "m", "s")
    assert cache_key(a, "m", "s") != cache_key(a, "m", "t") != cache_key(a, "other", "s")
    assert cache_key(a, "m", "s", "ns") != cache_key(a, "m", "s")
    # The scope is length-prefixed: moving characters between scope and namespace changes the key.
    assert cache_key(a, "m", "ab", "c") != cache_key(a, "m", "a", "bc")


def test_bad_extension_is_a_400_naming_the_field() -> None:
    skip = QueryFilter(compile_patterns(None))
    for ext, param in (({"mode": "always"}, "portico.cache.mode"), ({"ttl": -1}, "portico.cache.ttl"),
                       ({"colour": 1}, "portico.cache"), ("yes", "portico.cache")):  # fmt: skip
        with pytest.raises(InvalidRequest) as e:
            decide(req(portico={"cache": ext}), "q", cache_control=None, cache_sampled=False, skip=skip)
        assert e.value.param == param


def test_bad_skip_pattern_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="skip_patterns"):
        compile_patterns(["(unclosed"])


def test_assemble_rebuilds_content_and_tool_calls_and_refuses_a_cut_stream() -> None:
    base = {"id": "s", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": ""}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '"Oslo"}'}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": {"total_tokens": 9}},
    ]  # fmt: skip
    out = assemble(chunks)
    assert out is not None and out["usage"] == {"total_tokens": 9}
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["id"] == "call_1" and call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert assemble(chunks[:-1]) is None
