"""The gateway: model names → deployments → backends, with ordered fallback across deployments and models.

Policies (which deployment, what to try next) live here; providers only translate. A stream falls back only
before its first chunk: the first chunk is pulled here, so an upstream that fails early is replaced and a
client never sees a half answer from two models.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from portico.config.schema import HttpDeployment, LocalDeployment, ModelConfig, PorticoConfig
from portico.gateway.backends import EmbeddingBackend, HttpBackend
from portico.gateway.providers import http_provider
from portico.gateway.transport import HttpTransport
from portico.pipeline.context import Attempt, RequestContext
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest, ModelNotFound, PorticoError, UpstreamError

log = logging.getLogger("portico.gateway")


@dataclass(slots=True)
class DeploymentHandle:
    model: str  # public model name this deployment serves
    backend: Any  # ChatBackend | EmbeddingBackend
    weight: float = 1.0
    inflight: int = 0

    @property
    def label(self) -> str:
        return self.backend.label


@dataclass(slots=True)
class ModelEntry:
    config: ModelConfig
    handles: list[DeploymentHandle]
    fallbacks: list[str] = field(default_factory=list)


def _build_backend(m: ModelConfig, dep: Any, transport: HttpTransport) -> Any:
    if isinstance(dep, LocalDeployment):
        from portico.gateway.providers.local import LlamaChatBackend, SentenceEmbeddingBackend

        return SentenceEmbeddingBackend(dep) if m.type == "embedding" else LlamaChatBackend(dep)
    return HttpBackend(dep, http_provider(dep.provider), transport)


def _retry_elsewhere(e: PorticoError) -> bool:
    """Whether another deployment might succeed: not when the client's request itself was rejected."""
    return (isinstance(e, UpstreamError) and e.status != 400) or e.status == 503


class Gateway:
    def __init__(self, cfg: PorticoConfig, transport: HttpTransport | None = None) -> None:
        self.transport = transport or HttpTransport()
        self.models: dict[str, ModelEntry] = {}
        self._base_urls: list[str] = []
        for m in cfg.models:
            handles = [DeploymentHandle(m.name, _build_backend(m, d, self.transport), d.weight) for d in m.deployments]
            self.models[m.name] = ModelEntry(m, handles, list(m.fallbacks))
            self._base_urls += [d.base_url for d in m.deployments if isinstance(d, HttpDeployment)]

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
        """Deployments to try in order: this model's (weighted-random order), then each fallback model's."""
        order = self._weighted_order(entry.handles)
        for fb in entry.fallbacks:
            order += self._weighted_order(self.models[fb].handles)
        return order

    @staticmethod
    def _weighted_order(handles: list[DeploymentHandle]) -> list[DeploymentHandle]:
        if len(handles) == 1:
            return list(handles)
        pool, out = list(handles), []
        while pool:
            pick = random.choices(pool, weights=[h.weight for h in pool])[0]
            pool.remove(pick)
            out.append(pick)
        return out

    # ---- calls -----------------------------------------------------------------------------------------

    async def chat(self, ctx: RequestContext, model: str) -> None:
        entry = self.resolve(model, "chat")
        last: PorticoError | None = None
        for h in self.plan(entry):
            attempt = _start_attempt(ctx, h)
            h.inflight += 1
            try:
                ctx.response = await h.backend.chat(ctx.request)
            except PorticoError as e:
                _end_attempt(attempt, e.status, e.message)
                last = e
                if not _retry_elsewhere(e):
                    raise
                continue
            finally:
                h.inflight -= 1
            _end_attempt(attempt, 200)
            ctx.deployment = h.label
            ctx.usage = ctx.response.get("usage")
            return
        assert last is not None
        raise last

    async def chat_stream(self, ctx: RequestContext, model: str) -> None:
        entry = self.resolve(model, "chat")
        last: PorticoError | None = None
        for h in self.plan(entry):
            attempt = _start_attempt(ctx, h)
            h.inflight += 1
            chunks = h.backend.stream(ctx.request)
            try:
                first = await anext(chunks)
            except (PorticoError, StopAsyncIteration) as e:
                h.inflight -= 1
                await chunks.aclose()
                if isinstance(e, StopAsyncIteration):
                    e = UpstreamError(f"{h.label}: upstream stream ended without any data", status=502)
                _end_attempt(attempt, e.status, e.message)
                last = e
                if not _retry_elsewhere(e):
                    raise e from None
                continue
            except BaseException:
                h.inflight -= 1
                await chunks.aclose()
                raise
            ctx.deployment = h.label
            ctx.stream = _tracked(ctx, h, attempt, first, chunks)
            return
        assert last is not None
        raise last

    async def embeddings(self, req: EmbeddingRequest) -> tuple[dict[str, Any], str]:
        entry = self.resolve(req.model, "embedding")
        last: PorticoError | None = None
        for h in self.plan(entry):
            h.inflight += 1
            try:
                backend: EmbeddingBackend = h.backend
                return await backend.embed(req), h.label
            except PorticoError as e:
                last = e
                if not _retry_elsewhere(e):
                    raise
            finally:
                h.inflight -= 1
        assert last is not None
        raise last


def _start_attempt(ctx: RequestContext, h: DeploymentHandle) -> Attempt:
    a = Attempt(deployment=h.label, model=h.model, started=time.perf_counter())
    ctx.attempts.append(a)
    return a


def _end_attempt(a: Attempt, status: int, error: str | None = None) -> None:
    a.duration = time.perf_counter() - a.started
    a.status = status
    a.error = error


async def _tracked(
    ctx: RequestContext,
    h: DeploymentHandle,
    attempt: Attempt,
    first: dict[str, Any],
    chunks: AsyncIterator[dict[str, Any]],
) -> AsyncIterator[dict[str, Any]]:
    """Re-attach the pre-read first chunk; record usage, the attempt's end and in-flight count."""
    status, error = 200, None
    try:
        if first.get("usage"):
            ctx.usage = first["usage"]
        yield first
        async for chunk in chunks:
            if chunk.get("usage"):
                ctx.usage = chunk["usage"]
            yield chunk
    except PorticoError as e:
        status, error = e.status, e.message
        raise
    except BaseException as e:  # client went away (cancelled) or a bug: record it, then let it propagate
        status, error = 499, type(e).__name__
        raise
    finally:
        h.inflight -= 1
        _end_attempt(attempt, status, error)
        await chunks.aclose()  # type: ignore[attr-defined]
