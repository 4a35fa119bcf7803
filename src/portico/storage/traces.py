"""Traces: written off the request path in batches (like usage), read back for the admin request browser.

``TraceWriter.add`` only queues; a background task serialises and inserts batches (trace rows and their spans in
one transaction), then hands them to the OTLP exporter when one is configured. On shutdown everything queued is
written before the database closes. A request id seen twice (a client may send its own ``x-request-id``) keeps
the first trace; the duplicate is logged and skipped so it cannot wedge the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, insert, or_, select
from sqlalchemy.exc import IntegrityError

from portico.storage.db import Database, spans, traces

if TYPE_CHECKING:
    from portico.observability.otlp import OtlpExporter
    from portico.observability.tracing import TraceData

log = logging.getLogger("portico.storage")

SUMMARY = tuple(c for c in traces.c if c.name not in ("input", "output"))


class TraceWriter:
    def __init__(
        self, db: Database, *, batch_size: int = 200, interval: float = 0.5, exporter: OtlpExporter | None = None
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self.exporter = exporter
        self._pending: deque[TraceData] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # flush() and the background task must not insert the same batch twice
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="portico-trace-writer")

    def add(self, trace: TraceData) -> None:
        self._pending.append(trace)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            await self._write_batch()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
        if self.exporter is not None:
            await self.exporter.close()

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                while self._pending and not self._closing:
                    await self._write_batch()
                failures = 0
            except Exception:
                failures += 1
                log.exception("trace batch write failed; will retry", extra={"queued": len(self._pending)})
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def _write_batch(self) -> None:
        async with self._lock:
            batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
            if not batch:
                return
            try:
                await self._insert(batch)
            except IntegrityError:
                await self._insert_one_by_one(batch)
            for _ in batch:  # removed only once the rows are committed
                self._pending.popleft()
            self.written += len(batch)
        if self.exporter is not None:
            for t in batch:
                self.exporter.export(t)

    async def _insert(self, batch: list[TraceData]) -> None:
        span_rows = [s.row(t.request_id) for t in batch for s in t.spans]
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(traces), [t.row() for t in batch])
            if span_rows:
                await conn.execute(insert(spans), span_rows)

    async def _insert_one_by_one(self, batch: list[TraceData]) -> None:
        for t in batch:
            try:
                await self._insert([t])
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
