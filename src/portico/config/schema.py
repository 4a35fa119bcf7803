"""The validated shape of ``portico.yaml``.

Unknown keys are errors (``extra="forbid"``) so a typo such as ``base_ulr`` fails at start-up with its path
instead of silently falling back to a default. Secrets are ``SecretStr`` so they never show in reprs or logs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from portico.config.evaluation import Experiments, Metrics
from portico.config.responses import ResponsesConfig
from portico.config.retention import RetentionConfig
from portico.config.sql import SqlSourceConfig, check_unique
from portico.config.tools import ToolConfig

_STRICT = ConfigDict(extra="forbid")


class Price(BaseModel):
    """USD per one million tokens."""

    model_config = _STRICT
    input: float = Field(default=0.0, ge=0)
    output: float = Field(default=0.0, ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    # Writing a prompt-cache entry (Anthropic charges 1.25x input for the tokens it stores); None: input price.
    cache_write: float | None = Field(default=None, ge=0)


class Timeouts(BaseModel):
    model_config = _STRICT
    connect: float = Field(default=10.0, gt=0)
    # Time to the response headers (and, for streams, the first event).
    first_byte: float = Field(default=120.0, gt=0)
    total: float = Field(default=600.0, gt=0)


class _Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str | None = None  # upstream model id; defaults to the public model name
    price: Price | None = None
    context_window: int | None = Field(default=None, ge=1)
    weight: float = Field(default=1.0, gt=0)
    name: str | None = None  # shown in x-portico-model; defaults to provider/model

    @property
    def label(self) -> str:
        return self.name or f"{self.provider}/{self.model}"  # type: ignore[attr-defined]


class HttpDeployment(_Deployment):
    base_url: str
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)


class OpenAIDeployment(HttpDeployment):
    """Any OpenAI-compatible API: OpenAI, vLLM, Ollama, llama.cpp server, Groq, Together, Mistral, …"""

    provider: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None


class AzureDeployment(HttpDeployment):
    """Azure OpenAI: ``{base_url}/openai/deployments/{deployment}/…?api-version=…`` with an ``api-key`` header."""

    provider: Literal["azure"]
    deployment: str | None = None  # defaults to ``model``
    api_version: str = "2024-10-21"


class AnthropicDeployment(HttpDeployment):
    provider: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    # Anthropic requires max_tokens; used when the client sends none.
    default_max_tokens: int = Field(default=4096, ge=1)


class GeminiDeployment(HttpDeployment):
    """Google AI (``/v1beta/models/{model}:generateContent``) or, with ``project``, the Vertex AI path."""

    provider: Literal["gemini", "vertex"]
    base_url: str = "https://generativelanguage.googleapis.com"
    project: str | None = None
    location: str = "us-central1"
    api_version: str = "v1beta"

    @model_validator(mode="after")
    def _vertex(self) -> GeminiDeployment:
        if self.provider == "vertex":
            if not self.project:
                raise ValueError("provider 'vertex' needs 'project'")
            if "base_url" not in self.model_fields_set:
                # Vertex lives on the regional aiplatform host, not Google AI's.
                host = "aiplatform" if self.location == "global" else f"{self.location}-aiplatform"
                self.base_url = f"https://{host}.googleapis.com"
        return self


class BedrockDeployment(HttpDeployment):
    """AWS Bedrock's Converse API, signed with SigV4. Credentials: the explicit ``aws_*`` fields, else the usual AWS
    chain (environment, ``~/.aws/config`` and credentials with ``aws_profile``, SSO, instance/container roles).
    ``api_key`` instead sends a Bedrock API key as a bearer token (no signing)."""

    provider: Literal["bedrock"]
    region: str = Field(min_length=1)
    base_url: str = ""  # default: https://bedrock-runtime.{region}.amazonaws.com (set it for a proxy or a test)
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_profile: str | None = None

    @model_validator(mode="after")
    def _endpoint(self) -> BedrockDeployment:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("set both aws_access_key_id and aws_secret_access_key, or neither")
        if self.aws_profile and self.aws_access_key_id:
            raise ValueError("use aws_profile or explicit aws_* keys, not both")
        if not self.base_url:
            self.base_url = f"https://bedrock-runtime.{self.region}.amazonaws.com"
        return self


class LocalDeployment(_Deployment):
    """In-process model: a GGUF through llama.cpp (chat) or a sentence-transformers folder (embeddings)."""

    provider: Literal["local"]
    path: str | None = None  # default: the packaged SmolLM2-135M-Instruct / all-MiniLM-L6-v2
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    chat_format: str | None = None  # llama.cpp chat handler; default: the GGUF's own template
    # Embedding models, for ingesting documents: bfloat16 (torch) runs ~2-3x faster than float32 on CPUs with
    # AMX/AVX512-BF16 (cosine to float32 ≥ 0.996) and slower on others; int8 (ONNX Runtime, per-channel weights)
    # ~2-3x on CPUs with VNNI (cosine ~0.995). Keep float32 for the query embedder the cache verifier was fitted on.
    precision: Literal["float32", "bfloat16", "int8"] = "float32"
    # float32 embedding models run through ONNX Runtime (same vectors, ~20% less CPU per query than torch); the
    # export is checked against torch at load and falls back to torch when it differs or the model is unusual.
    runtime: Literal["onnx", "torch"] = "onnx"
    batch_size: int = Field(default=32, ge=1)  # embedding texts per forward pass (length-sorted)


Deployment = Annotated[
    OpenAIDeployment | AzureDeployment | AnthropicDeployment | GeminiDeployment | BedrockDeployment | LocalDeployment,
    Field(discriminator="provider"),
]


class RoutingConfig(BaseModel):
    """How a model orders its deployments for each request (its fallbacks keep their own routing)."""

    model_config = _STRICT
    strategy: Literal["ordered", "weighted", "least_inflight", "lowest_latency"] = "weighted"


class RetryConfig(BaseModel):
    """Retries of the same deployment on retryable failures, before moving to the next one."""

    model_config = _STRICT
    max: int = Field(default=2, ge=0)
    backoff: float = Field(default=0.25, ge=0)  # seconds; doubles per retry, full jitter
    backoff_max: float = Field(default=8.0, ge=0)  # cap on any wait, Retry-After included


class BreakerConfig(BaseModel):
    """Per deployment: open after ``failures`` consecutive failures; one probe after ``cooldown`` seconds."""

    model_config = _STRICT
    failures: int = Field(default=5, ge=1)
    cooldown: float = Field(default=30.0, gt=0)


class ModelConfig(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    type: Literal["chat", "embedding"] = "chat"
    deployments: list[Deployment] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    circuit_breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @model_validator(mode="after")
    def _fill_names(self) -> ModelConfig:
        for d in self.deployments:
            if d.model is None:
                d.model = _local_model_id(d, self.type) if isinstance(d, LocalDeployment) else self.name
            if self.type == "embedding" and d.provider in ("anthropic", "bedrock"):
                raise ValueError(f"provider '{d.provider}' has no embeddings API")
        return self


def _local_model_id(d: LocalDeployment, kind: str) -> str:
    if d.path:
        return d.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")
    return "all-MiniLM-L6-v2" if kind == "embedding" else "SmolLM2-135M-Instruct"


class StepConfig(BaseModel):
    """One pipeline step of an application: ``use`` names a registered step kind, the rest are its options; or a
    construct (``branch``, ``loop``, ``call``; see portico.flow.build, which validates them)."""

    model_config = ConfigDict(extra="allow")
    use: str | None = None

    @model_validator(mode="after")
    def _kind(self) -> StepConfig:
        if self.use is None and not {"branch", "loop", "call"} & set(self.model_extra or {}):
            raise ValueError("each step needs 'use' (or is a branch, loop or call)")
        return self


class ApplicationConfig(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    model: str  # the model the application's generate step calls
    # Bump when the steps or prompts change: metrics and traces carry it, so a regression points at a version.
    version: str = Field(default="1", min_length=1, max_length=40)
    steps: list[StepConfig] = Field(default_factory=list)


class ServerConfig(BaseModel):
    model_config = _STRICT
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    # Upper bound on request bodies; larger ones get 413 before any parsing.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Slow clients (server/http_protocol.py): a request's headers must be in this many seconds after the connection
    # opens, and a client that stops reading may stall a response this long; then the connection is closed.
    header_timeout: float = Field(default=15.0, gt=0)
    write_timeout: float = Field(default=60.0, gt=0)
    # SIGTERM: stop accepting, let requests and streams in flight finish for up to this long, then flush writers.
    drain_seconds: float = Field(default=30.0, ge=0)


class AuthConfig(BaseModel):
    model_config = _STRICT
    # Guards /admin and, when set, requires a key on every /v1 request. Also read from PORTICO_MASTER_KEY.
    master_key: SecretStr | None = None


class StorageConfig(BaseModel):
    model_config = _STRICT
    url: str | None = None  # default: sqlite:///<state_dir>/portico.db; or postgresql://user@host/db
    usage_batch_size: int = Field(default=500, ge=1)
    usage_flush_seconds: float = Field(default=0.5, gt=0)
    # Records waiting for the database (it may be down) past which new ones are dropped and counted
    # (portico_usage_dropped_total); and a local spool under state_dir so a killed process loses no usage row.
    usage_max_queue: int = Field(default=100_000, ge=1)
    usage_spool: bool = True


class LoggingConfig(BaseModel):
    model_config = _STRICT
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(default=True, alias="json")


class TracingConfig(BaseModel):
    """Per-request traces, stored in Portico's database and optionally exported over OTLP/HTTP."""

    model_config = _STRICT
    # full: prompts and answers are stored (as a pii step masked them, when the application has one). redacted: they
    # are stored with PII replaced by placeholders — the pii step's masked text, or, for a request no pii step
    # scanned, prompt, answer, tool arguments and step notes through the same recognisers in the trace writer's
    # thread (never on the request path; it starts the spaCy worker process). none: neither is stored.
    content: Literal["full", "redacted", "none"] = "full"
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # errors are always kept
    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318/v1/traces


