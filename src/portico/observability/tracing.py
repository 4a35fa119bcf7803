"""Request traces: a span tree rebuilt from a settled request's context, stored in Portico's database and
optionally exported over OTLP/HTTP.

Nothing is traced while a request runs: the pipeline already records step timings and upstream attempts on the
``RequestContext``, so once the request is settled the tree is assembled from those (cheap: plain dataclasses).
Turning the request's messages into JSON, database inserts and the OTLP export all happen in the background
writer (``storage.traces``), off the request path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portico.config.schema import TracingConfig
from portico.pipeline.context import CHILD_SPANS, Attempt, ChildSpan, RequestContext, StepTiming
from portico.storage.db import Database
from portico.storage.traces import TraceWriter
from portico.storage.usage import UsageRecord


@dataclass(slots=True)
class SpanData:
    span_id: str
    parent_id: str | None
    name: str
    start_ms: float  # offset from the trace's start
    duration_ms: float
    status: str  # ok | error
    attributes: dict[str, Any]

    def row(self, request_id: str) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "start_ms": round(self.start_ms, 3),
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "attributes": self.attributes,
        }


@dataclass(slots=True)
class TraceData:
    record: UsageRecord
    start_ns: int  # wall clock of the root span's start (epoch ns), for OTLP timestamps
    spans: list[SpanData]
    # Raw content, turned into JSON by the writer (not in the request task); None when not stored.
    input_src: Any = None
    output_src: Any = None

    @property
    def request_id(self) -> str:
        return self.record.request_id

    def row(self) -> dict[str, Any]:
        r = self.record
        ts = self.start_ns / 1e9
        return {
            "request_id": r.request_id,
            "ts": ts,
            "day": time.strftime("%Y-%m-%d", time.gmtime(ts)),
            "endpoint": r.endpoint,
            "key_name": r.key_name,
            "model": r.model,
            "application": r.application,
            "deployment": r.deployment,
            "status": r.status,
            "latency_ms": round(r.latency_ms, 3),
            "cost_usd": r.cost_usd,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "input": content_json(self.input_src),
            "output": content_json(self.output_src),
        }


def content_json(src: Any) -> Any:
    """Pydantic messages → plain JSON values (called by the writer)."""
    if src is None:
        return None
    if isinstance(src, list):
        return [m.model_dump(mode="json", exclude_none=True) if hasattr(m, "model_dump") else m for m in src]
    return src


def keep(status: int, sample_rate: float, rng: random.Random) -> bool:
    """Errors are always kept; successes when a draw falls within the sample rate."""
    if status >= 400:
        return True
    return sample_rate >= 1.0 or rng.random() < sample_rate


def stores_content(content: str) -> bool:
    # 'redacted' stores only what went through PII masking (see redacted_content); never raw text.
    return content == "full"


def redacted_content(ctx: RequestContext) -> tuple[Any, Any]:
    """``tracing.content: redacted``: the prompt as the ``pii`` step masked it (what the provider saw) and the
    answer before unmasking; nothing for a request that no pii step scanned. The keys are the pii step's."""
    if not ctx.state.get("pii.scanned"):
        return None, None
    masked = ctx.state.get("pii.masked_response")
    if masked is None and not ctx.state.get("pii.mapping"):
        masked = ctx.response  # nothing was masked, so the answer holds no placeholder to hide
    return list(ctx.request.messages), _answer(masked)


def provider_of(label: str | None) -> str | None:
    """``openai/gpt-4o`` → ``openai``; a custom deployment name without '/' names no provider."""
    if not label or "/" not in label:
        return None
    return label.split("/", 1)[0]


def _attrs(**values: Any) -> dict[str, Any]:
    # OTLP attributes cannot be None; dots are not valid keyword names, hence the '__' spelling.
    return {k.replace("__", "."): v for k, v in values.items() if v is not None}


def _finish_reasons(response: dict[str, Any] | None) -> list[str] | None:
    if not response:
        return None
    reasons = [c.get("finish_reason") for c in response.get("choices") or []]
    return [r for r in reasons if r] or None


