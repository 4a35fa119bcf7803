"""Response shapes as pydantic models, for the OpenAPI document (``server/openapi``).

The server builds responses as plain dicts (serialised once with orjson, no re-validation on the hot path), so
these models are never instantiated per request: they describe what the dicts hold, and the OpenAPI test checks
every documented example's live response against them. Models allow extra fields (``extra="allow"``): clients
must ignore fields they do not know, and upstreams add fields Portico passes through.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

_OPEN = ConfigDict(extra="allow")


def list_of(item: type[BaseModel]) -> type[BaseModel]:
    """``{"object": "list", "data": [item, …]}``, named ``<Item>List``."""
    return create_model(f"{item.__name__}List", __config__=_OPEN, object=(Literal["list"], ...),
                        data=(list[item], ...))  # type: ignore[valid-type]  # fmt: skip


# ---- errors ---------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = _OPEN
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape; every failure of every route has it (see ``protocol.errors``)."""

    model_config = _OPEN
    error: ErrorDetail


# ---- chat completions -----------------------------------------------------------------------------------


class FunctionCallOut(BaseModel):
    model_config = _OPEN
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    model_config = _OPEN
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    model_config = _OPEN
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(BaseModel):
    model_config = _OPEN
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None


class PromptTokensDetails(BaseModel):
    model_config = _OPEN
    cached_tokens: int | None = None


class Usage(BaseModel):
    model_config = _OPEN
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ChatCompletion(BaseModel):
    model_config = _OPEN
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ToolCallDelta(BaseModel):
    model_config = _OPEN
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, Any] | None = None


class Delta(BaseModel):
    model_config = _OPEN
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    model_config = _OPEN
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a streamed completion; the stream ends with ``data: [DONE]``."""

    model_config = _OPEN
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ---- embeddings and models ------------------------------------------------------------------------------


class Embedding(BaseModel):
    model_config = _OPEN
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32 when asked")


class EmbeddingUsage(BaseModel):
    model_config = _OPEN
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(BaseModel):
    model_config = _OPEN
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    portico_type: Literal["chat", "embedding", "application"]


ModelList = list_of(Model)


# ---- operations -----------------------------------------------------------------------------------------


class Health(BaseModel):
    model_config = _OPEN
    status: Literal["ok"]


class Readiness(BaseModel):
    model_config = _OPEN
    status: Literal["ready", "not_ready"]
    deployments: dict[str, str] = Field(description="deployment → ready | loading | failed: reason")
    inflight: dict[str, int]
    breakers: dict[str, Any]


# ---- admin: keys, usage, stats, traces, handoffs --------------------------------------------------------


class Key(BaseModel):
    model_config = _OPEN
    id: str
    name: str
    prefix: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: Literal["day", "month", "total"] | None
    created_at: float
    revoked_at: float | None
    active: bool
    tools: list[str] | None = Field(default=None, description="tool names/globs it may call; null: read-only tools")


class CreatedKey(Key):
    key: str = Field(description="the secret: shown once, at creation")


KeyList = list_of(Key)


class UsageReport(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    group_by: list[str]
    since: float | None
    until: float | None
    generated_at: float
    data: list[dict[str, Any]] = Field(description="one row per group: requests, tokens, cost_usd, latency, errors")


class Stats(BaseModel):
    model_config = _OPEN
    object: Literal["stats"]
    since: float
    until: float
    bucket_seconds: int
    group_by: str
    totals: dict[str, Any]
    series: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    errors: list[dict[str, Any]]


class TraceList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[dict[str, Any]] = Field(description="stored request traces, newest first")


class Trace(BaseModel):
    model_config = _OPEN
    object: Literal["request.trace"]
    request_id: str


class Handoff(BaseModel):
    model_config = _OPEN
    id: str
    status: Literal["open", "claimed", "resolved"]
    reason: str


HandoffList = list_of(Handoff)


class Approval(BaseModel):
    """A write action waiting for (or past) a human decision."""

    model_config = _OPEN
    object: Literal["approval"]
    id: str
    tool: str
    status: Literal["pending", "approved", "denied", "expired", "executing", "executed", "failed", "unknown"]
    arguments: dict[str, Any]
    created_at: float
    expires_at: float


ApprovalList = list_of(Approval)


class ToolInfo(BaseModel):
    model_config = _OPEN
    name: str
    kind: str
    source: str
    description: str
    write: bool
    timeout: float
    parameters: dict[str, Any]
    settings: dict[str, Any] = Field(description="the tool's safe settings (never headers or tokens)")


class ToolSourceInfo(BaseModel):
    model_config = _OPEN
    name: str
    kind: str
    health: dict[str, Any]
    tools: list[str]


class ToolList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[ToolInfo]
    sources: list[ToolSourceInfo]


# ---- MCP (JSON-RPC 2.0 over streamable HTTP) ------------------------------------------------------------


class JsonRpcRequest(BaseModel):
    """An MCP message: ``initialize``, ``tools/list``, ``tools/call``… (see the MCP specification)."""

    model_config = _OPEN
    jsonrpc: Literal["2.0"]
    method: str
    id: int | str | None = None  # absent on notifications
    params: dict[str, Any] | None = None


class JsonRpcError(BaseModel):
    model_config = _OPEN
    code: int
    message: str
    data: Any = None


class JsonRpcResponse(BaseModel):
    model_config = _OPEN
    jsonrpc: Literal["2.0"]
    id: int | str | None
    result: dict[str, Any] | None = None
    error: JsonRpcError | None = None


# ---- knowledge bases ------------------------------------------------------------------------------------


class KnowledgeBaseCreate(BaseModel):
    """``name`` plus the knowledge base's options (chunking, modes, dimensions…; see the README)."""

    model_config = _OPEN
    name: str = Field(min_length=1)


