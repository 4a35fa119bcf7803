"""A backend answers chat and/or embedding calls for one deployment.

``HttpBackend`` joins a provider's translation to the shared transport; the local engines implement the same
methods in-process. The gateway sees only this interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np

from portico.config.schema import HttpDeployment
from portico.gateway.providers.base import HttpProvider
from portico.gateway.transport import HttpTransport
from portico.protocol.chat import ChatCompletionRequest, usage_dict
from portico.protocol.embeddings import EmbeddingRequest, decode_vector, embedding_response, shrink
from portico.protocol.errors import InvalidRequest


class Backend(Protocol):
    label: str
    ready: bool
    error: str | None

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ChatBackend(Backend, Protocol):
    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any]: ...

    def stream(self, req: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]: ...


class EmbeddingBackend(Backend, Protocol):
    async def embed(self, req: EmbeddingRequest) -> dict[str, Any]: ...


class HttpBackend:
    """Chat and embeddings over HTTP for one deployment of an HTTP provider."""

    ready = True
    error: str | None = None

    def __init__(self, dep: HttpDeployment, provider: HttpProvider, transport: HttpTransport) -> None:
        self.dep = dep
        self.provider = provider
        self.transport = transport
        self.label = dep.label
        self._native_n = provider.supports_n

    async def start(self) -> None:
        # Per-deployment set-up that may block (Bedrock resolves AWS credentials, perhaps over the network from
        # an instance role) runs here, off the event loop; a failure is reported and retried on the first call.
        prepare = getattr(self.provider, "prepare", None)
        if prepare is not None:
            await asyncio.to_thread(prepare, self.dep)

    async def close(self) -> None:
        return None

    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any]:
        n = req.n or 1
        if n > 1 and not self._native_n:
            return await self._fan_out(req, n)
        up = self.provider.chat_request(req, self.dep, stream=False)
        data = await self.transport.post_json(up, self.dep, self.provider)
        return self.provider.chat_response(data, req, self.dep)

    async def _fan_out(self, req: ChatCompletionRequest, n: int) -> dict[str, Any]:
        """``n`` choices from a provider that returns one: n concurrent calls, merged."""
        single = req.model_copy(update={"n": None})
        results = await asyncio.gather(*(self.chat(single) for _ in range(n)))
        out = results[0]
        out["choices"] = [dict(r["choices"][0], index=i) for i, r in enumerate(results)]
        usages = [r.get("usage") or {} for r in results]
        out["usage"] = usage_dict(
            usages[0].get("prompt_tokens", 0) * n, sum(u.get("completion_tokens", 0) for u in usages)
        )
        return out

    async def stream(self, req: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        if (req.n or 1) > 1 and not self._native_n:
            raise InvalidRequest(f"{self.label} cannot stream more than one choice; use n=1 or stream=false", param="n")
        up = self.provider.chat_request(req, self.dep, stream=True)
        translator = self.provider.stream_translator(req, self.dep)
        events = self.transport.stream(up, self.dep, self.provider)
        try:
            async for event, data in events:
                for chunk in translator.feed(event, data):
                    yield chunk
        finally:
            await events.aclose()
        for chunk in translator.finish():
            yield chunk

    async def embed(self, req: EmbeddingRequest) -> dict[str, Any]:
        native = self.provider.native_dimensions
        send = req if native or req.dimensions is None else req.model_copy(update={"dimensions": None})
        if not native and req.encoding_format == "base64":
            send = send.model_copy(update={"encoding_format": "float"})
        up = self.provider.embeddings_request(send, self.dep)
        data = await self.transport.post_json(up, self.dep, self.provider)
        out = self.provider.embeddings_response(data, send, self.dep)
        if native or (req.dimensions is None and req.encoding_format == send.encoding_format):
            return out
        # The upstream cannot shrink vectors: truncate and re-normalise here (Matryoshka-style).
        vectors = np.stack([decode_vector(d["embedding"]) for d in sorted(out["data"], key=lambda d: d["index"])])
        usage = out.get("usage") or {}
        return embedding_response(
            shrink(vectors, req.dimensions),
            model=out.get("model", self.dep.model or ""),
            prompt_tokens=usage.get("prompt_tokens", 0),
            encoding_format=req.encoding_format,
        )
