"""Usage records: written off the request path in batches (``BatchWriter``), read back grouped for reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import func, insert, select

from portico.storage.batch import BatchWriter
from portico.storage.db import Database, usage


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


class UsageWriter(BatchWriter[UsageRecord]):
    name = "usage"

    async def _insert(self, batch: list[UsageRecord]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(usage), [r.row() for r in batch])


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
