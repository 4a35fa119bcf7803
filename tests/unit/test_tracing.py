"""Span trees from hand-made request contexts, content policies, sampling, and the trace store (SQLite, PostgreSQL)."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from portico.config.schema import TracingConfig
from portico.observability.spans import (
    ChatSource,
    EmbeddingsSource,
    SpanData,
    TraceData,
    chat_trace,
    embeddings_trace,
    provider_of,
)
from portico.observability.trace_writer import TraceWriter
from portico.observability.tracing import Tracer, keep
from portico.pipeline.context import Attempt, RequestContext, StepTiming
from portico.protocol.chat import ChatCompletionRequest
from portico.storage.db import Database
from portico.storage.traces import get_trace, list_traces
from portico.storage.usage import UsageRecord

T0 = 1000.0  # perf_counter origin of the hand-made contexts
WALL_NS = 1_700_000_000_000_000_000  # the wall clock when they settled


def make_ctx(request_id: str = "req-1", prompt: str = "tell me about herons") -> RequestContext:
    req = ChatCompletionRequest(model="support", messages=[{"role": "user", "content": prompt}])
    ctx = RequestContext(request=req, request_id=request_id, model="support", application="support",
                         caller={"key": "team-a"}, started=T0)  # fmt: skip
    ctx.deployment = "openai/gpt-4o-mini"
    ctx.usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    ctx.response = {
        "model": "gpt-4o-mini-2024",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Tall birds."}}],
    }
    return ctx


def make_rec(request_id: str = "req-1", status: int = 200) -> UsageRecord:
    return UsageRecord(ts=1.7e9, request_id=request_id, endpoint="chat", status=status, key_name="team-a",
                       model="support", application="support", deployment="openai/gpt-4o-mini",
                       prompt_tokens=12, completion_tokens=5, cost_usd=0.0001, latency_ms=40.0, attempts=1)  # fmt: skip


def trace(ctx: RequestContext, rec: UsageRecord, content: str, now: float) -> TraceData:
    """What the trace writer builds from a settled request's source."""
    return chat_trace(ChatSource(ctx, rec, now, WALL_NS), content)


def by_name(spans: list[SpanData]) -> dict[str, SpanData]:
    return {s.name: s for s in spans}


def test_parallel_steps_overlap_and_attempts_sit_under_generate() -> None:
    ctx = make_ctx()
    # Completion order (as the runner appends them): guard finishes after route although both start together.
    ctx.timings = [
        StepTiming("route", T0 + 0.001, 0.002),
        StepTiming("guard", T0 + 0.001, 0.004),
        StepTiming("generate", T0 + 0.006, 0.030),
    ]
    ctx.attempts = [Attempt("openai/gpt-4o-mini", "gpt-4o-mini", T0 + 0.007, 0.028, 200)]
    spans = trace(ctx, make_rec(), "full", T0 + 0.040).spans
    root, named = spans[0], by_name(spans)
    assert root.name == "chat support" and root.parent_id is None and root.duration_ms == pytest.approx(40.0)
    assert [s.name for s in spans[1:4]] == ["route", "guard", "generate"]  # start order, not completion order
    assert all(named[n].parent_id == root.span_id for n in ("route", "guard", "generate"))
    guard, route = named["guard"], named["route"]
    assert guard.start_ms < route.start_ms + route.duration_ms and route.start_ms < guard.start_ms + guard.duration_ms
    attempt = named["chat openai/gpt-4o-mini"]
    assert attempt.parent_id == named["generate"].span_id
    assert attempt.attributes["gen_ai.system"] == "openai" and attempt.attributes["portico.status"] == 200
    assert len({s.span_id for s in spans}) == len(spans)


def test_root_carries_gen_ai_and_portico_attributes() -> None:
    ctx = make_ctx()
    ctx.timings = [StepTiming("generate", T0, 0.01)]
    a = trace(ctx, make_rec(), "full", T0 + 0.02).spans[0].attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "support" and a["gen_ai.response.model"] == "gpt-4o-mini-2024"
    assert a["gen_ai.usage.input_tokens"] == 12 and a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["portico.request_id"] == "req-1" and a["portico.key"] == "team-a"
    assert a["portico.application"] == "support" and a["portico.cost_usd"] == 0.0001
    assert a["portico.status"] == 200 and a["portico.deployment"] == "openai/gpt-4o-mini"
    assert None not in a.values()


