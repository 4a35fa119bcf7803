"""The gateway's reliability policy with scripted in-process backends: retries, moving on, fallbacks, breakers,
routing, and the bookkeeping (attempts, in-flight counts) on every path, cancellation included."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from portico.config.loader import validate
from portico.gateway import Gateway
from portico.gateway.breaker import CircuitBreaker
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import PorticoError, ServiceUnavailable, UpstreamError

HANG = "hang"
EMPTY = "empty"
BREAK = "break"  # a stream that fails after its first chunk


def err(status: int, retryable: bool = True, retry_after: str | None = None, upstream: int | None = None):
    headers = {"retry-after": retry_after} if retry_after else None
    return UpstreamError(
        f"boom {status}", status=status, retryable=retryable, headers=headers, upstream_status=upstream or status
    )


class Fake:
    """A backend answering from a script: an exception to raise, HANG, EMPTY, BREAK, or (when exhausted) success."""

    ready = True
    error: str | None = None

    def __init__(self, label: str, *script: Any) -> None:
        self.label = label
        self.script = list(script)
        self.calls = 0

    def _next(self) -> Any:
        self.calls += 1
        item = self.script.pop(0) if self.script else "ok"
        if isinstance(item, BaseException):
            raise item
        return item

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def chat(self, req: Any) -> dict[str, Any]:
        if self._next() == HANG:
            await asyncio.Event().wait()
        return {"id": self.label, "choices": [], "usage": {"total_tokens": 3}}

    async def stream(self, req: Any) -> AsyncIterator[dict[str, Any]]:
        item = self._next()
        if item == EMPTY:
            return
        yield {"choices": [{"delta": {"content": self.label}}]}
        if item == BREAK:
            raise err(502)
        if item == HANG:
            await asyncio.Event().wait()
        yield {"choices": [], "usage": {"total_tokens": 5}}

    async def embed(self, req: Any) -> dict[str, Any]:
        self._next()
        return {"data": [], "model": self.label}


def dep(name: str) -> dict[str, Any]:
    return {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "name": name}


def model(name: str, *deps: str, **extra: Any) -> dict[str, Any]:
    extra.setdefault("retries", {"max": 2, "backoff": 0})
    extra.setdefault("routing", {"strategy": "ordered"})
    return {"name": name, "deployments": [dep(d) for d in deps], **extra}


def gateway(*models: dict[str, Any], fakes: list[Fake]) -> Gateway:
    gw = Gateway(validate({"models": list(models)}), rng=random.Random(0))
    by_label = {f.label: f for f in fakes}
    for e in gw.models.values():
        for h in e.handles:
            h.backend = by_label[h.label]
    return gw


def ctx_for(model_name: str, stream: bool = False) -> RequestContext:
    req = ChatCompletionRequest.model_validate(
        {"model": model_name, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )
    return RequestContext(request=req, request_id="r1", model=model_name)


def tries(ctx: RequestContext) -> list[tuple[str, int | None]]:
    return [(a.deployment, a.status) for a in ctx.attempts]


def inflight(gw: Gateway) -> set[int]:
    return set(gw.inflight().values())


async def until(cond: Any, steps: int = 1000) -> None:
    """Let other tasks run until ``cond()`` holds (bounded: a stuck test fails instead of hanging)."""
    for _ in range(steps):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_clock_breakers(gw: Gateway, failures: int, cooldown: float) -> Clock:
    clock = Clock()
    for e in gw.models.values():
        for h in e.handles:
            h.breaker = CircuitBreaker(failures, cooldown, clock)
    return clock


# ---- retries and moving on --------------------------------------------------------------------------------


async def test_retries_the_same_deployment_then_succeeds() -> None:
    a = Fake("a", err(503), err(504))
    gw = gateway(model("m", "a"), fakes=[a])
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 503), ("a", 504), ("a", 200)]
    assert ctx.deployment == "a" and ctx.usage == {"total_tokens": 3}
    assert all(t.duration >= 0 and t.error is None for t in ctx.attempts[2:])
    assert ctx.attempts[0].error == "boom 503"
    assert inflight(gw) == {0}


async def test_exhausted_retries_move_to_next_deployment_then_fallback_model() -> None:
    a, b, c = Fake("a", *[err(503)] * 3), Fake("b", *[err(429)] * 3), Fake("c")
    gw = gateway(model("m", "a", "b", fallbacks=["f"]), model("f", "c"), fakes=[a, b, c])
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 503)] * 3 + [("b", 429)] * 3 + [("c", 200)]
    assert [t.model for t in ctx.attempts] == ["m"] * 6 + ["f"]
    assert ctx.deployment == "c"


async def test_each_model_uses_its_own_retry_policy() -> None:
    a, c = Fake("a", err(503)), Fake("c", err(503), err(503))
    gw = gateway(model("m", "a", retries={"max": 0}, fallbacks=["f"]), model("f", "c"), fakes=[a, c])
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 503), ("c", 503), ("c", 503), ("c", 200)]


async def test_client_error_is_not_retried_anywhere() -> None:
    a, b = Fake("a", err(400, retryable=False)), Fake("b")
    gw = gateway(model("m", "a", "b"), fakes=[a, b])
    ctx = ctx_for("m")
    with pytest.raises(UpstreamError) as ei:
        await gw.chat(ctx, "m")
    assert ei.value.status == 400
    assert tries(ctx) == [("a", 400)] and b.calls == 0
    assert gw.breakers()["m/a"] == "closed"


async def test_upstream_auth_failure_moves_on_without_retrying() -> None:
    a, b = Fake("a", err(502, retryable=False, upstream=401)), Fake("b")
    gw = gateway(model("m", "a", "b"), fakes=[a, b])
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 502), ("b", 200)]


async def test_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("portico.gateway.attempts.asyncio.sleep", no_wait)
    a, b = Fake("a", err(429, retry_after="2"), err(429, retry_after="60")), Fake("b")
    gw = gateway(model("m", "a", "b", retries={"max": 2, "backoff": 0.1, "backoff_max": 5}), fakes=[a, b])
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    # 2 s is waited; 60 s is past backoff_max, so the plan moves on at once instead of hammering a.
    assert waits == [2.0]
    assert tries(ctx) == [("a", 429), ("a", 429), ("b", 200)]


async def test_the_last_error_is_raised_when_everything_fails() -> None:
    a = Fake("a", err(503), err(503), err(504))
    gw = gateway(model("m", "a"), fakes=[a])
    ctx = ctx_for("m")
    with pytest.raises(UpstreamError) as ei:
        await gw.chat(ctx, "m")
    assert ei.value.status == 504 and len(ctx.attempts) == 3


async def test_errors_that_are_not_portico_errors_propagate_and_are_recorded() -> None:
    a = Fake("a", RuntimeError("bug"))
    gw = gateway(model("m", "a", "a2"), fakes=[a, Fake("a2")])
    ctx = ctx_for("m")
    with pytest.raises(RuntimeError):
        await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 500)] and inflight(gw) == {0}


# ---- circuit breaker --------------------------------------------------------------------------------------


async def test_open_breaker_is_skipped_and_a_probe_goes_through_after_cooldown() -> None:
    a, c = Fake("a", *[err(503)] * 3), Fake("c")
    gw = gateway(model("m", "a", retries={"max": 0}, fallbacks=["f"]), model("f", "c"), fakes=[a, c])
    clock = fake_clock_breakers(gw, failures=2, cooldown=30)
    for _ in range(2):
        ctx = ctx_for("m")
        await gw.chat(ctx, "m")
        assert tries(ctx) == [("a", 503), ("c", 200)]
    assert gw.breakers()["m/a"] == "open"
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("c", 200)] and a.calls == 2  # straight to the fallback
    clock.now += 30
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 503), ("c", 200)]  # the probe failed: open again
    assert gw.breakers()["m/a"] == "open"
    clock.now += 30
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 200)]  # the probe succeeded
    assert gw.breakers()["m/a"] == "closed"


async def test_breaker_opening_mid_retries_stops_retrying_that_deployment() -> None:
    a, b = Fake("a", *[err(503)] * 9), Fake("b")
    gw = gateway(model("m", "a", "b", retries={"max": 5, "backoff": 0}), fakes=[a, b])
    fake_clock_breakers(gw, failures=2, cooldown=30)
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 503), ("a", 503), ("b", 200)]


async def test_a_loading_local_model_does_not_trip_its_breaker() -> None:
    a, c = Fake("a", *[ServiceUnavailable("a is still loading")] * 5), Fake("c")
    gw = gateway(model("m", "a", fallbacks=["f"]), model("f", "c"), fakes=[a, c])
    fake_clock_breakers(gw, failures=1, cooldown=30)
    for _ in range(3):
        ctx = ctx_for("m")
        await gw.chat(ctx, "m")
        assert tries(ctx) == [("a", 503), ("c", 200)]  # moves on, not retried, breaker stays closed
    assert gw.breakers()["m/a"] == "closed"


async def test_all_open_fails_fast_naming_the_deployments() -> None:
    a, b = Fake("a", *[err(503)] * 9), Fake("b", *[err(502)] * 9)
    gw = gateway(model("m", "a", "b", retries={"max": 0}), fakes=[a, b])
    clock = fake_clock_breakers(gw, failures=1, cooldown=20)
    with pytest.raises(UpstreamError):
        await gw.chat(ctx_for("m"), "m")
    clock.now += 5
    ctx = ctx_for("m")
    with pytest.raises(UpstreamError) as ei:
        await gw.chat(ctx, "m")
    e = ei.value
    assert (e.status, e.code) == (503, "all_deployments_unavailable")
    assert "m/a" in e.message and "m/b" in e.message and "boom 502" in e.message
    assert e.headers["retry-after"] == "15"
    assert ctx.attempts == [] and (a.calls, b.calls) == (1, 1)


async def test_all_open_here_still_uses_a_closed_fallback() -> None:
    a, c = Fake("a", *[err(503)] * 9), Fake("c")
    gw = gateway(model("m", "a", retries={"max": 0}, fallbacks=["f"]), model("f", "c"), fakes=[a, c])
    fake_clock_breakers(gw, failures=1, cooldown=20)
    await gw.chat(ctx_for("m"), "m")
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("c", 200)]


async def test_a_cancelled_probe_frees_the_half_open_slot() -> None:
    a = Fake("a", err(503), HANG)
    gw = gateway(model("m", "a", retries={"max": 0}), fakes=[a])
    clock = fake_clock_breakers(gw, failures=1, cooldown=10)
    with pytest.raises(UpstreamError):
        await gw.chat(ctx_for("m"), "m")
    clock.now += 10
    ctx = ctx_for("m")
    task = asyncio.create_task(gw.chat(ctx, "m"))
    await until(lambda: a.calls == 2)
    assert gw.breakers()["m/a"] == "half_open" and inflight(gw) == {1}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tries(ctx) == [("a", 499)] and inflight(gw) == {0}
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")  # the next caller probes, and closes the breaker
    assert tries(ctx) == [("a", 200)] and gw.breakers()["m/a"] == "closed"


# ---- streams ----------------------------------------------------------------------------------------------


async def drain(ctx: RequestContext) -> list[dict[str, Any]]:
    assert ctx.stream is not None
    return [c async for c in ctx.stream]


async def test_stream_retries_and_falls_back_before_the_first_chunk() -> None:
    a, b = Fake("a", err(503), EMPTY, err(504)), Fake("b")
    gw = gateway(model("m", "a", "b"), fakes=[a, b])
    ctx = ctx_for("m", stream=True)
    await gw.chat_stream(ctx, "m")
    assert ctx.deployment == "b"
    assert tries(ctx)[:3] == [("a", 503), ("a", 502), ("a", 504)]
    assert ctx.attempts[1].error == "a: upstream stream ended without any data"
    assert ctx.attempts[3].status is None and inflight(gw) == {0, 1}  # open until the stream ends
    chunks = await drain(ctx)
    assert chunks[0]["choices"][0]["delta"]["content"] == "b"
    assert tries(ctx)[3] == ("b", 200) and ctx.usage == {"total_tokens": 5}
    assert inflight(gw) == {0}


async def test_stream_failing_after_first_chunk_is_not_retried() -> None:
    a, b = Fake("a", BREAK), Fake("b")
    gw = gateway(model("m", "a", "b"), fakes=[a, b])
    fake_clock_breakers(gw, failures=1, cooldown=10)
    ctx = ctx_for("m", stream=True)
    await gw.chat_stream(ctx, "m")
    with pytest.raises(UpstreamError):
        await drain(ctx)
    assert tries(ctx) == [("a", 502)] and b.calls == 0
    assert inflight(gw) == {0} and gw.breakers()["m/a"] == "open"  # a broken stream counts against a


async def test_stream_closed_early_by_its_consumer_releases_the_deployment() -> None:
    a = Fake("a", HANG)
    gw = gateway(model("m", "a"), fakes=[a])
    ctx = ctx_for("m", stream=True)
    await gw.chat_stream(ctx, "m")
    assert ctx.stream is not None
    await anext(ctx.stream)
    await ctx.stream.aclose()  # type: ignore[attr-defined]
    assert tries(ctx) == [("a", 499)] and inflight(gw) == {0}
    assert gw.breakers()["m/a"] == "closed"


async def test_stream_cancelled_mid_way_releases_the_deployment() -> None:
    a = Fake("a", HANG)
    gw = gateway(model("m", "a"), fakes=[a])
    ctx = ctx_for("m", stream=True)
    await gw.chat_stream(ctx, "m")
    got: list[dict[str, Any]] = []

    async def consume() -> None:
        assert ctx.stream is not None
        async for chunk in ctx.stream:
            got.append(chunk)

    task = asyncio.create_task(consume())
    await until(lambda: len(got) == 1)  # the client has the first chunk; the upstream hangs on the next
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tries(ctx) == [("a", 499)] and inflight(gw) == {0}


async def test_stream_never_iterated_still_releases_the_deployment() -> None:
    a = Fake("a")
    gw = gateway(model("m", "a"), fakes=[a])
    ctx = ctx_for("m", stream=True)
    await gw.chat_stream(ctx, "m")
    attempts = ctx.attempts
    assert inflight(gw) == {1}
    del ctx  # e.g. a later step failed before the response started
    gc.collect()
    await asyncio.sleep(0)
    assert [(t.deployment, t.status) for t in attempts] == [("a", 499)]
    assert inflight(gw) == {0}


async def test_cancelled_chat_call_releases_the_deployment() -> None:
    a = Fake("a", HANG)
    gw = gateway(model("m", "a"), fakes=[a])
    ctx = ctx_for("m")
    task = asyncio.create_task(gw.chat(ctx, "m"))
    await until(lambda: a.calls == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tries(ctx) == [("a", 499)] and inflight(gw) == {0}


# ---- embeddings and routing -------------------------------------------------------------------------------


async def test_embeddings_get_the_same_policy() -> None:
    a, b = Fake("a", err(503), err(503), err(503)), Fake("b")
    gw = gateway(model("e", "a", "b", type="embedding"), fakes=[a, b])
    attempts: list = []
    out, label = await gw.embeddings(EmbeddingRequest(model="e", input="x"), attempts)
    assert label == "b" and out["model"] == "b"
    assert [(t.deployment, t.status) for t in attempts] == [("a", 503)] * 3 + [("b", 200)]
    assert inflight(gw) == {0}


async def test_least_inflight_sends_the_next_request_to_the_idle_deployment() -> None:
    a, b = Fake("a", HANG, HANG), Fake("b", HANG, HANG)
    gw = gateway(model("m", "a", "b", routing={"strategy": "least_inflight"}), fakes=[a, b])
    first, second = ctx_for("m"), ctx_for("m")
    t1 = asyncio.create_task(gw.chat(first, "m"))
    await until(lambda: a.calls + b.calls == 1)
    t2 = asyncio.create_task(gw.chat(second, "m"))
    await until(lambda: a.calls + b.calls == 2)
    assert (a.calls, b.calls) == (1, 1)
    assert {first.attempts[0].deployment, second.attempts[0].deployment} == {"a", "b"}
    for t in (t1, t2):
        t.cancel()
    await asyncio.gather(t1, t2, return_exceptions=True)
    assert inflight(gw) == {0}


async def test_lowest_latency_learns_from_successes_and_tries_unmeasured_first() -> None:
    a, b = Fake("a", err(503)), Fake("b")
    gw = gateway(model("m", "a", "b", retries={"max": 0}, routing={"strategy": "lowest_latency"}), fakes=[a, b])
    handles = {h.label: h for h in gw.models["m"].handles}
    await gw.chat(ctx_for("m"), "m")
    assert handles["b"].latency.value is not None
    assert handles["a"].latency.value is None  # a failure records no latency
    ctx = ctx_for("m")
    await gw.chat(ctx, "m")
    assert tries(ctx) == [("a", 200)]  # never measured, so tried first
    assert handles["a"].latency.value is not None


async def test_default_weighted_routing_spreads_over_deployments() -> None:
    a, b = Fake("a"), Fake("b")
    gw = gateway(model("m", "a", "b", routing={"strategy": "weighted"}), fakes=[a, b])
    for _ in range(40):
        await gw.chat(ctx_for("m"), "m")
    assert a.calls > 5 and b.calls > 5


async def test_pipeline_errors_keep_their_shape() -> None:
    gw = gateway(model("m", "a"), fakes=[Fake("a")])
    with pytest.raises(PorticoError) as ei:
        await gw.chat(ctx_for("nope"), "nope")
    assert ei.value.status == 404
