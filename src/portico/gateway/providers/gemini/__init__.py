"""Google Gemini: the Google AI API (``/v1beta/models/{model}:generateContent``, key in ``?key=``) and
Vertex AI (``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent``, OAuth bearer
token). Both speak the same body format; only URLs, auth and the embeddings endpoint differ."""

from __future__ import annotations

from typing import Any

from portico.config.schema import GeminiDeployment, HttpDeployment, secret
from portico.gateway.providers.base import UpstreamRequest, error_text
from portico.gateway.providers.gemini.stream import GeminiStream
from portico.gateway.providers.gemini.translate import (
    chat_body,
    chat_completion,
    embed_body,
    embeddings,
    vertex_embed_body,
)
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest

__all__ = ["GeminiProvider", "GeminiStream"]


def _model(dep: HttpDeployment, fallback: str) -> str:
    # Google names models "models/gemini-…" in some places; the URL template adds that prefix itself.
    return (dep.model or fallback).removeprefix("models/")


def _is_vertex(dep: HttpDeployment) -> bool:
    return isinstance(dep, GeminiDeployment) and dep.provider == "vertex"


class GeminiProvider:
    name = "gemini"
    supports_n = True  # returns n choices from one call
    native_dimensions = True  # Gemini's outputDimensionality

    def _model_url(self, dep: HttpDeployment, model: str) -> str:
        base = dep.base_url.rstrip("/")
        if _is_vertex(dep):
            assert isinstance(dep, GeminiDeployment)
            return f"{base}/v1/projects/{dep.project}/locations/{dep.location}/publishers/google/models/{model}"
        version = dep.api_version if isinstance(dep, GeminiDeployment) else "v1beta"
        return f"{base}/{version}/models/{model}"

    def _headers(self, dep: HttpDeployment) -> dict[str, str]:
        h = {"content-type": "application/json"}
        key = secret(dep.api_key)
        if key and _is_vertex(dep):
            h["authorization"] = f"Bearer {key}"  # an OAuth access token, not an API key
        h.update(dep.headers)
        return h

    def _params(self, dep: HttpDeployment) -> dict[str, str]:
        # Google AI takes the API key as ``?key=`` (its documented REST form, accepted by every Gemini-format
        # server we test against); Vertex uses the bearer token header instead.
        key = secret(dep.api_key)
        return {"key": key} if key and not _is_vertex(dep) else {}

    def chat_request(self, req: ChatCompletionRequest, dep: HttpDeployment, *, stream: bool) -> UpstreamRequest:
        model = _model(dep, req.model)
        url = self._model_url(dep, model)
        body = chat_body(req, model)
        if stream:
            params = {"alt": "sse", **self._params(dep)}
            return UpstreamRequest(url + ":streamGenerateContent", self._headers(dep), body, params)
        return UpstreamRequest(url + ":generateContent", self._headers(dep), body, self._params(dep))

    def chat_response(self, data: dict[str, Any], req: ChatCompletionRequest, dep: HttpDeployment) -> dict[str, Any]:
        return chat_completion(data, _model(dep, req.model))

    def stream_translator(self, req: ChatCompletionRequest, dep: HttpDeployment) -> GeminiStream:
        return GeminiStream(_model(dep, req.model))

    def error_message(self, status: int, body: bytes) -> str:
        return error_text(body)

    def embeddings_request(self, req: EmbeddingRequest, dep: HttpDeployment) -> UpstreamRequest:
        model = _model(dep, req.model)
        url = self._model_url(dep, model)
        if _is_vertex(dep):
            return UpstreamRequest(url + ":predict", self._headers(dep), vertex_embed_body(req))
        return UpstreamRequest(
            url + ":batchEmbedContents", self._headers(dep), embed_body(req, model), self._params(dep)
        )

    def embeddings_response(self, data: dict[str, Any], req: EmbeddingRequest, dep: HttpDeployment) -> dict[str, Any]:
        return embeddings(data, req, dep.model or req.model)
