from __future__ import annotations

from typing import Any

import orjson

from portico.config.schema import AzureDeployment, HttpDeployment, OpenAIDeployment, secret
from portico.gateway.providers.base import UpstreamRequest, error_text
from portico.protocol.chat import ChatCompletionRequest, completion_chunks
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import UpstreamError


class _PassThroughStream:
    """OpenAI chunks are already our chunks; only ``[DONE]`` and in-band errors need handling."""

    __slots__ = ()

    def feed(self, event: str | None, data: bytes) -> list[dict[str, Any]]:
        if data == b"[DONE]" or not data:
            return []
        chunk = orjson.loads(data)
        if "error" in chunk and "choices" not in chunk:
            err = chunk["error"]
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            raise UpstreamError(f"upstream error mid-stream: {msg}", status=502)
        if chunk.get("object") == "chat.completion":
            # Some OpenAI-compatible servers answer a stream request with one whole completion.
            return completion_chunks(chunk)
        return [chunk]

    def finish(self) -> list[dict[str, Any]]:
        return []


_STREAM = _PassThroughStream()


class OpenAIProvider:
    name = "openai"
    supports_n = True  # returns n choices from one call
    native_dimensions = True

    def _base(self, dep: HttpDeployment) -> str:
        return dep.base_url.rstrip("/")

    def _headers(self, dep: HttpDeployment) -> dict[str, str]:
        h = {"content-type": "application/json"}
        key = secret(dep.api_key)
        if key:
            h["authorization"] = f"Bearer {key}"
        if isinstance(dep, OpenAIDeployment) and dep.organization:
            h["openai-organization"] = dep.organization
        h.update(dep.headers)
        return h

    def _chat_url(self, dep: HttpDeployment) -> str:
        return self._base(dep) + "/chat/completions"

    def _embeddings_url(self, dep: HttpDeployment) -> str:
        return self._base(dep) + "/embeddings"

    def _params(self, dep: HttpDeployment) -> dict[str, str]:
        return {}

    def chat_request(self, req: ChatCompletionRequest, dep: HttpDeployment, *, stream: bool) -> UpstreamRequest:
        body = req.upstream_dict()
        body["model"] = dep.model
        if stream:
            body["stream"] = True
            # Always ask for usage so cost accounting works; the server drops the chunk if the client did not ask.
            opts = dict(body.get("stream_options") or {})
            opts["include_usage"] = True
            body["stream_options"] = opts
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return UpstreamRequest(self._chat_url(dep), self._headers(dep), body, self._params(dep))

    def chat_response(self, data: dict[str, Any], req: ChatCompletionRequest, dep: HttpDeployment) -> dict[str, Any]:
        if not isinstance(data.get("choices"), list):
            raise UpstreamError("upstream answered without 'choices'", status=502)
        data.setdefault("object", "chat.completion")
        return data

    def stream_translator(self, req: ChatCompletionRequest, dep: HttpDeployment) -> _PassThroughStream:
        return _STREAM

    def error_message(self, status: int, body: bytes) -> str:
        return error_text(body)

    def embeddings_request(self, req: EmbeddingRequest, dep: HttpDeployment) -> UpstreamRequest:
        body = req.upstream_dict()
        body["model"] = dep.model
        return UpstreamRequest(self._embeddings_url(dep), self._headers(dep), body, self._params(dep))

    def embeddings_response(self, data: dict[str, Any], req: EmbeddingRequest, dep: HttpDeployment) -> dict[str, Any]:
        if not isinstance(data.get("data"), list):
            raise UpstreamError("upstream answered without 'data'", status=502)
        return data


class AzureOpenAIProvider(OpenAIProvider):
    """Same wire format; the deployment goes in the path, ``api-version`` in the query, the key in ``api-key``."""

    name = "azure"

    def _headers(self, dep: HttpDeployment) -> dict[str, str]:
        h = {"content-type": "application/json"}
        key = secret(dep.api_key)
        if key:
            h["api-key"] = key
        h.update(dep.headers)
        return h

    def _deployment_base(self, dep: HttpDeployment) -> str:
        assert isinstance(dep, AzureDeployment)
        return f"{self._base(dep)}/openai/deployments/{dep.deployment or dep.model}"

    def _chat_url(self, dep: HttpDeployment) -> str:
        return self._deployment_base(dep) + "/chat/completions"

    def _embeddings_url(self, dep: HttpDeployment) -> str:
        return self._deployment_base(dep) + "/embeddings"

    def _params(self, dep: HttpDeployment) -> dict[str, str]:
        assert isinstance(dep, AzureDeployment)
        return {"api-version": dep.api_version}