class CacheConfig(BaseModel):
    """The exact response cache. Plain model names use it as configured here; an application uses it where its
    ``steps`` list ``use: cache`` (options there override these)."""

    model_config = _STRICT
    enabled: bool = True
    backend: Literal["memory", "sqlite", "redis"] = "memory"
    # sqlite: a file path (default <state_dir>/cache.db); redis: a redis:// URL (default: the ``state`` URL).
    url: str | None = None
    policy: Literal["lru", "lfu", "fifo"] = "lru"
    max_entries: int = Field(default=10_000, ge=1)
    ttl_seconds: float = Field(default=3600.0, gt=0)
    # key: an answer is only served to the key that caused it; global: to every caller of the same model.
    scope: Literal["key", "global"] = "key"
    # Sampled requests (temperature > 0 or unset, n > 1) differ on every call: cached only when this is on.
    cache_sampled: bool = False
    # Queries matching these (case-insensitive regexes) are user-specific or time-sensitive: never cached.
    # None: the built-in list (see portico.cache.cacheability).
    skip_patterns: list[str] | None = None
    # What the rules miss, a small classifier catches (portico.cache.cacheability_model): true for the packaged
    # model, a path for one from `portico cache train-cacheability`, false for rules only.
    skip_classifier: bool | str = True
    skip_threshold: float | None = Field(default=None, ge=0, le=1)  # None: the threshold stored with the model


