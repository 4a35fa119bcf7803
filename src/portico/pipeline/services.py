"""What a step factory may use: the shared, long-lived parts of the runtime, as a structural contract.

Steps get these at build time (``factory(options, services)``) and keep what they need; they never import the
runtime module (that would point a dependency outward).
"""

from __future__ import annotations

from typing import Any, Protocol


class Services(Protocol):
    cfg: Any  # PorticoConfig: the validated configuration
    gateway: Any  # Gateway: chat(ctx, model) / chat_stream(ctx, model) / embeddings(req)
    embedder: Any  # QueryEmbedder: one query embedding per request, shared by every step that needs it
    metrics: Any  # Metrics: metrics.counter(name, doc, labels) for component counters
    db: Any  # Database: SQLAlchemy async engine (SQLite or PostgreSQL)
    state: Any  # MemoryState | RedisState: shared counters; RedisState.redis is the redis client
    prices: Any  # PriceBook: cost(model, deployment, usage) in USD
    tools: Any  # Toolbox: the configured tools (portico.actions), expand(names) / get(name) / gate

    def on_close(self, close: Any) -> None:
        """Register an async callable that releases a step's resources (stores, clients) at shutdown."""

    def result_cache(self, namespace: str, ttl_seconds: float) -> Any:
        """A ResultCache (``get_or_compute(parts, compute)``) for intermediate results: retrieval, SQL, tools."""