def test_retries_and_fallback_each_get_an_attempt_span() -> None:
    ctx = make_ctx()
    ctx.timings = [StepTiming("generate", T0, 0.5, None)]
    ctx.attempts = [
        Attempt("openai/dead", "x", T0 + 0.01, 0.05, 503, "connection refused"),
        Attempt("openai/dead", "x", T0 + 0.10, 0.05, 503, "connection refused"),
        Attempt("anthropic/claude", "claude-3", T0 + 0.20, 0.25, 200),
    ]
    spans = trace(ctx, make_rec(), "none", T0 + 0.5).spans
    attempts = [s for s in spans if s.name.startswith("chat ") and s.parent_id == spans[1].span_id]
    assert [s.status for s in attempts] == ["error", "error", "ok"]
    assert [s.attributes["gen_ai.system"] for s in attempts] == ["openai", "openai", "anthropic"]
    assert attempts[0].attributes["error.type"] == "connection refused"
    assert attempts[2].start_ms == pytest.approx(200.0)


def test_failed_step_and_request_are_errors_and_attempts_without_generate_hang_off_root() -> None:
    ctx = make_ctx()
    ctx.response = None
    ctx.timings = [StepTiming("guard", T0, 0.001, "Blocked")]
    ctx.attempts = [Attempt("custom-name", "m", T0, 0.0, None)]  # still running when settled
    spans = trace(ctx, make_rec(status=400), "full", T0 + 0.01).spans
    assert spans[0].status == "error" and by_name(spans)["guard"].status == "error"
    attempt = spans[-1]
    assert attempt.parent_id == spans[0].span_id and attempt.duration_ms == pytest.approx(10.0)
    assert "gen_ai.system" not in attempt.attributes  # a custom label names no provider


@pytest.mark.parametrize(("content", "stored"), [("full", True), ("redacted", False), ("none", False)])
def test_content_policy(content: str, stored: bool) -> None:
    row = trace(make_ctx(), make_rec(), content, T0 + 0.01).row()
    if stored:
        assert row["input"] == [{"role": "user", "content": "tell me about herons"}]
        assert row["output"] == [{"role": "assistant", "content": "Tall birds."}]
    else:
        assert row["input"] is None and row["output"] is None


def test_stream_without_text_stores_no_output() -> None:
    ctx = make_ctx()
    ctx.response = None  # a stream: the gateway keeps no text
    row = trace(ctx, make_rec(), "full", T0 + 0.01).row()
    assert row["input"] and row["output"] is None


def test_embeddings_trace() -> None:
    rec = UsageRecord(ts=1.7e9, request_id="e1", endpoint="embeddings", status=200, model="emb",
                      deployment="local/all-MiniLM-L6-v2", prompt_tokens=3)  # fmt: skip
    attempts = [Attempt("local/all-MiniLM-L6-v2", "m", T0, 0.01, 200)]
    t = embeddings_trace(EmbeddingsSource(rec, ["a", "b"], attempts, T0, T0 + 0.02, WALL_NS), "full")
    assert t.spans[0].name == "embeddings emb" and t.spans[0].attributes["gen_ai.operation.name"] == "embeddings"
    assert t.spans[1].parent_id == t.spans[0].span_id and t.spans[1].attributes["gen_ai.system"] == "local"
    assert t.row()["input"] == ["a", "b"] and t.row()["output"] is None


def test_provider_comes_from_the_label_prefix() -> None:
    assert provider_of("anthropic/claude-3") == "anthropic" and provider_of("my-name") is None
    assert provider_of(None) is None


def test_sampling_follows_the_seeded_draws_and_keeps_errors() -> None:
    rng, ref = random.Random(7), random.Random(7)
    kept = [keep(200, 0.3, rng) for _ in range(200)]
    assert kept == [ref.random() < 0.3 for _ in range(200)]
    assert 0 < sum(kept) < 200
    assert not any(keep(200, 0.0, random.Random(1)) for _ in range(50))
    assert all(keep(status, 0.0, random.Random(1)) for status in (400, 429, 500, 502, 499))
    assert all(keep(200, 1.0, random.Random(1)) for _ in range(50))


class FakeWriter:
    def __init__(self) -> None:
        self.added: list = []

    def add(self, t) -> None:  # type: ignore[no-untyped-def]
        self.added.append(t)


def test_tracer_samples_before_queueing() -> None:
    writer = FakeWriter()
    tracer = Tracer(TracingConfig(sample_rate=0.0), writer, rng=random.Random(3))  # type: ignore[arg-type]
    tracer.chat(make_ctx(), make_rec())
    tracer.chat(make_ctx("req-2"), make_rec("req-2", status=502))
    assert [t.request_id for t in writer.added] == ["req-2"]


