"""Retention: old traces, usage rows and expired stored responses are deleted in small batches.

Each batch is one short ``DELETE … WHERE <key> IN (SELECT <key> … LIMIT n)`` transaction, with a pause between
batches, so a purge of months of rows never holds a long lock against the usage and trace writers (on SQLite a
write transaction locks the file). The statements run through the async driver, so the server's event loop only
awaits them. Every worker and replica may run the job: deletes are idempotent, so two purgers only overlap.

What is deleted:
- traces older than ``traces_days`` with their spans, and ``request_meta`` rows as old (feedback's request index);
- usage rows older than ``usage_days``, except those of keys with a lifetime budget (their spend is the sum of
  every row) — monthly and daily budgets read only their period, which the ≥ 31-day minimum keeps whole;
- stored responses past their ``expires_at`` (``responses.retention_days``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, or_, select

from portico.storage.db import Database, api_keys, spans, traces, usage
from portico.storage.feedback import request_meta
from portico.storage.responses import responses

log = logging.getLogger("portico.storage")

DAY = 86400.0


@dataclass
class RetentionPolicy:
    traces_days: float | None = 30.0
    usage_days: float | None = None
    batch_size: int = 1000
    pause_seconds: float = 0.05  # between batches: the writers get the database in between
    interval_seconds: float = 3600.0


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0


async def purge(db: Database, policy: RetentionPolicy, now: float | None = None,
                stop: asyncio.Event | None = None) -> PurgeResult:  # fmt: skip
    """Delete everything past retention, batch by batch, until nothing is left (or ``stop`` is set)."""
    now = time.time() if now is None else now
    started = time.perf_counter()
    out = PurgeResult()
    n = policy.batch_size
    jobs: list[tuple[str, Any]] = []
    if policy.traces_days is not None:
        cut = now - policy.traces_days * DAY
        jobs.append(("traces", lambda: _trace_batch(cut, n)))
        jobs.append(
            ("request_meta", lambda: _batch(request_meta, request_meta.c.request_id, request_meta.c.ts < cut, n))
        )
    if policy.usage_days is not None:
        cut_u = now - policy.usage_days * DAY
        lifetime = select(api_keys.c.id).where(
            api_keys.c.budget_usd.is_not(None),
            or_(api_keys.c.budget_period == "total", api_keys.c.budget_period.is_(None)),
        )
        keep = or_(usage.c.key_id.is_(None), usage.c.key_id.not_in(lifetime))
        jobs.append(("usage", lambda: _batch(usage, usage.c.id, (usage.c.ts < cut_u) & keep, n)))
    jobs.append(("responses", lambda: _batch(responses, responses.c.id, responses.c.expires_at < now, n)))
    for table, make in jobs:
        total = 0
        while True:
            stmts = make()
            async with db.engine.begin() as conn:
                deleted = 0
                for i, stmt in enumerate(stmts):
                    result = await conn.execute(stmt)
                    if i == len(stmts) - 1:  # the last statement deletes the rows the batch is about
                        deleted = result.rowcount or 0
            out.batches += 1
            total += deleted
            if deleted < n or (stop is not None and stop.is_set()):
                break
            await asyncio.sleep(policy.pause_seconds)
        out.deleted[table] = total
    out.seconds = time.perf_counter() - started
    return out


def _batch(table: Any, key: Any, where: Any, n: int) -> list[Any]:
    return [delete(table).where(key.in_(select(key).where(where).limit(n)))]


def _trace_batch(cut: float, n: int) -> list[Any]:
    # Spans first, by the same oldest-n subquery, then the traces themselves (one transaction: never a trace
    # without its spans, or spans left behind).
    oldest = select(traces.c.request_id).where(traces.c.ts < cut).order_by(traces.c.ts).limit(n)
    return [delete(spans).where(spans.c.request_id.in_(oldest)), delete(traces).where(traces.c.request_id.in_(oldest))]


class Purger:
    """Runs ``purge`` every ``interval_seconds`` in the background of the server (first run after one interval)."""

    def __init__(self, db: Database, policy: RetentionPolicy) -> None:
        self.db = db
        self.policy = policy
        self.runs = 0
        self.last: PurgeResult | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="portico-retention")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.policy.interval_seconds)
                return
            except TimeoutError:
                pass
            try:
                self.last = await purge(self.db, self.policy, stop=self._stop)
                self.runs += 1
                if any(self.last.deleted.values()):
                    log.info("retention purge", extra={"deleted": self.last.deleted,
                                                       "seconds": round(self.last.seconds, 3)})  # fmt: skip
            except Exception:
                log.exception("retention purge failed; will retry at the next interval")