class KnowledgeBase(BaseModel):
    model_config = _OPEN
    object: Literal["knowledge_base"]
    id: str
    documents: int | None = None
    chunks: int | None = None
    error: str | None = Field(default=None, description="set when the base cannot be used with this config")


KnowledgeBaseList = list_of(KnowledgeBase)


class DocumentIn(BaseModel):
    model_config = _OPEN
    text: str = Field(min_length=1)
    id: str | None = None
    source: str | None = None
    title: str | None = None
    metadata: dict[str, Any] | None = None


class DocumentsIn(BaseModel):
    """A batch (``documents``), or one document's fields at the top level; or a multipart upload (``file``)."""

    model_config = _OPEN
    documents: list[DocumentIn]


class IngestResult(BaseModel):
    model_config = _OPEN
    object: Literal["knowledge_base.document"]
    id: str
    status: Literal["created", "replaced", "unchanged"]
    chunks: int


IngestResultList = list_of(IngestResult)


class Document(BaseModel):
    model_config = _OPEN
    id: str
    source: str
    title: str
    hash: str
    metadata: dict[str, Any]
    chunks: int
    created_at: int
    updated_at: int


class DocumentList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[Document]
    has_more: bool


class DeletedDocument(BaseModel):
    model_config = _OPEN
    object: Literal["knowledge_base.document"]
    id: str
    deleted: Literal[True]


class SearchIn(BaseModel):
    model_config = _OPEN
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=200)
    mode: Literal["bm25", "vector", "hybrid"] = "hybrid"
    fusion: Literal["rrf", "minmax", "zscore", "sequential"] | None = None
    filters: dict[str, Any] | None = None
    recency: dict[str, Any] | None = None


class SearchHit(BaseModel):
    """A chunk with its document's fields, ``score`` and each retriever's ``<name>_score``."""

    model_config = _OPEN
    score: float
    text: str


class SearchResults(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[SearchHit]
    mode: Literal["bm25", "vector", "hybrid"]
