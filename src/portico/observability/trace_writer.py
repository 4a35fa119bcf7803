"""The background trace writer: a thread with its own event loop and its own database engine.

``add`` (on the request path) is a length check and a deque append. Everything else happens in the writer's
thread: building span trees from the queued sources, redaction, JSON encoding, batched inserts (trace rows and
their spans in one transaction) and the OTLP export. The queue is bounded (``max_queue``): past it a trace is
dropped and counted (``portico_traces_dropped``), so a slow database or a slow redactor costs traces, never the
requests' latency or the process's memory. On shutdown everything queued is written before the thread ends.

Why a thread and not a task on the server's loop: measured side by side (bench/results/gateway_profile.md) the two
cost the same CPU per request once batches are full, the thread had the better c=4 tail, and a redactor (spaCy
in a worker process, blocking on a pipe) can run here without stalling the server's loop.

A request id seen twice (a client may send its own ``x-request-id``) keeps the first trace; the duplicate is
logged and skipped so it cannot wedge the queue. A failed insert is retried with backoff while the batch waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from portico.observability.spans import TraceData
from portico.storage.db import Database, spans, traces

if TYPE_CHECKING:
    from portico.observability.otlp import OtlpExporter

log = logging.getLogger("portico.tracing")


class TraceWriter:
    def __init__(
        self,
        storage_url: str,
        *,
        batch_size: int = 200,
        interval: float = 0.5,
        max_queue: int = 20_000,
        exporter: OtlpExporter | None = None,
        build: Callable[[Any], TraceData] | None = None,
        on_drop: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``build`` turns a queued source into a ``TraceData`` (in the writer's thread); without it the queue
        holds built traces. ``on_close`` runs in the writer's thread after the last batch (e.g. stop a redactor's
        worker process)."""
        self.url = storage_url
        self.batch_size = batch_size
        self.interval = interval
        self.max_queue = max_queue
        self.exporter = exporter
        self.build = build or (lambda t: t)
        self.on_drop = on_drop
        self.on_close = on_close
        self._pending: deque[Any] = deque()  # appended by the request path, popped by the writer thread
        self._batch: list[_Built] | None = None  # built and encoded, not yet committed (kept across a retry)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0

    # --- the request path's side ---------------------------------------------------------------------------

    def add(self, item: Any) -> None:
        pending = self._pending
        if len(pending) >= self.max_queue:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        pending.append(item)
        if len(pending) == self.batch_size and self._loop is not None:  # once per batch: it costs a syscall
            self._loop.call_soon_threadsafe(self._wake_up)

    # --- control, from the server's event loop ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="portico-trace-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"the trace writer could not start: {self._failure}") from self._failure

    async def flush(self) -> None:
        """Write everything queued so far (the admin request browser reads right after)."""
        if self._loop is None or self._closing:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._drain(), self._loop))

    async def close(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._closing = True
        self._loop.call_soon_threadsafe(self._wake_up)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # --- the writer's thread ---------------------------------------------------------------------------------

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run(loop))
        except BaseException as e:  # e.g. an unusable storage URL: start() reports it instead of waiting forever
            self._failure = e
            raise
        finally:
            self._ready.set()
            loop.close()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        db = self._db = Database(self.url)
        self._inserts = _Inserts(db.engine.dialect)
        self._loop = loop
        self._ready.set()
        failures = 0
        try:
            while not self._closing:
                timed_out = False
                try:
                    # Retries capped at 2 s apart: after a database outage the backlog is written within 2 s.
                    await asyncio.wait_for(self._wake.wait(), min(2.0, 0.25 * 2**failures) if failures else
                                           self.interval)  # fmt: skip
                except TimeoutError:
                    timed_out = True
                self._wake.clear()
                try:
                    # Woken by a full batch: write full batches only (a partial one waits for the interval),
                    # so a busy server writes few large transactions rather than many small ones.
                    await self._drain(full_only=not timed_out)
                    failures = 0
                except Exception as e:
                    failures += 1
                    if failures == 1:  # one traceback per outage, then a line per retry
                        log.exception("trace batch write failed; will retry", extra={"queued": len(self._pending)})
                    else:
                        log.warning(f"trace batch write failed again ({type(e).__name__}); will retry",
                                    extra={"queued": len(self._pending)})  # fmt: skip
            try:
                await self._drain()
            except Exception:
                log.exception("traces lost at shutdown", extra={"queued": len(self._pending)})
        finally:
            await db.close()
            if self.exporter is not None:
                self.exporter.close()  # flushes the OTLP batch processor (blocking HTTP: this thread only)
            if self.on_close is not None:
                self.on_close()

    async def _drain(self, full_only: bool = False) -> None:
        assert self._lock is not None
        async with self._lock:
            while self._batch is not None or len(self._pending) >= (self.batch_size if full_only else 1):
                if self._batch is None:
                    self._batch = self._built(min(self.batch_size, len(self._pending)))
                batch = self._batch
                self.written += await self._insert(batch) if batch else 0
                self._batch = None
                if self.exporter is not None:
                    for b in batch:
                        self.exporter.export(b.trace)

    def _built(self, n: int) -> list[_Built]:
        """Build, and encode as rows, the next ``n`` queued traces. After each one the GIL is offered back
        (``time.sleep(0)``): the server's thread, back from waiting for I/O, then waits for one trace's work at
        most, not for a whole batch's or the interpreter's 5 ms switch interval."""
        out = []
        for _ in range(n):
            src = self._pending.popleft()
            try:
                t = self.build(src)
                row = t.row()
                row["input"], row["output"] = _json_or_none(row["input"]), _json_or_none(row["output"])
                span_rows = [s.row(t.request_id) for s in t.spans]
                for r in span_rows:
                    r["attributes"] = _json(r["attributes"])
                out.append(_Built(t, row, span_rows))
            except Exception:  # a bug in building one trace must not wedge the others
                log.exception("could not build a trace", extra={"request_id": getattr(src, "request_id", None)})
            time.sleep(0)
        return out

    async def _insert(self, batch: list[_Built]) -> int:
        """The number of traces stored (a duplicate request id is skipped)."""
        try:
            await self._insert_rows(batch)
            return len(batch)
        except IntegrityError:
            stored = 0
            for t in batch:
                try:
                    await self._insert_rows([t])
                    stored += 1
                except IntegrityError:
                    log.warning("duplicate request id: trace skipped", extra={"request_id": t.request_id})
            return stored

    async def _insert_rows(self, batch: list[_Built]) -> None:
        async with self._db.engine.begin() as conn:
            await self._inserts.run(conn, [b.row for b in batch], [r for b in batch for r in b.span_rows])


