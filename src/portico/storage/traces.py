"""Traces: written off the request path in batches (like usage), read back for the admin request browser.

``TraceWriter.add`` only queues; a background task serialises and inserts batches (trace rows and their spans in
one transaction), then hands them to the OTLP exporter when one is configured. On shutdown everything queued is
written before the database closes. A request id seen twice (a client may send its own ``x-request-id``) keeps
the first trace; the duplicate is logged and skipped so it cannot wedge the queue.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, insert, or_, select
from sqlalchemy.exc import IntegrityError

from portico.storage.batch import BatchWriter
from portico.storage.db import Database, spans, traces

if TYPE_CHECKING:
    from portico.observability.otlp import OtlpExporter
    from portico.observability.tracing import TraceData

log = logging.getLogger("portico.storage")

SUMMARY = tuple(c for c in traces.c if c.name not in ("input", "output"))


class TraceWriter(BatchWriter["TraceData"]):
    name = "trace"

    def __init__(
        self, db: Database, *, batch_size: int = 200, interval: float = 0.5, exporter: OtlpExporter | None = None
    ) -> None:
        super().__init__(db, batch_size=batch_size, interval=interval)
        self.exporter = exporter

    async def close(self) -> None:
        await super().close()
        if self.exporter is not None:
            await self.exporter.close()

    async def _written(self, batch: list[TraceData]) -> None:
        if self.exporter is not None:
            for t in batch:
                self.exporter.export(t)

    async def _insert(self, batch: list[TraceData]) -> None:
        try:
            await self._insert_rows(batch)
        except IntegrityError:
            await self._insert_one_by_one(batch)

    async def _insert_rows(self, batch: list[TraceData]) -> None:
        span_rows = [s.row(t.request_id) for t in batch for s in t.spans]
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(traces), [t.row() for t in batch])
            if span_rows:
                await conn.execute(insert(spans), span_rows)

    async def _insert_one_by_one(self, batch: list[TraceData]) -> None:
        for t in batch:
            try:
                await self._insert_rows([t])
            except IntegrityError:
                log.warning("duplicate request id: trace skipped", extra={"request_id": t.request_id})


async def list_traces(
    db: Database,
    *,
    filters: dict[str, Any],
    since: float | None = None,
    until: float | None = None,
    before: float | None = None,
    text: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Summaries, newest first. ``filters`` maps column names (key_name, model, …) to exact values."""
    stmt = select(*SUMMARY)
    for name, value in filters.items():
        stmt = stmt.where(traces.c[name] == value)
    if since is not None:
        stmt = stmt.where(traces.c.ts >= since)
    if until is not None:
        stmt = stmt.where(traces.c.ts < until)
    if before is not None:
        stmt = stmt.where(traces.c.ts < before)
    if text:
        # Searches the stored JSON text; LIKE wildcards typed by the user are matched literally.
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(cast(traces.c.input, String).like(pattern, escape="\\"),
                              cast(traces.c.output, String).like(pattern, escape="\\")))  # fmt: skip
    stmt = stmt.order_by(traces.c.ts.desc()).limit(limit)
    async with db.engine.connect() as conn:
        return [_plain(r) for r in (await conn.execute(stmt)).mappings().all()]


async def get_trace(db: Database, request_id: str) -> dict[str, Any] | None:
    """One trace with its spans nested as a tree (``children`` arrays, in start order)."""
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(traces).where(traces.c.request_id == request_id))).mappings().first()
        if row is None:
            return None
        rows = (await conn.execute(select(spans).where(spans.c.request_id == request_id))).mappings().all()
    out = _plain(row)
    out["spans"] = span_tree([_plain(r) for r in rows])
    return out


def _plain(row: Any) -> dict[str, Any]:
    # Column keys are SQLAlchemy ``quoted_name`` (a str subclass) which orjson refuses.
    return {str(k): v for k, v in row.items()}


def span_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    nodes = {}
    for r in sorted(rows, key=lambda r: (r["start_ms"], r["span_id"])):
        r.pop("request_id", None)
        nodes[r["span_id"]] = {**r, "children": []}
    roots = []
    for n in nodes.values():
        parent = nodes.get(n["parent_id"]) if n["parent_id"] else None
        (parent["children"] if parent is not None else roots).append(n)
    return roots
