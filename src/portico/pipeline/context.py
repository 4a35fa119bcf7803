"""The one object a request's steps share. Steps talk through it, never through each other's modules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from portico.protocol.chat import ChatCompletionRequest

# Fields a pipeline starts with; everything else must be written by an earlier step (checked at build time).
# target_model, query and headers start empty and are optional refinements, so reading them needs no writer.
INITIAL_FIELDS = frozenset(
    {"request", "request_id", "model", "application", "caller", "target_model", "query", "headers"}
)


@dataclass(slots=True)
class Attempt:
    """One call to one deployment (the gateway appends one per try, so retries and fallbacks are visible)."""

    deployment: str
    model: str
    started: float
    duration: float = 0.0
    status: int | None = None  # HTTP-like status; None while running
    error: str | None = None


@dataclass(slots=True)
class StepTiming:
    step: str
    started: float
    duration: float
    error: str | None = None
    # Span attributes of its own (a branch arm's condition and value, a loop iteration); steps use ctx.note.
    attributes: dict[str, Any] | None = None


@dataclass(slots=True)
class ChildSpan:
    """A span a step records for work inside it (an agent's model and tool calls), kept in
    ``ctx.state[CHILD_SPANS]``; the tracer nests it under the step's own span."""

    step: str  # the step whose span is the parent
    name: str
    started: float  # perf_counter
    duration: float
    error: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)  # arguments/results: stored per tracing.content


CHILD_SPANS = "trace.child_spans"
# ctx.state: tools a request brings (the Responses API's built-in tools, made into Tools by the server layer),
# the callable that runs a generation with them through the agent loop (so the generate step needs no import of
# actions/), and what their calls did.
REQUEST_TOOLS = "agent.request_tools"
TOOL_RUNNER = "agent.runner"
# The calls of request tools, in order, as the loop reports them; without streaming also {"said": text}, what the
# model wrote in a turn before its calls (a stream carries that text itself).
TOOL_EVENTS = "agent.tool_events"


@dataclass(slots=True)
class RequestContext:
    request: ChatCompletionRequest
    request_id: str
    model: str  # what the client asked for: a model or an application name
    application: str | None = None
    caller: dict[str, Any] = field(default_factory=dict)  # who is calling (key name, user); filled by auth
    # Outputs: exactly one of response / stream is set once the request is answered.
    response: dict[str, Any] | None = None
    stream: AsyncIterator[dict[str, Any]] | None = None
    deployment: str | None = None  # label of the deployment that answered
    usage: dict[str, Any] | None = None
    answered_by: str | None = None  # step that short-circuited the pipeline, if any
    attempts: list[Attempt] = field(default_factory=list)
    timings: list[StepTiming] = field(default_factory=list)
    # A model chosen by a step (a router) for the generate step; None → the application's or the client's model.
    target_model: str | None = None
    # The standalone query text steps work on (retrieval, cache); None → the last user message (see query_text).
    query: str | None = None
    # Retrieved context: chunks as dicts (id, document_id, text, score, source, ...), written by retrieval.
    documents: list[dict[str, Any]] | None = None
    # Extra response headers from steps (e.g. x-portico-cache).
    headers: dict[str, str] = field(default_factory=dict)
    # Free-form per-step state (e.g. the PII placeholder dictionary); keys are namespaced by step name.
    state: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def query_text(self) -> str:
        """What the user asks: the rewritten query if a step set one, else the last user message's text."""
        if self.query is not None:
            return self.query
        for m in reversed(self.request.messages):
            if m.role == "user":
                return m.text()
        return ""

    def note(self, step: str, **attributes: Any) -> None:
        """Record a step's decision (scores, matched rules, chosen route); it becomes attributes of the step's span
        (``portico.<step>.<name>``). Values must be JSON-able scalars or short lists."""
        self.state.setdefault("trace.notes", {}).setdefault(step, {}).update(attributes)

    @property
    def streaming(self) -> bool:
        return bool(self.request.stream)

    def short_circuit(
        self, step: str, response: dict[str, Any] | None = None, stream: AsyncIterator[dict[str, Any]] | None = None
    ) -> None:
        """Answer now (a cache hit, a blocked prompt): the runner skips every later stage."""
        self.response = response
        self.stream = stream
        self.answered_by = step
