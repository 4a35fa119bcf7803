"""The gateway: model names → deployments → backends, with retries, circuit breakers and ordered fallback.

Policies (which deployment, what to try next) live here and in ``attempts``/``balancer``/``breaker``/``retry``;
providers only translate. For each request the plan is this model's deployments in its routing order, then each
fallback model's in theirs; ``run_plan`` walks it. A stream retries and falls back only before its first chunk:
the first chunk is pulled here, so an upstream that fails early is replaced and a client never sees a half answer
from two models. Deployments behind an open circuit breaker are skipped; when every one in the plan is, the request
fails fast with 503 ``all_deployments_unavailable`` rather than waiting on upstreams known to be down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from portico.config.schema import HttpDeployment, LocalDeployment, ModelConfig, PorticoConfig
from portico.gateway.attempts import DeploymentHandle, Lease, run_plan
from portico.gateway.backends import HttpBackend
from portico.gateway.balancer import Balancer
from portico.gateway.breaker import CircuitBreaker
from portico.gateway.providers import http_provider
from portico.gateway.retry import RetryPolicy
from portico.gateway.transport import HttpTransport
from portico.pipeline.context import Attempt, RequestContext
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest, ModelNotFound, UpstreamError

log = logging.getLogger("portico.gateway")

__all__ = ["DeploymentHandle", "Gateway", "ModelEntry"]


@dataclass(slots=True)
class ModelEntry:
    config: ModelConfig
    handles: list[DeploymentHandle]
    balancer: Balancer
    fallbacks: list[str] = field(default_factory=list)


def _build_backend(m: ModelConfig, dep: Any, transport: HttpTransport) -> Any:
    if isinstance(dep, LocalDeployment):
        from portico.gateway.providers.local import LlamaChatBackend, SentenceEmbeddingBackend

        return SentenceEmbeddingBackend(dep) if m.type == "embedding" else LlamaChatBackend(dep)
    return HttpBackend(dep, http_provider(dep.provider), transport)


def _build_entry(m: ModelConfig, transport: HttpTransport, rng: random.Random) -> ModelEntry:
    """A model's deployments, each with its own breaker; one retry policy and balancer per model."""
    retry = RetryPolicy(m.retries, rng)
    cb = m.circuit_breaker
    handles = [
        DeploymentHandle(
            m.name,
            _build_backend(m, d, transport),
            d.weight,
            breaker=CircuitBreaker(cb.failures, cb.cooldown),
            retry=retry,
        )
        for d in m.deployments
    ]
    return ModelEntry(m, handles, Balancer(m.routing.strategy, rng), list(m.fallbacks))


