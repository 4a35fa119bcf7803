"""A settled request's span tree and stored content, built by the background trace writer (never in the request's
task): root → one span per pipeline step → the upstream attempts. Plain dataclasses, no I/O.

The request path hands over a ``ChatSource`` / ``EmbeddingsSource``: references to what the request already
recorded (its ``RequestContext`` with step timings and attempts, the usage record) plus two clock readings. The
context is finished by then (settled), so reading it later from the writer's thread is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from portico.pipeline.context import CHILD_SPANS, Attempt, ChildSpan, RequestContext, StepTiming
from portico.storage.usage import UsageRecord

# tracing.content: redacted — takes the trace's content values (JSON-able) and returns them with PII replaced by
# placeholders, numbered across all of them (one request's ``[PERSON_1]`` is the same person everywhere).
Redactor = Callable[[list[Any]], list[Any]]


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
    input: Any = None  # JSON-able content, None when not stored
    output: Any = None

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
            "input": self.input,
            "output": self.output,
        }


@dataclass(slots=True)
class ChatSource:
    """What the request path hands over for a chat trace: references and clock readings, nothing built."""

    ctx: RequestContext
    record: UsageRecord
    now: float  # perf_counter when settled
    wall_ns: int  # time.time_ns() at the same moment
    version: str | None = None  # the application's pipeline version

    @property
    def request_id(self) -> str:
        return self.record.request_id


@dataclass(slots=True)
class EmbeddingsSource:
    record: UsageRecord
    texts: list[str]
    attempts: Sequence[Attempt]
    started: float
    now: float
    wall_ns: int

    @property
    def request_id(self) -> str:
        return self.record.request_id


def messages_json(messages: Sequence[Any]) -> list[Any]:
    """Pydantic messages → plain JSON values."""
    return [m.model_dump(mode="json", exclude_none=True) if hasattr(m, "model_dump") else m for m in messages]


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


def answer_of(response: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The final answer: each choice's message (content and tool calls)."""
    if not response or not response.get("choices"):
        return None
    return [c.get("message") or {} for c in response["choices"]]


def masked_content(ctx: RequestContext) -> tuple[Any, Any]:
    """What a ``pii`` step left: the prompt as it masked it (what the provider saw) and the answer before
    unmasking; (None, None) for a request no pii step scanned. The keys are the pii step's."""
    if not ctx.state.get("pii.scanned"):
        return None, None
    masked = ctx.state.get("pii.masked_response")
    if masked is None and not ctx.state.get("pii.mapping"):
        masked = ctx.response  # nothing was masked, so the answer holds no placeholder to hide
    return messages_json(ctx.request.messages), answer_of(masked)


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
    if t.attributes:  # a branch arm or loop iteration: its condition and value (portico.flow.*)
        attrs.update(t.attributes)
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


def nest_child_spans(
    spans: list[SpanData], children: Sequence[ChildSpan], t0: float, contents: Sequence[dict[str, Any]] | None
) -> None:
    """Add the spans steps recorded inside themselves (an agent's model and tool calls) under their step's span;
    the upstream attempts made during a child model call move under it. ``contents``: each child's content
    attributes as stored (redacted or not), aligned with ``children``; None when content is not stored."""
    ids = _Ids()
    ids.n = len(spans)
    by_step = {s.name: s for s in spans[1:] if "portico.step" in s.attributes}
    attempts = [s for s in spans[1:] if "portico.step" not in s.attributes]
    order = sorted(range(len(children)), key=lambda i: children[i].started)
    for i in order:
        c = children[i]
        parent = by_step.get(c.step)
        if parent is None:
            continue
        attrs = dict(c.attributes)
        if c.error:
            attrs["error.type"] = c.error
        if contents is not None:
            attrs.update((k, v) for k, v in contents[i].items() if v is not None)
        child = SpanData(ids.next(), parent.span_id, c.name, (c.started - t0) * 1000, c.duration * 1000,
                         "error" if c.error else "ok", attrs)  # fmt: skip
        if "gen_ai.operation.name" in attrs:  # a model call: its attempts are its children
            end = child.start_ms + child.duration_ms
            for s in attempts:
                if s.parent_id == parent.span_id and child.start_ms <= s.start_ms <= end:
                    s.parent_id = child.span_id
        spans.append(child)


def chat_trace(src: ChatSource, content: str, redact: Redactor | None = None) -> TraceData:
    """``content``: full (the prompt and answer as stored today: masked ones when a pii step ran), redacted (the
    pii step's masked text, or — for a request no pii step scanned — prompt, answer, the steps' notes and the
    child spans' content (an agent's tool arguments and results) through ``redact``), none."""
    ctx, rec, now = src.ctx, src.record, src.now
    notes: dict[str, dict[str, Any]] | None = ctx.state.get("trace.notes")
    children: list[ChildSpan] = list(ctx.state.get(CHILD_SPANS) or ())  # a snapshot: read once, in this thread
    child_contents: list[dict[str, Any]] | None = None  # stored content of each child span, None: not stored
    trace = TraceData(rec, src.wall_ns - int((now - ctx.started) * 1e9), [])
    if content == "full":
        trace.input = messages_json(ctx.request.messages)
        # A stream's text is not kept by the gateway: stored only when the answer was a whole response.
        # With PII masking on, the answer as the provider wrote it (placeholders), never the unmasked one.
        trace.output = answer_of(ctx.state.get("pii.masked_response") or ctx.response)
        child_contents = [c.content for c in children]
    elif content == "redacted":
        # With a pii step the child spans' content is not stored: tool results hold text the step never scanned.
        if ctx.state.get("pii.scanned"):
            trace.input, trace.output = masked_content(ctx)
        elif redact is not None:
            trace.input, trace.output, notes, child_contents = redact(
                [messages_json(ctx.request.messages), answer_of(ctx.response), notes, [c.content for c in children]]
            )
    response_model = (ctx.response or {}).get("model") or (ctx.attempts[-1].model if ctx.attempts else None)
    attrs = root_attributes("chat", rec, ctx.model, response_model, _finish_reasons(ctx.response))
    if src.version is not None:
        attrs["portico.application.version"] = src.version
    trace.spans = build_spans(f"chat {ctx.model}", attrs, rec.status >= 400, ctx.timings, ctx.attempts, "chat",
                              ctx.started, now, notes)  # fmt: skip
    if children:
        nest_child_spans(trace.spans, children, ctx.started, child_contents)
    return trace


def embeddings_trace(src: EmbeddingsSource, content: str, redact: Redactor | None = None) -> TraceData:
    rec, now = src.record, src.now
    model = rec.model or ""
    response_model = src.attempts[-1].model if src.attempts else None
    attrs = root_attributes("embeddings", rec, model, response_model, None)
    spans = build_spans(f"embeddings {model}", attrs, rec.status >= 400, [], src.attempts, "embeddings",
                        src.started, now)  # fmt: skip
    trace = TraceData(rec, src.wall_ns - int((now - src.started) * 1e9), spans)
    # Vectors are never stored: they are large and not readable.
    if content == "full":
        trace.input = list(src.texts)
    elif content == "redacted" and redact is not None:
        (trace.input,) = redact([list(src.texts)])
    return trace