class KnowledgeConfig(BaseModel):
    """Where knowledge bases live: ``embedded`` (SQLite + in-memory BM25/vector indexes under state_dir, no server)
    or ``postgres`` (PostgreSQL full-text + pgvector HNSW; shared by workers and hosts)."""

    model_config = _STRICT
    store: Literal["embedded", "postgres"] = "embedded"
    url: str | None = None  # postgres: postgresql://user@host/db (default: storage.url when it is PostgreSQL)
    # The embedding model for documents when it is not the runtime's embedder, which still embeds the queries: e.g.
    # the same weights at precision int8 for ~3x faster ingestion while queries stay float32. It must embed into the
    # same space (checked on probe texts at the first ingestion).
    document_embedder: str | None = None


class PorticoConfig(BaseModel):
    model_config = _STRICT
    server: ServerConfig = Field(default_factory=ServerConfig)
    state_dir: str = ".portico"
    # Where limits, budgets and revocations live: "memory" (one worker) or a redis:// URL (shared).
    state: str = "memory"
    # When that Redis is unreachable: "open" admits requests without rate limits and budgets (logged and counted in
    # portico_state_unavailable_total); "closed" refuses them with 503 service_unavailable / state_unavailable.
    state_outage: Literal["open", "closed"] = "open"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    models: list[ModelConfig] = Field(min_length=1)
    applications: list[ApplicationConfig] = Field(default_factory=list)
    tools: list[ToolConfig] = Field(default_factory=list)  # what agent steps may call (portico.actions)
    # The embedding model steps use for vectors (cache, router, guardrails, retrieval); default: the first one.
    embedder: str | None = None
    pipelines: dict[str, list[StepConfig]] = Field(default_factory=dict)  # named step lists that steps can ``call``
    metrics: Metrics = Field(default_factory=list)  # feedback metrics (portico.config.evaluation)
    experiments: Experiments = Field(default_factory=list)  # traffic splits between applications (same module)
    sql_sources: list[SqlSourceConfig] = Field(default_factory=list)  # databases for questions over SQL
    retention: RetentionConfig = Field(default_factory=RetentionConfig)  # purge of old traces and usage rows

    @model_validator(mode="after")
    def _cross_refs(self) -> PorticoConfig:
        check_unique(self.sql_sources)
        names: dict[str, str] = {}
        for i, m in enumerate(self.models):
            if m.name in names:
                raise ValueError(f"models[{i}].name: '{m.name}' is defined twice")
            names[m.name] = m.type
        for i, m in enumerate(self.models):
            for j, fb in enumerate(m.fallbacks):
                if fb not in names:
                    raise ValueError(f"models[{i}].fallbacks[{j}]: unknown model '{fb}'")
                if names[fb] != m.type:
                    raise ValueError(
                        f"models[{i}].fallbacks[{j}]: '{fb}' is an {names[fb]} model, not {m.type}"
                        if names[fb] == "embedding"
                        else f"models[{i}].fallbacks[{j}]: '{fb}' is a {names[fb]} model, not {m.type}"
                    )
                if fb == m.name:
                    raise ValueError(f"models[{i}].fallbacks[{j}]: a model cannot fall back to itself")
        for i, a in enumerate(self.applications):
            if names.get(a.name) == "application":
                raise ValueError(f"applications[{i}].name: application '{a.name}' is defined twice")
            if a.name in names:
                raise ValueError(f"applications[{i}].name: '{a.name}' is already a model name")
            if a.model not in names:
                raise ValueError(f"applications[{i}].model: unknown model '{a.model}'")
            if names[a.model] != "chat":
                raise ValueError(f"applications[{i}].model: '{a.model}' is not a chat model")
            names[a.name] = "application"
        tool_names: set[str] = set()
        for i, t in enumerate(self.tools):
            if t.name in tool_names:
                raise ValueError(f"tools[{i}].name: tool '{t.name}' is defined twice")
            tool_names.add(t.name)
        if self.embedder is not None and names.get(self.embedder) != "embedding":
            raise ValueError(f"embedder: '{self.embedder}' is not an embedding model")
        doc = self.knowledge.document_embedder
        if doc is not None and names.get(doc) != "embedding":
            raise ValueError(f"knowledge.document_embedder: '{doc}' is not an embedding model")
        return self

    @field_validator("state")
    @classmethod
    def _state_url(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("state must be 'memory' or a redis:// URL")
        return v

    @property
    def embedder_model(self) -> str | None:
        if self.embedder is not None:
            return self.embedder
        return next((m.name for m in self.models if m.type == "embedding"), None)

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.state_dir}/portico.db"

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def public_view(cfg: PorticoConfig) -> dict[str, Any]:
    """The config without secrets, for ``portico models`` and admin views."""
    # Tools are left out whole: their kind-specific fields (headers, tokens) may hold interpolated secrets;
    # /admin/tools shows each tool's safe view.
    return cfg.model_dump(
        mode="json",
        exclude={"auth": True, "tools": True, "models": {"__all__": {"deployments": {"__all__": {"api_key"}}}}},
    )
