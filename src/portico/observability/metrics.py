"""Prometheus metrics at ``GET /metrics``: one registry per app (no module globals), bounded label values.

Label values come only from the config (models, applications, deployments) and the key store (key names);
anything else — a model name a client invented, say — is reported as ``other``, so a client cannot blow up the
number of series. Components add their own counters through ``counter(...)``.

With several workers (``serve --workers N``) the values live in prometheus-client's multiprocess files, so one
scrape of any worker reports all of them (counters and histograms summed over workers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from portico.storage.usage import UsageRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_TIME_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)
_LABELS = ("endpoint", "key", "application", "version", "model", "deployment", "status")

# prometheus-client's own switch: when set (before it is imported), every metric value lives in an mmap file in
# this directory, and a scrape in any worker merges all workers' files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def multiprocess_dir(workers: int) -> Iterator[Path | None]:
    """For ``serve --workers N > 1``: a fresh metrics directory for the workers (they inherit the environment),
    removed when the server stops. A directory the operator set is used as given, emptied of the previous run's
    files (stale ones would add old counts). One worker keeps in-process metrics (no files)."""
    if workers <= 1:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for f in path.glob("*.db"):
            f.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="portico-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


class Metrics:
    def __init__(
        self,
        models: Iterable[str],
        deployments: Iterable[str],
        key_names: Callable[[], set[str]],
        versions: dict[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models = set(models)
        self._deployments = set(deployments)
        self._key_names = key_names
        self._versions = versions or {}  # application → its configured pipeline version (bounded by the config)
        self._components: dict[str, Counter] = {}  # component counters by name: one per name per registry
        self._series: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # labels → (requests child, latency child)
        # Several workers: a scrape reads every worker's files (built once; it reads the files at each collect).
        self._scrape = self.registry
        if os.environ.get(MULTIPROC_ENV):
            self._scrape = CollectorRegistry()
            MultiProcessCollector(self._scrape)
        r = self.registry
        self.requests = Counter("portico_requests", "Requests answered", _LABELS, registry=r)
        self.latency = Histogram(
            "portico_request_seconds",
            "Request latency (stream: until the last byte)",
            ("endpoint", "model", "deployment"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "portico_time_to_first_token_seconds",
            "Streams: time to the first chunk",
            ("model", "deployment"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "portico_time_per_output_token_seconds",
            "Streams: time per output token after the first",
            ("model", "deployment"),
            buckets=_TOKEN_TIME_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("portico_tokens", "Tokens by kind", ("kind", "key", "model", "deployment"), registry=r)
        self.cost = Counter("portico_cost_usd", "Cost in USD", ("key", "model", "deployment"), registry=r)
        self.errors = Counter("portico_errors", "Failed requests by error type", ("type", "model"), registry=r)
        self.traces_dropped = Counter("portico_traces_dropped", "Traces not stored: the trace writer's queue was full",
                                      registry=r)  # fmt: skip
        self.usage_dropped = Counter("portico_usage_dropped", "Usage records not stored: the usage queue was full "
                                     "(the database unreachable for long)", registry=r)  # fmt: skip
        self.state_unavailable = Counter("portico_state_unavailable", "Shared-state (Redis) calls that failed, by "
                                         "what was being checked", ("check",), registry=r)  # fmt: skip
        self.attempts = Counter("portico_upstream_attempts", "Upstream attempts, retries and fallbacks included",
                                ("deployment", "outcome"), registry=r)  # fmt: skip

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        """For components (cache, guardrails…): ``portico_<name>`` in this app's registry."""
        existing = self._components.get(name)
        if existing is not None:  # several applications' steps share one counter
            if tuple(existing._labelnames) != tuple(labels):
                raise ValueError(f"metric portico_{name} is already defined with labels {existing._labelnames}")
            return existing
        c = self._components[name] = Counter(f"portico_{name}", doc, labels, registry=self.registry)
        return c

    def _m(self, v: str | None) -> str:
        return v if v in self._models else ("none" if v is None else "other")

    def _d(self, v: str | None) -> str:
        return v if v in self._deployments else ("none" if v is None else "other")

    def _k(self, v: str | None) -> str:
        if v is None:
            return "anonymous"
        return v if v == "master" or v in self._key_names() else "other"

    def observe(self, rec: UsageRecord, *, ttft: float | None = None, chunks: int = 0,
                attempts: Iterable[tuple[str, int | None]] = ()) -> None:  # fmt: skip
        key, model, dep = self._k(rec.key_name), self._m(rec.model), self._d(rec.deployment)
        app = self._m(rec.application) if rec.application else "none"
        # The request's two always-present series, looked up once per label combination (bounded, see above):
        # prometheus_client's labels() validates and stringifies its values on every call.
        pair = self._series.get((rec.endpoint, key, app, model, dep, rec.status))
        if pair is None:
            version = self._versions.get(app, "none")
            pair = self._series[(rec.endpoint, key, app, model, dep, rec.status)] = (
                self.requests.labels(rec.endpoint, key, app, version, model, dep, str(rec.status)),
                self.latency.labels(rec.endpoint, model, dep),
            )
        pair[0].inc()
        pair[1].observe(rec.latency_ms / 1000)
        if rec.prompt_tokens:
            self.tokens.labels("prompt", key, model, dep).inc(rec.prompt_tokens)
        if rec.completion_tokens:
            self.tokens.labels("completion", key, model, dep).inc(rec.completion_tokens)
        if rec.cached_tokens:
            self.tokens.labels("cached", key, model, dep).inc(rec.cached_tokens)
        if rec.cost_usd:
            self.cost.labels(key, model, dep).inc(rec.cost_usd)
        if rec.status >= 400:
            self.errors.labels(rec.error_type or str(rec.status), model).inc()
        if ttft is not None:
            self.ttft.labels(model, dep).observe(ttft)
            generated = rec.completion_tokens or chunks
            if generated > 1:
                self.tpot.labels(model, dep).observe(max(0.0, rec.latency_ms / 1000 - ttft) / (generated - 1))
        for label, status in attempts:
            outcome = "ok" if status == 200 else ("client_gone" if status == 499 else f"error_{status}")
            self.attempts.labels(self._d(label), outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self._scrape)
