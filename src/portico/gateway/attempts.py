"""Walking a plan of deployments: breaker checks, retries with backoff, moving on, and the bookkeeping of each try.

Contract of :func:`run_plan`: it calls ``call(handle)`` for deployments in plan order — skipping those whose breaker
is open, retrying a deployment while its model's retry policy allows, moving on while the failure is not the
client's own — and returns the first result with the :class:`Lease` of the call that produced it. The caller must
close that lease (``succeeded``/``failed``/``abandoned``) once the answer is complete: at once for a response, at
the end for a stream. Every try is appended to ``attempts``, and every lease closes exactly once, so in-flight
counts and breakers stay right on every path, cancellation included.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from portico.config.schema import RetryConfig
from portico.gateway.balancer import LatencyEwma
from portico.gateway.breaker import CircuitBreaker, Outcome, Permit
from portico.gateway.retry import RetryPolicy, retry_elsewhere
from portico.pipeline.context import Attempt
from portico.protocol.errors import PorticoError, UpstreamError

log = logging.getLogger("portico.gateway")

T = TypeVar("T")


@dataclass(slots=True)
class DeploymentHandle:
    """One deployment of one model with its live state: in-flight calls, breaker, latency, retry policy."""

    model: str  # public model name this deployment serves
    backend: Any  # ChatBackend | EmbeddingBackend
    weight: float = 1.0
    inflight: int = 0
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(5, 30.0))
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(RetryConfig()))
    latency: LatencyEwma = field(default_factory=LatencyEwma)

    @property
    def label(self) -> str:
        return self.backend.label


def outcome_of(e: BaseException) -> Outcome:
    """What a failure says about the deployment's health: a rejected request, a cancellation or a local model
    that is still loading say nothing (opening the breaker would keep it off for a cooldown after it loaded)."""
    if isinstance(e, PorticoError):
        if e.code == "not_ready" or (e.status < 500 and e.status != 429):
            return Outcome.NEUTRAL
        return Outcome.FAILURE
    if isinstance(e, asyncio.CancelledError | GeneratorExit):
        return Outcome.NEUTRAL
    return Outcome.FAILURE


class Lease:
    """One admitted call: holds the deployment's in-flight slot, its breaker permit and its ``Attempt`` record."""

    __slots__ = ("_closed", "attempt", "handle", "permit")

    def __init__(self, h: DeploymentHandle, permit: Permit, attempts: list[Attempt]) -> None:
        self.handle = h
        self.permit = permit
        self.attempt = Attempt(deployment=h.label, model=h.model, started=time.perf_counter())
        self._closed = False
        attempts.append(self.attempt)
        h.inflight += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self.attempt.started

    def succeeded(self) -> None:
        self._close(200, None, Outcome.SUCCESS)

    def failed(self, e: BaseException) -> None:
        if isinstance(e, PorticoError):
            self._close(e.status, e.message, outcome_of(e))
        else:  # cancelled (client went away) or a bug
            status = 499 if isinstance(e, asyncio.CancelledError | GeneratorExit) else 500
            self._close(status, type(e).__name__, outcome_of(e))

    def abandoned(self) -> None:
        """The answer was dropped unfinished (its consumer went away): no verdict on the deployment."""
        self._close(499, "abandoned", Outcome.NEUTRAL)

    def _close(self, status: int, error: str | None, outcome: Outcome) -> None:
        if self._closed:
            return
        self._closed = True
        self.handle.inflight -= 1
        self.attempt.duration = self.elapsed()
        self.attempt.status = status
        self.attempt.error = error
        self.handle.breaker.record(self.permit, outcome, error)


async def run_plan(
    model: str,
    plan: list[DeploymentHandle],
    attempts: list[Attempt],
    call: Callable[[DeploymentHandle], Awaitable[T]],
) -> tuple[T, Lease]:
    last: PorticoError | None = None
    skipped: list[DeploymentHandle] = []
    for h in plan:
        retry = 0
        while (permit := h.breaker.acquire()) is not None:
            lease = Lease(h, permit, attempts)
            try:
                result = await call(h)
            except PorticoError as e:
                lease.failed(e)
                if not retry_elsewhere(e):
                    raise
                last = e
                delay = h.retry.delay(retry, e)
                if delay is None:
                    break
                log.info(
                    "retrying deployment",
                    extra={"deployment": h.label, "status": e.status, "retry": retry + 1, "delay": round(delay, 3)},
                )
                await asyncio.sleep(delay)
                retry += 1
                continue
            except BaseException as e:
                lease.failed(e)
                raise
            h.latency.observe(lease.elapsed())
            return result, lease
        else:
            if retry == 0:
                skipped.append(h)  # its breaker was open before we tried it at all
    if last is not None:
        raise last
    raise all_unavailable(model, skipped)


def all_unavailable(model: str, skipped: list[DeploymentHandle]) -> UpstreamError:
    """Every deployment in the plan is behind an open breaker: fail fast, say which and when to come back."""
    parts = [
        f"{h.model}/{h.label} (next probe in {h.breaker.retry_in():.0f}s; last error: {h.breaker.last_error})"
        for h in skipped
    ]
    wait = min((h.breaker.retry_in() for h in skipped), default=0.0)
    return UpstreamError(
        f"every deployment of '{model}' is unavailable (circuit open): " + "; ".join(parts),
        status=503,
        code="all_deployments_unavailable",
        headers={"retry-after": str(max(1, math.ceil(wait)))},
    )