class Gateway:
    def __init__(
        self, cfg: PorticoConfig, transport: HttpTransport | None = None, rng: random.Random | None = None
    ) -> None:
        self.transport = transport or HttpTransport()
        self._rng = rng or random.Random()  # shared by balancers and retry jitter; injectable for tests
        self.models: dict[str, ModelEntry] = {m.name: _build_entry(m, self.transport, self._rng) for m in cfg.models}
        self._base_urls = [d.base_url for m in cfg.models for d in m.deployments if isinstance(d, HttpDeployment)]

    # ---- lifecycle -------------------------------------------------------------------------------------

    def backends(self) -> list[Any]:
        return [h.backend for e in self.models.values() for h in e.handles]

    async def start(self) -> None:
        """Open HTTP pools and load local models (concurrently; a failed load is reported by readiness)."""
        self.transport.open(self._base_urls)
        results = await asyncio.gather(*(b.start() for b in self.backends()), return_exceptions=True)
        for b, r in zip(self.backends(), results, strict=True):
            if isinstance(r, BaseException):
                b.error = b.error or f"{type(r).__name__}: {r}"
                log.error("backend failed to start", extra={"deployment": b.label, "error": b.error})

    async def close(self) -> None:
        for b in self.backends():
            await b.close()
        await self.transport.close()

    def readiness(self) -> dict[str, str]:
        """``{"model/deployment": "ready" | "loading" | "failed: …"}``."""
        status = {}
        for name, e in self.models.items():
            for h in e.handles:
                b = h.backend
                status[f"{name}/{h.label}"] = "ready" if b.ready else ("failed: " + b.error if b.error else "loading")
        return status

    def inflight(self) -> dict[str, int]:
        return {f"{name}/{h.label}": h.inflight for name, e in self.models.items() for h in e.handles}

    def breakers(self) -> dict[str, str]:
        """``{"model/deployment": "closed" | "open" | "half_open"}``."""
        return {f"{name}/{h.label}": h.breaker.state for name, e in self.models.items() for h in e.handles}

    # ---- routing ---------------------------------------------------------------------------------------

    def resolve(self, name: str, kind: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", param="model")
        if entry.config.type != kind:
            use = "/v1/embeddings" if entry.config.type == "embedding" else "/v1/chat/completions"
            raise InvalidRequest(
                f"'{name}' is {'an' if entry.config.type == 'embedding' else 'a'} {entry.config.type} model; use {use}",
                param="model",
                code="wrong_model_type",
            )
        return entry

    def plan(self, entry: ModelEntry) -> list[DeploymentHandle]:
        """Deployments to try in order: this model's (its routing strategy), then each fallback model's (theirs).

        Open breakers are not filtered here: ``run_plan`` asks each breaker at the moment it would call."""
        order = entry.balancer.order(entry.handles)
        for fb in entry.fallbacks:
            fallback = self.models[fb]
            order += fallback.balancer.order(fallback.handles)
        return order

    # ---- calls -----------------------------------------------------------------------------------------

    async def chat(self, ctx: RequestContext, model: str) -> None:
        entry = self.resolve(model, "chat")
        response, lease = await run_plan(model, self.plan(entry), ctx.attempts, lambda h: h.backend.chat(ctx.request))
        lease.succeeded()
        ctx.response = response
        ctx.deployment = lease.handle.label
        ctx.usage = response.get("usage")

    async def chat_stream(self, ctx: RequestContext, model: str) -> None:
        entry = self.resolve(model, "chat")

        async def first_chunk(h: DeploymentHandle) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            chunks = h.backend.stream(ctx.request)
            try:
                return await anext(chunks), chunks
            except StopAsyncIteration:
                await chunks.aclose()
                raise UpstreamError(f"{h.label}: upstream stream ended without any data", status=502) from None
            except BaseException:
                await chunks.aclose()
                raise

        (first, chunks), lease = await run_plan(model, self.plan(entry), ctx.attempts, first_chunk)
        # The lease stays open until the stream ends: a stream that breaks mid-way counts against its deployment.
        ctx.deployment = lease.handle.label
        ctx.stream = _tracked(ctx, lease, first, chunks)
        # A stream dropped without ever being iterated (a later step failed, the client left first) never runs its
        # ``finally``: release its in-flight slot and breaker permit when it is collected.
        weakref.finalize(ctx.stream, lease.abandoned)

    async def embeddings(
        self, req: EmbeddingRequest, attempts: list[Attempt] | None = None
    ) -> tuple[dict[str, Any], str]:
        """Embeddings under the same policy as chat; pass ``attempts`` to see every try."""
        entry = self.resolve(req.model, "embedding")
        tries = attempts if attempts is not None else []
        out, lease = await run_plan(req.model, self.plan(entry), tries, lambda h: h.backend.embed(req))
        lease.succeeded()
        return out, lease.handle.label


async def _tracked(
    ctx: RequestContext, lease: Lease, first: dict[str, Any], chunks: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """Re-attach the pre-read first chunk; record usage; close the lease (attempt, in-flight, breaker) at the end."""
    try:
        if first.get("usage"):
            ctx.usage = first["usage"]
        yield first
        async for chunk in chunks:
            if chunk.get("usage"):
                ctx.usage = chunk["usage"]
            yield chunk
    except BaseException as e:  # an upstream failure mid-stream, the client going away (cancelled), or a bug
        lease.failed(e)
        raise
    else:
        lease.succeeded()
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
