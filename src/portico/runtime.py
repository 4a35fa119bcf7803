"""The composition root: builds the gateway and every pipeline from the validated config, once at start-up."""

from __future__ import annotations

from typing import Any

from portico.cache.factory import cache_step, make_store
from portico.cache.prompt_cache import prompt_cache_step
from portico.cache.results import ResultCache
from portico.cache.semantic_step import semantic_cache_step
from portico.config.schema import ApplicationConfig, PorticoConfig
from portico.context.pack import PackStep
from portico.context.retrieve import RetrieveStep
from portico.context.rewrite import RewriteStep
from portico.context.system_prompt import SystemPromptStep
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
from portico.pipeline import Parallel, Pipeline, Step
from portico.pipeline.registry import StepRegistry
from portico.protocol.errors import InvalidRequest, ModelNotFound
from portico.routing.context_length import RouteContextStep
from portico.routing.intent import RouteIntentStep
from portico.routing.step import RoutePreferenceStep
from portico.storage.db import Database
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
    # Components register their step kinds here, one line each: reg.register(name, factory, phase).
    return reg


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
            self.db, batch_size=cfg.storage.usage_batch_size, interval=cfg.storage.usage_flush_seconds
        )
        self.control = ControlPlane(cfg, self.keys, self.state, self.usage)
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
        self.metrics = Metrics(
            [m.name for m in cfg.models] + [a.name for a in cfg.applications],
            [d.label for m in cfg.models for d in m.deployments],
            lambda: {k.name for k in self.keys.all()},
            versions,
        )
        self._closers: list[Any] = []  # async callables releasing step resources, run at close()
        self._results_store: Any = None  # made on first use of result_cache()
        # Plain model names share the minimal pipeline: generate, wrapped by the exact cache when it is on.
        stages: list[Step] = [GenerateStep(self.gateway)]
        if cfg.cache.enabled:
            lookup = self._step("cache", {"use": "cache"})[1]
            stages = [lookup, *stages, *([lookup.closer] if lookup.closer else [])]
        self.minimal = Pipeline("minimal", stages)
        self.applications: dict[str, Pipeline] = {a.name: self._build(a) for a in cfg.applications}
        self.started_at = 0

    def _build(self, app: ApplicationConfig) -> Pipeline:
        before: list[Step | Parallel] = []
        after: list[Step | Parallel] = []
        for i, sc in enumerate(app.steps):
            options: dict[str, Any] = dict(sc.model_extra or {})
            where = f"applications '{app.name}' steps[{i}]"
            if sc.use == "parallel":
                group = [self._step(where, s) for s in options.get("steps", [])]
                phases = {p for p, _ in group}
                if len(phases) != 1:
                    raise ValueError(f"{where}: a parallel group must hold steps of one phase")
                (before if "before" in phases else after).append(Parallel(*(s for _, s in group)))
                continue
            phase, step = self._step(where, {"use": sc.use, **options})
            (before if phase == "before" else after).append(step)
        closers = [s.closer for st in (*before, *after) for s in (st.steps if isinstance(st, Parallel) else (st,))
                   if s.closer is not None]  # fmt: skip
        return Pipeline(app.name, [*before, GenerateStep(self.gateway, app.model), *after, *closers])

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
        self.usage.start()
        self.tracing.start()

    async def start(self) -> None:
        await self.open()
        await self.gateway.start()  # models may load for a while; /readyz reports it

    async def close(self) -> None:
        await self.gateway.close()
        await self.usage.close()  # every queued usage row is written before the database closes
        await self.tracing.close()  # likewise every queued trace (and its OTLP export)
        for close in self._closers:
            await close()
        await self.state.close()
        await self.db.close()
