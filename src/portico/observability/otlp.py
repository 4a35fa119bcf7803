"""OTLP/HTTP export of stored traces through the OpenTelemetry SDK, with a provider owned by the Runtime.

Spans are re-created after the fact (by the background trace writer) with explicit start/end timestamps
reconstructed from the request context; the BatchSpanProcessor exports them from its own thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from portico.observability.spans import TraceData


class OtlpExporter:
    def __init__(self, endpoint: str) -> None:
        # Not installed as the global provider: the Runtime owns it, so tests and embedders stay isolated.
        self.provider = TracerProvider(resource=Resource.create({"service.name": "portico"}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self.provider.get_tracer("portico")

    def export(self, t: TraceData) -> None:
        """Queue one trace's spans (parents before children: the list is built in that order)."""
        live: dict[str, trace.Span] = {}
        for s in t.spans:
            start = t.start_ns + int(s.start_ms * 1e6)
            parent = live.get(s.parent_id) if s.parent_id else None
            span = self.tracer.start_span(
                s.name,
                context=trace.set_span_in_context(parent) if parent is not None else Context(),  # a fresh root
                kind=SpanKind.SERVER if parent is None else SpanKind.INTERNAL,
                attributes=s.attributes,
                start_time=start,
            )
            if s.status == "error":
                span.set_status(Status(StatusCode.ERROR, str(s.attributes.get("error.type", ""))))
            live[s.span_id] = span
        for s in t.spans:
            live[s.span_id].end(end_time=t.start_ns + int((s.start_ms + s.duration_ms) * 1e6))

    def close(self) -> None:
        """Flush the batch processor and stop it (blocks on HTTP: called from the trace writer's thread)."""
        self.provider.shutdown()
