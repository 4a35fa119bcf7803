"""The composition root: builds the gateway and every pipeline from the validated config, once at start-up."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from portico.actions import Toolbox, ToolKinds
from portico.actions.agent import agent_step
from portico.actions.approvals import ApprovalQueue, ApprovalStore
from portico.actions.builtin import ToolRunner
from portico.actions.kinds import lazy_kind
from portico.actions.kinds.http import http_kind
from portico.actions.kinds.knowledge import knowledge_kind
from portico.actions.kinds.sql import sql_kind
from portico.cache.factory import cache_step, make_store
from portico.cache.prompt_cache import prompt_cache_step
from portico.cache.results import ResultCache
from portico.cache.semantic_step import semantic_cache_step
from portico.config.schema import ApplicationConfig, PorticoConfig
from portico.context.condense import CondenseStep
from portico.context.pack import PackStep
from portico.context.retrieve import RetrieveStep
from portico.context.rewrite import RewriteStep
from portico.context.sql.step import SqlStep
from portico.context.system_prompt import SystemPromptStep
from portico.evaluation.experiments import ExperimentService
from portico.evaluation.feedback import FeedbackService
from portico.flow.build import build_application
from portico.flow.feedback import FeedbackStep
from portico.gateway import Gateway, GenerateStep
from portico.gateway.control import ControlPlane
from portico.gateway.costing import PriceBook
from portico.gateway.embedder import QueryEmbedder
from portico.gateway.keys import KeyStore
from portico.gateway.state import make_state
from portico.guardrails.handoffs import handoff_step
from portico.guardrails.injection.step import injection_step
from portico.guardrails.output import output_checks_step
from portico.guardrails.pii.redact import TraceRedactor
from portico.guardrails.pii.step import pii_step
from portico.guardrails.topics import anomaly_step, topics_step
from portico.observability.metrics import Metrics
from portico.observability.tracing import Tracer
from portico.pipeline import Pipeline, Step
from portico.pipeline.registry import StepRegistry
from portico.protocol.errors import InvalidRequest, ModelNotFound
from portico.routing.context_length import RouteContextStep
from portico.routing.intent import RouteIntentStep
from portico.routing.step import RoutePreferenceStep
from portico.storage.db import Database
from portico.storage.responses import ResponseStore
from portico.storage.retention import Purger, RetentionPolicy
from portico.storage.usage import UsageWriter


def default_registry() -> StepRegistry:
    reg = StepRegistry()
    reg.register("system_prompt", SystemPromptStep, phase="before")
    reg.register("rewrite", RewriteStep, phase="before")
    reg.register("retrieve", RetrieveStep, phase="before")
    reg.register("pack", PackStep, phase="before")
    reg.register("route_preference", RoutePreferenceStep, phase="before")
    reg.register("route_intent", RouteIntentStep, phase="before")
    reg.register("route_context", RouteContextStep, phase="before")
    reg.register("cache", cache_step, phase="before")
    reg.register("semantic_cache", semantic_cache_step, phase="before")
    reg.register("prompt_cache", prompt_cache_step, phase="before")
    reg.register("pii", pii_step, phase="before")
    reg.register("injection", injection_step, phase="before")
    reg.register("handoff", handoff_step, phase="before")
    reg.register("topics", topics_step, phase="before")
    reg.register("anomaly", anomaly_step, phase="before")
    reg.register("output_checks", output_checks_step, phase="after")
    reg.register("feedback", FeedbackStep, phase="after")  # a regenerating loop's note to the model
    reg.register("condense", CondenseStep, phase="before")
    reg.register("sql", SqlStep, phase="before")
    reg.register("agent", agent_step, phase="before")  # answers in place of generate (see _build)
    # Components register their step kinds here, one line each: reg.register(name, factory, phase).
    return reg


def default_tool_kinds() -> ToolKinds:
    kinds = ToolKinds()
    # Tool kinds register here, one line each: kinds.register(kind, factory) with factory(ToolConfig, services).
    kinds.register("http", http_kind)
    kinds.register("knowledge", knowledge_kind)
    kinds.register("sql", sql_kind)
    kinds.register("web_search", lazy_kind("portico.actions.kinds.web_search:web_search_kind"))
    kinds.register("mcp", lazy_kind("portico.actions.kinds.mcp:mcp_kind"))
    return kinds


class Runtime:
    def __init__(self, cfg: PorticoConfig, registry: StepRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or default_registry()
        self.gateway = Gateway(cfg)
        self.embedder = QueryEmbedder(self.gateway, cfg.embedder_model)
        self.db = Database(cfg.storage_url)
        self.state = make_state(cfg.state)
        self.keys = KeyStore(self.db, self.state, shared=cfg.state != "memory")
        self.usage = UsageWriter(
            self.db, batch_size=cfg.storage.usage_batch_size, interval=cfg.storage.usage_flush_seconds,
            max_queue=cfg.storage.usage_max_queue, on_drop=lambda n: self.metrics.usage_dropped.inc(n),
            spool_dir=Path(cfg.state_dir) / "spool" / f"usage-{_digest(self.db.url)}" if cfg.storage.usage_spool
            else None,  # per database: a spool is only ever replayed into the database its rows were meant for
        )  # fmt: skip
        self.control = ControlPlane(cfg, self.keys, self.state, self.usage,
                                    on_state_error=lambda what: self.metrics.state_unavailable.labels(what).inc())
        versions = {a.name: a.version for a in cfg.applications}
        redactor = TraceRedactor() if cfg.tracing.content == "redacted" else None  # the pii step's recognisers
        self.tracing = Tracer.build(
            cfg.tracing,
            self.db.url,
            batch_size=cfg.storage.usage_batch_size,
            interval=cfg.storage.usage_flush_seconds,
            versions=versions,
            redact=redactor.redact if redactor else None,
            close_redactor=redactor.close if redactor else None,
            on_drop=lambda: self.metrics.traces_dropped.inc(),
        )
        self.prices = PriceBook(cfg)
        retention = cfg.responses.retention_days
        self.responses = ResponseStore(self.db, retention * 86400 if retention else None)  # /v1/responses store
        r = cfg.retention  # old traces and usage rows purged in the background (storage.retention)
        policy = RetentionPolicy(r.traces_days, r.usage_days, r.batch_size, interval_seconds=r.interval_seconds)
        self.purger = Purger(self.db, policy)
        self.metrics = Metrics(
            [m.name for m in cfg.models] + [a.name for a in cfg.applications],
            [d.label for m in cfg.models for d in m.deployments],
            lambda: {k.name for k in self.keys.all()},
            versions,
        )
        self.feedback = FeedbackService.build(cfg, self.db, self.metrics)  # feedback metrics (evaluation/)
        self._closers: list[Any] = []  # async callables releasing step resources, run at close()
        self._results_store: Any = None  # made on first use of result_cache()
        # Before the pipelines: agent steps check the tool names they list against it.
        self.tools = Toolbox.build(cfg.tools, default_tool_kinds(), self)
        policies = {t.name: t.approval for t in cfg.tools}
        self.approvals = ApprovalQueue(ApprovalStore(self.db), self.tools, policies, keys=self.keys)
        self.tools.gate = self.approvals  # no write tool runs without a recorded approval
        # Plain model names share the minimal pipeline: generate, wrapped by the exact cache when it is on.
        stages: list[Step] = [GenerateStep(self.gateway)]
        if cfg.cache.enabled:
            lookup = self._step("cache", {"use": "cache"})[1]
            stages = [lookup, *stages, *([lookup.closer] if lookup.closer else [])]
        self.minimal = Pipeline("minimal", stages)
        self.applications: dict[str, Pipeline] = {a.name: self._build(a) for a in cfg.applications}
        self.experiments = ExperimentService.build(cfg, self.applications, self.db)  # traffic splits (evaluation/)
        self.tool_runner = ToolRunner(self)  # answers requests that bring server-side tools (Responses built-ins)
        self.started_at = 0

    def _build(self, app: ApplicationConfig) -> Pipeline:
        # Steps, parallel groups, branches, loops and calls of named pipelines (portico.flow.build).
        return build_application(app, self.cfg.pipelines, self._step, self)

    def on_close(self, close: Any) -> None:
        self._closers.append(close)

    def result_cache(self, namespace: str, ttl_seconds: float) -> ResultCache:
        """A cache of intermediate results (retrieval, SQL, tools) on the configured exact-cache backend."""
        if self._results_store is None:
            self._results_store = make_store(self.cfg.cache, self.cfg.state_dir, self.cfg.state)
            self.on_close(self._results_store.close)
        return ResultCache(self._results_store, namespace, ttl_seconds, self.metrics)

    def _step(self, where: str, spec: Any) -> tuple[str, Step]:
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: each step must be a mapping with 'use', not {spec!r}")
        spec = dict(spec)
        name = spec.pop("use", None)
        if not isinstance(name, str):
            raise ValueError(f"{where}: each step needs 'use'")
        try:
            kind = self.registry.get(name)
            return kind.phase, kind.factory(spec, self)
        except Exception as e:
            raise ValueError(f"{where} ({name}): {e}") from None

    def pipeline_for(self, name: str) -> tuple[Pipeline, str | None]:
        """The pipeline a request's ``model`` selects, and the application name if it is one."""
        app = self.applications.get(name)
        if app is not None:
            return app, name
        entry = self.gateway.models.get(name)
        if entry is None:
            raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", param="model")
        if entry.config.type != "chat":
            raise InvalidRequest(
                f"'{name}' is an embedding model; use /v1/embeddings", param="model", code="wrong_model_type"
            )
        return self.minimal, None

    def model_names(self) -> list[tuple[str, str]]:
        """(id, kind) of everything clients can name: models, then applications."""
        out = [(m.name, m.type) for m in self.cfg.models]
        out += [(a.name, "application") for a in self.cfg.applications]
        return out

    async def open(self) -> None:
        """Storage, keys and the usage writer: every request needs them, so the server awaits this."""
        await self.db.create_schema()
        await self.keys.load()
        await self.usage.replay()  # usage rows a killed process left in the spool
        self.usage.start()
        self.tracing.start()
        self.feedback.start()
        self.purger.start()  # retention: old traces and usage rows deleted in small batches (storage.retention)
        await self.tools.start()  # MCP servers connect here; one that is down is reported, not fatal
        self.approvals.start()
        await self.approvals.recover()  # approved actions a crash left unstarted run; lost calls become unknown

    async def start(self) -> None:
        await self.open()
        await self.gateway.start()  # models may load for a while; /readyz reports it

    async def close(self) -> None:
        await self.approvals.close()
        await self.tools.close()
        await self.gateway.close()
        await self.purger.close()
        await self.usage.close()  # every queued usage row is written before the database closes
        await self.tracing.close()  # likewise every queued trace (and its OTLP export)
        await self.feedback.close()
        for close in self._closers:
            await close()
        await self.state.close()
        await self.db.close()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
