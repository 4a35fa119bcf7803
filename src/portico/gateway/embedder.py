"""One embedding model for the steps that need vectors (cache, router, guardrails, retrieval).

The query embedding is computed once per request and shared: the first step that asks starts it, parallel steps
await the same future. An in-process model is called directly (no JSON, no base64); a remote one goes through
the gateway with its retries and fallbacks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from portico.pipeline.context import RequestContext
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest

_KEY = "embedder.query"


class QueryEmbedder:
    def __init__(self, gateway: Any, model: str | None) -> None:
        self.gateway = gateway
        self.model = model  # None: the config has no embedding model; steps that need one fail at build time

    def for_model(self, model: str) -> QueryEmbedder:
        """The same service over another embedding model (e.g. ``knowledge.document_embedder``)."""
        return QueryEmbedder(self.gateway, model)

    def require(self, who: str) -> str:
        """For step factories: fail at start-up, not per request, when no embedding model is configured."""
        if self.model is None:
            raise ValueError(f"{who} needs an embedding model: add a model with type: embedding")
        return self.model

    def _local(self) -> Any:
        entry = self.gateway.resolve(self.require("embedding"), "embedding")
        backend = entry.handles[0].backend
        return backend if len(entry.handles) == 1 and hasattr(backend, "vectors") else None

    async def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        local = self._local()
        if local is not None:
            return await local.vectors(texts)
        req = EmbeddingRequest(model=self.require("embedding"), input=texts, encoding_format="float")
        out, _ = await self.gateway.embeddings(req)
        arr = np.asarray([d["embedding"] for d in out["data"]], dtype=np.float32)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        return arr / np.maximum(norms, 1e-12)

    async def query(self, ctx: RequestContext) -> np.ndarray:
        """The embedding of ``ctx.query_text()``, computed once per request and text."""
        text = ctx.query_text()
        if not text:
            raise InvalidRequest("the request has no user text to embed", param="messages")
        cached = ctx.state.get(_KEY)
        if cached is None or cached[0] != text:
            fut = asyncio.ensure_future(self._one(text))
            ctx.state[_KEY] = cached = (text, fut)
        return await asyncio.shield(cached[1])

    async def _one(self, text: str) -> np.ndarray:
        return (await self.embed([text]))[0]
