"""Usage records: written off the request path in batches, read back grouped for reports.

``UsageWriter.add`` only appends to an in-memory queue; a background task inserts batches. On shutdown every
queued record is written before the database closes, so an accepted request's usage is never dropped; a failed
insert is retried with backoff and the batch stays queued meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import func, insert, select

from portico.storage.db import Database, usage

log = logging.getLogger("portico.storage")


@dataclass(slots=True)
class UsageRecord:
    ts: float
    request_id: str
    endpoint: str  # chat | embeddings
    status: int
    key_id: str | None = None
    key_name: str | None = None
    model: str | None = None
    application: str | None = None
    deployment: str | None = None
    error_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1

    def row(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies and showed up in the gateway profile.
        d = {f: getattr(self, f) for f in _FIELDS}
        d["day"] = time.strftime("%Y-%m-%d", time.gmtime(self.ts))
        return d


_FIELDS = tuple(f.name for f in fields(UsageRecord))


class UsageWriter:
    def __init__(self, db: Database, *, batch_size: int = 500, interval: float = 0.5) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self._pending: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="portico-usage-writer")

    def add(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything queued so far (tests and shutdown)."""
        while self._pending:
            await self._write_batch()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

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
                log.exception("usage batch write failed; will retry", extra={"queued": len(self._pending)})
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def _write_batch(self) -> None:
        batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(usage), [r.row() for r in batch])
        for _ in batch:  # removed only once the rows are committed
            self._pending.popleft()
        self.written += len(batch)


GROUPS = {
    "key": usage.c.key_name,
    "model": usage.c.model,
    "day": usage.c.day,
    "deployment": usage.c.deployment,
    "application": usage.c.application,
    "status": usage.c.status,
}


async def usage_report(
    db: Database,
    group_by: list[str],
    since: float | None = None,
    until: float | None = None,
    key_id: str | None = None,
) -> list[dict[str, Any]]:
    cols = [GROUPS[g].label(g) for g in group_by]
    stmt = select(
        *cols,
        func.count().label("requests"),
        func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
        func.sum(usage.c.completion_tokens).label("completion_tokens"),
        func.sum(usage.c.cached_tokens).label("cached_tokens"),
        func.sum(usage.c.cost_usd).label("cost_usd"),
        func.avg(usage.c.latency_ms).label("avg_latency_ms"),
        func.sum((usage.c.status >= 400).cast(usage.c.attempts.type)).label("errors"),
    )
    if since is not None:
        stmt = stmt.where(usage.c.ts >= since)
    if until is not None:
        stmt = stmt.where(usage.c.ts < until)
    if key_id is not None:
        stmt = stmt.where(usage.c.key_id == key_id)
    if cols:
        stmt = stmt.group_by(*cols).order_by(*cols)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        for k in ("prompt_tokens", "completion_tokens", "cached_tokens", "errors"):
            d[k] = int(d[k] or 0)
        d["cost_usd"] = round(float(d["cost_usd"] or 0.0), 8)
        d["avg_latency_ms"] = round(float(d["avg_latency_ms"] or 0.0), 2)
        out.append(d)
    return out


async def spend_since(db: Database, key_id: str, since: float) -> float:
    stmt = select(func.coalesce(func.sum(usage.c.cost_usd), 0.0)).where(usage.c.key_id == key_id, usage.c.ts >= since)
    async with db.engine.connect() as conn:
        return float((await conn.execute(stmt)).scalar_one())
