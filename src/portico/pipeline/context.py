"""The one object a request's steps share. Steps talk through it, never through each other's modules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from portico.protocol.chat import ChatCompletionRequest

# Fields a pipeline starts with; everything else must be written by an earlier step (checked at build time).
INITIAL_FIELDS = frozenset({"request", "request_id", "model", "application", "caller"})


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
    # Free-form per-step state (e.g. the PII placeholder dictionary); keys are namespaced by step name.
    state: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

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