@dataclass(slots=True)
class _Built:
    trace: TraceData
    row: dict[str, Any]  # the traces row, JSON encoded
    span_rows: list[dict[str, Any]]

    @property
    def request_id(self) -> str:
        return self.trace.request_id


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _json(value)


class _Inserts:
    """The two INSERTs compiled once for the engine's dialect and run through the driver with JSON already encoded
    (orjson): SQLAlchemy's per-row parameter processing and its stdlib JSON encoding were most of the writer's
    own cost. Column order comes from the compiled statement, so any dialect's parameter style works."""

    def __init__(self, dialect: Any) -> None:
        self.statements = [insert(table).compile(dialect=dialect) for table in (traces, spans)]
        self.trace_cols, self.span_cols = (tuple(c.name for c in table.c) for table in (traces, spans))

    def params(self, compiled: Any, cols: tuple[str, ...], rows: list[dict[str, Any]]) -> list[Any]:
        if compiled.positional:
            order = compiled.positiontup
            return [tuple(r[k] for k in order) for r in rows]
        return [{k: r[k] for k in cols} for r in rows]

    async def run(self, conn: Any, trace_rows: list[dict[str, Any]], span_rows: list[dict[str, Any]]) -> None:
        t, s = self.statements
        await conn.exec_driver_sql(t.string, self.params(t, self.trace_cols, trace_rows))
        if span_rows:
            await conn.exec_driver_sql(s.string, self.params(s, self.span_cols, span_rows))