def test_config_defaults_and_bounds() -> None:
    cfg = TracingConfig()
    assert (cfg.content, cfg.sample_rate, cfg.otlp_endpoint) == ("full", 1.0, None)
    with pytest.raises(ValidationError):
        TracingConfig(sample_rate=1.5)
    with pytest.raises(ValidationError):
        TracingConfig(content="everything")


@pytest.fixture
def db(store_db: Database) -> Database:
    return store_db


async def test_store_roundtrip_search_tree_and_duplicates(db: Database) -> None:
    writer = TraceWriter(db.url, batch_size=2, interval=0.05)
    writer.start()
    try:
        for i, prompt in enumerate(["herons fly", "owls hoot", "50%_off"]):
            ctx = make_ctx(f"r{i}", prompt)
            ctx.timings = [StepTiming("generate", T0, 0.01)]
            ctx.attempts = [Attempt("openai/gpt-4o-mini", "gpt-4o-mini", T0, 0.009, 200)]
            writer.add(trace(ctx, make_rec(f"r{i}"), "full", T0 + 0.02))
        writer.add(trace(make_ctx("r0"), make_rec("r0"), "full", T0 + 0.02))  # same id again: skipped
        await writer.flush()
        assert not writer._pending and writer.written == 3
        rows = await list_traces(db, filters={}, limit=10)
        assert sorted(r["request_id"] for r in rows) == ["r0", "r1", "r2"] and "input" not in rows[0]
        assert [r["request_id"] for r in await list_traces(db, filters={}, text="owls")] == ["r1"]
        assert [r["request_id"] for r in await list_traces(db, filters={}, text="50%_")] == ["r2"]
        assert await list_traces(db, filters={"model": "other"}) == []
        assert len(await list_traces(db, filters={"key_name": "team-a", "status": 200})) == 3
        t = await get_trace(db, "r0")
        assert t is not None and t["input"] == [{"role": "user", "content": "herons fly"}]
        (root,) = t["spans"]
        (gen,) = root["children"]
        assert gen["name"] == "generate" and gen["children"][0]["attributes"]["gen_ai.system"] == "openai"
        assert await get_trace(db, "missing") is None
    finally:
        await writer.close()


async def test_full_queue_drops_and_counts_then_the_rest_is_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path}/t.db")
    await db.create_schema()
    dropped: list[int] = []
    writer = TraceWriter(db.url, batch_size=10, interval=60, max_queue=3, on_drop=lambda: dropped.append(1))
    for i in range(5):  # the writer's thread is not started: nothing drains
        writer.add(trace(make_ctx(f"r{i}"), make_rec(f"r{i}"), "none", T0 + 0.01))
    assert len(writer._pending) == 3 and writer.dropped == 2 and len(dropped) == 2
    writer.start()
    await writer.close()  # writes what is queued before the thread ends
    assert writer.written == 3
    assert sorted(r["request_id"] for r in await list_traces(db, filters={})) == ["r0", "r1", "r2"]
    await db.close()


async def test_sources_are_built_and_redacted_in_the_writer_thread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    db = Database(f"sqlite:///{tmp_path}/t.db")
    await db.create_schema()
    seen: list[str] = []

    def redact(values: list) -> list:  # type: ignore[type-arg]
        seen.append(threading.current_thread().name)
        return [str(v).replace("herons", "[ANIMAL_1]") if v is not None else None for v in values[:2]] + values[2:]

    tracer = Tracer.build(TracingConfig(content="redacted"), db.url, batch_size=5, interval=0.05, redact=redact,
                          versions={"support": "v2"})  # fmt: skip
    tracer.start()
    try:
        ctx = make_ctx()
        ctx.note("route", decision="kept")
        ctx.timings = [StepTiming("route", T0, 0.001)]
        tracer.chat(ctx, make_rec())
        await tracer.flush()
        t = await get_trace(db, "req-1")
        assert t is not None and "[ANIMAL_1]" in t["input"] and "herons" not in t["input"]
        assert t["spans"][0]["attributes"]["portico.application.version"] == "v2"
        assert t["spans"][0]["children"][0]["attributes"]["portico.route.decision"] == "kept"
        assert seen == ["portico-trace-writer"]  # never the request's thread
    finally:
        await tracer.close()
        await db.close()


def test_a_writer_that_cannot_open_its_store_fails_at_start() -> None:
    writer = TraceWriter("nosuchdialect://x")
    with pytest.raises(RuntimeError, match="could not start"):
        writer.start()
