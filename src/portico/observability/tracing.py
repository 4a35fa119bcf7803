"""Request traces, sampled on the request path and built, stored and exported off it.

Nothing is traced while a request runs: the pipeline already records step timings and upstream attempts on the
``RequestContext``. Once the request is settled, ``Tracer`` draws the sample and queues a ``ChatSource`` — the
context, the usage record and two clock readings, nothing copied or built. The background writer
(``observability.trace_writer``, a thread with its own event loop) turns sources into span trees
(``observability.spans``), redacts content when asked, inserts them in batches and exports them over OTLP.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from portico.config.schema import TracingConfig
from portico.observability.spans import ChatSource, EmbeddingsSource, Redactor, TraceData, chat_trace, embeddings_trace
from portico.observability.trace_writer import TraceWriter
from portico.pipeline.context import Attempt, RequestContext
from portico.storage.usage import UsageRecord


def keep(status: int, sample_rate: float, rng: random.Random) -> bool:
    """Errors are always kept; successes when a draw falls within the sample rate."""
    if status >= 400:
        return True
    return sample_rate >= 1.0 or rng.random() < sample_rate


class Tracer:
    """Samples settled requests and hands their sources to the background writer."""

    def __init__(
        self,
        cfg: TracingConfig,
        writer: Any,  # TraceWriter, or anything with add()
        rng: random.Random | None = None,
        versions: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.writer = writer
        self.rng = rng or random.Random()
        self.versions = versions or {}  # application → pipeline version, on the root span

    @classmethod
    def build(
        cls,
        cfg: TracingConfig,
        storage_url: str,
        *,
        batch_size: int,
        interval: float,
        versions: dict[str, str] | None = None,
        redact: Redactor | None = None,
        on_drop: Callable[[], None] | None = None,
        close_redactor: Callable[[], None] | None = None,
    ) -> Tracer:
        exporter = None
        if cfg.otlp_endpoint:
            from portico.observability.otlp import OtlpExporter  # the SDK is only imported when exporting

            exporter = OtlpExporter(cfg.otlp_endpoint)
        content = cfg.content

        def build(src: Any) -> TraceData:
            if isinstance(src, ChatSource):
                return chat_trace(src, content, redact)
            if isinstance(src, EmbeddingsSource):
                return embeddings_trace(src, content, redact)
            return src  # already built

        writer = TraceWriter(storage_url, batch_size=batch_size, interval=interval, exporter=exporter, build=build,
                             on_drop=on_drop, on_close=close_redactor)  # fmt: skip
        return cls(cfg, writer, versions=versions)

    def chat(self, ctx: RequestContext, rec: UsageRecord) -> None:
        if not keep(rec.status, self.cfg.sample_rate, self.rng):
            return
        app = ctx.application
        self.writer.add(ChatSource(ctx, rec, time.perf_counter(), time.time_ns(),
                                   self.versions.get(app) if app is not None else None))  # fmt: skip

    def embeddings(self, rec: UsageRecord, texts: list[str], attempts: Sequence[Attempt], started: float) -> None:
        if keep(rec.status, self.cfg.sample_rate, self.rng):
            self.writer.add(EmbeddingsSource(rec, texts, attempts, started, time.perf_counter(), time.time_ns()))

    def start(self) -> None:
        self.writer.start()

    async def flush(self) -> None:
        await self.writer.flush()

    async def close(self) -> None:
        await self.writer.close()