def _answer(response: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The final answer: each choice's message (content and tool calls)."""
    if not response or not response.get("choices"):
        return None
    return [c.get("message") or {} for c in response["choices"]]


class _Ids:
    """Span ids unique within one trace (the spans table's key is request id + span id)."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"{self.n:016x}"


def root_attributes(
    operation: str, rec: UsageRecord, requested: str, response_model: str | None, finish: list[str] | None
) -> dict[str, Any]:
    return _attrs(
        gen_ai__operation__name=operation,
        gen_ai__system=provider_of(rec.deployment),
        gen_ai__request__model=requested,
        gen_ai__response__model=response_model,
        gen_ai__usage__input_tokens=rec.prompt_tokens,
        gen_ai__usage__output_tokens=rec.completion_tokens,
        gen_ai__response__finish_reasons=finish,
        portico__request_id=rec.request_id,
        portico__key=rec.key_name,
        portico__application=rec.application,
        portico__cost_usd=rec.cost_usd,
        portico__status=rec.status,
        portico__deployment=rec.deployment,
    )


def attempt_span(a: Attempt, operation: str, parent: str, t0: float, ids: _Ids, now: float) -> SpanData:
    running = a.status is None  # still open when settled (e.g. an abandoned stream)
    duration = (now - a.started) if running else a.duration
    failed = a.error is not None or (a.status is not None and a.status >= 400)
    attrs = _attrs(
        gen_ai__operation__name=operation,
        gen_ai__system=provider_of(a.deployment),
        gen_ai__request__model=a.model,
        portico__deployment=a.deployment,
        portico__status=a.status,
        error__type=a.error,
    )
    return SpanData(ids.next(), parent, f"{operation} {a.deployment}", (a.started - t0) * 1000, duration * 1000,
                    "error" if failed else "ok", attrs)  # fmt: skip


def step_span(t: StepTiming, parent: str, t0: float, ids: _Ids, notes: dict[str, Any] | None = None) -> SpanData:
    attrs = _attrs(portico__step=t.step, error__type=t.error)
    for k, v in (notes or {}).items():  # the step's recorded decisions (RequestContext.note)
        if v is not None:
            attrs[f"portico.{t.step}.{k}"] = v
    return SpanData(ids.next(), parent, t.step, (t.started - t0) * 1000, t.duration * 1000,
                    "error" if t.error else "ok", attrs)  # fmt: skip


def build_spans(
    root_name: str,
    root_attrs: dict[str, Any],
    root_failed: bool,
    timings: Sequence[StepTiming],
    attempts: Sequence[Attempt],
    operation: str,
    t0: float,
    now: float,
    notes: dict[str, dict[str, Any]] | None = None,
) -> list[SpanData]:
    """Root → one span per step (parallel steps overlap) → the attempts under ``generate`` (or the root)."""
    ids = _Ids()
    root = SpanData(ids.next(), None, root_name, 0.0, (now - t0) * 1000, "error" if root_failed else "ok", root_attrs)
    spans = [root]
    generate = root.span_id
    # Parallel steps append their timings in completion order; spans read better in start order.
    for t in sorted(timings, key=lambda t: t.started):
        s = step_span(t, root.span_id, t0, ids, (notes or {}).get(t.step))
        spans.append(s)
        if t.step in ("generate", "agent"):  # the steps that call the answering model
            generate = s.span_id
    spans.extend(attempt_span(a, operation, generate, t0, ids, now) for a in attempts)
    return spans


def nest_child_spans(spans: list[SpanData], children: Sequence[ChildSpan], t0: float, content: bool) -> None:
    """Add the spans steps recorded inside themselves (an agent's model and tool calls) under their step's span;
    the upstream attempts made during a child model call move under it."""
    ids = _Ids()
    ids.n = len(spans)
    by_step = {s.name: s for s in spans[1:] if "portico.step" in s.attributes}
    attempts = [s for s in spans[1:] if "portico.step" not in s.attributes]
    for c in sorted(children, key=lambda c: c.started):
        parent = by_step.get(c.step)
        if parent is None:
            continue
        attrs = dict(c.attributes)
        if c.error:
            attrs["error.type"] = c.error
        if content:
            attrs.update((k, v) for k, v in c.content.items() if v is not None)
        child = SpanData(ids.next(), parent.span_id, c.name, (c.started - t0) * 1000, c.duration * 1000,
                         "error" if c.error else "ok", attrs)  # fmt: skip
        if "gen_ai.operation.name" in attrs:  # a model call: its attempts are its children
            end = child.start_ms + child.duration_ms
            for s in attempts:
                if s.parent_id == parent.span_id and child.start_ms <= s.start_ms <= end:
                    s.parent_id = child.span_id
        spans.append(child)


def chat_trace(ctx: RequestContext, rec: UsageRecord, content: str, now: float | None = None) -> TraceData:
    now = time.perf_counter() if now is None else now
    response_model = (ctx.response or {}).get("model") or (ctx.attempts[-1].model if ctx.attempts else None)
    attrs = root_attributes("chat", rec, ctx.model, response_model, _finish_reasons(ctx.response))
    spans = build_spans(f"chat {ctx.model}", attrs, rec.status >= 400, ctx.timings, ctx.attempts, "chat",
                        ctx.started, now, ctx.state.get("trace.notes"))  # fmt: skip
    if ctx.state.get(CHILD_SPANS):
        nest_child_spans(spans, ctx.state[CHILD_SPANS], ctx.started, stores_content(content))
    trace = TraceData(rec, time.time_ns() - int((now - ctx.started) * 1e9), spans)
    if stores_content(content):
        trace.input_src = list(ctx.request.messages)  # dumped to JSON by the writer
        # A stream's text is not kept by the gateway: stored only when the answer was a whole response.
        # With PII masking on, the answer as the provider wrote it (placeholders), never the unmasked one.
        trace.output_src = _answer(ctx.state.get("pii.masked_response") or ctx.response)
    elif content == "redacted":
        trace.input_src, trace.output_src = redacted_content(ctx)
    return trace


def embeddings_trace(
    rec: UsageRecord, texts: list[str], attempts: Sequence[Attempt], started: float, content: str,
    now: float | None = None,
) -> TraceData:  # fmt: skip
    now = time.perf_counter() if now is None else now
    model = rec.model or ""
    response_model = attempts[-1].model if attempts else None
    attrs = root_attributes("embeddings", rec, model, response_model, None)
    spans = build_spans(f"embeddings {model}", attrs, rec.status >= 400, [], attempts, "embeddings", started, now)
    trace = TraceData(rec, time.time_ns() - int((now - started) * 1e9), spans)
    if stores_content(content):
        trace.input_src = list(texts)  # vectors are not stored: they are large and not readable
    return trace


class Tracer:
    """Samples settled requests and hands their traces to the background writer."""

    def __init__(
        self,
        cfg: TracingConfig,
        writer: TraceWriter,
        rng: random.Random | None = None,
        versions: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.writer = writer
        self.rng = rng or random.Random()
        self.versions = versions or {}  # application → pipeline version, on the root span

    @classmethod
    def build(
        cls,
        cfg: TracingConfig,
        db: Database,
        *,
        batch_size: int,
        interval: float,
        versions: dict[str, str] | None = None,
    ) -> Tracer:
        exporter = None
        if cfg.otlp_endpoint:
            from portico.observability.otlp import OtlpExporter  # the SDK is only imported when exporting

            exporter = OtlpExporter(cfg.otlp_endpoint)
        return cls(cfg, TraceWriter(db, batch_size=batch_size, interval=interval, exporter=exporter), versions=versions)

    def chat(self, ctx: RequestContext, rec: UsageRecord) -> None:
        if keep(rec.status, self.cfg.sample_rate, self.rng):
            trace = chat_trace(ctx, rec, self.cfg.content)
            if ctx.application is not None and ctx.application in self.versions:
                trace.spans[0].attributes["portico.application.version"] = self.versions[ctx.application]
            self.writer.add(trace)

    def embeddings(self, rec: UsageRecord, texts: list[str], attempts: Sequence[Attempt], started: float) -> None:
        if keep(rec.status, self.cfg.sample_rate, self.rng):
            self.writer.add(embeddings_trace(rec, texts, attempts, started, self.cfg.content))

    def start(self) -> None:
        self.writer.start()

    async def flush(self) -> None:
        await self.writer.flush()

    async def close(self) -> None:
        await self.writer.close()
