"""The contract every provider folder implements.

An HTTP provider is *translation only*: it turns an OpenAI-shaped request into the upstream's HTTP request,
and the upstream's JSON / SSE events back into OpenAI-shaped dicts. Connection pooling, timeouts, SSE framing,
retries and fallbacks live in ``gateway/`` and are shared by all providers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from portico.config.schema import HttpDeployment
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest


@dataclass(slots=True)
class UpstreamRequest:
    """What the transport sends: ``POST url`` with ``headers`` and ``body`` serialised as JSON."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    # Extra query parameters (e.g. Azure's api-version, Gemini's alt=sse).
    params: dict[str, str] = field(default_factory=dict)


class StreamTranslator(Protocol):
    """Stateful translator of one upstream stream into ``chat.completion.chunk`` dicts.

    ``feed`` gets each SSE event (its ``event:`` name, or None, and the raw ``data:`` payload) and returns the
    chunks to emit, possibly none. ``finish`` is called once after the upstream closes and returns any final
    chunks (e.g. the usage chunk). Returned chunks carry a ``usage`` key only on the final usage chunk.
    """

    def feed(self, event: str | None, data: bytes) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


class HttpProvider(Protocol):
    """Translation between OpenAI chat/embeddings and one upstream API family."""

    name: str

    def chat_request(self, req: ChatCompletionRequest, dep: HttpDeployment, *, stream: bool) -> UpstreamRequest:
        """Build the upstream request. ``dep.model`` is the upstream model id. Raise ``InvalidRequest`` for
        inputs the upstream cannot express (say which field)."""
        ...

    def chat_response(self, data: dict[str, Any], req: ChatCompletionRequest, dep: HttpDeployment) -> dict[str, Any]:
        """Upstream JSON → an OpenAI ``chat.completion`` dict (id, object, created, model, choices, usage)."""
        ...

    def stream_translator(self, req: ChatCompletionRequest, dep: HttpDeployment) -> StreamTranslator: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The upstream's human-readable reason from an error body (fall back to the raw text)."""
        ...

    def embeddings_request(self, req: EmbeddingRequest, dep: HttpDeployment) -> UpstreamRequest:
        """Raise ``InvalidRequest`` when the provider has no embeddings API."""
        ...

    def embeddings_response(
        self, data: dict[str, Any], req: EmbeddingRequest, dep: HttpDeployment
    ) -> dict[str, Any]: ...

    # Whether one upstream call returns ``n`` choices; otherwise the gateway makes n calls and merges them.
    supports_n: bool
    # Whether the upstream honours ``dimensions`` itself; otherwise the gateway truncates and re-normalises.
    native_dimensions: bool


FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def error_text(body: bytes) -> str:
    """Best-effort reason from an upstream error body: ``error.message``, ``message``, ``error`` or the text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500] or "no response body"
    if isinstance(data, list) and data:  # Gemini sometimes wraps errors in a list
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return body.decode("utf-8", "replace").strip()[:500]
