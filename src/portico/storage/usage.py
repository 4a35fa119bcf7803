"""Usage records: written off the request path in batches (``BatchWriter``), read back grouped for reports."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, insert, select

from portico.storage.batch import BatchWriter
from portico.storage.db import Database, usage
from portico.storage.spool import Spool

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


class UsageWriter(BatchWriter[UsageRecord]):
    """With ``spool_dir`` each record is also appended to a local spool file before ``add`` returns (before the
    request is answered), so a killed process loses no usage row: the next process started on that directory
    writes what the database did not get (storage/spool.py)."""

    name = "usage"

    def __init__(self, db: Database, *, spool_dir: str | Path | None = None, **kw: Any) -> None:
        super().__init__(db, **kw)
        self.spool = Spool(spool_dir) if spool_dir is not None else None
        self.replayed = 0

    def add(self, item: UsageRecord) -> bool:
        if self.spool is not None and len(self._pending) < self.max_queue:
            self.spool.append(orjson.dumps({f: getattr(item, f) for f in _FIELDS}) + b"\n")
        return super().add(item)

    async def replay(self) -> int:
        """Insert the records of spool segments left by dead processes (once, at start-up)."""
        if self.spool is None:
            return 0
        n = 0
        with self.spool.orphans() as segments:
            for path, lines in segments:
                records = []
                for line in lines:
                    try:
                        records.append(UsageRecord(**orjson.loads(line)))
                    except (orjson.JSONDecodeError, TypeError):
                        log.warning("unreadable line in a usage spool skipped", extra={"spool": str(path)})
                for i in range(0, len(records), self.batch_size):
                    n += await self._insert_new(records[i : i + self.batch_size])
        if n:
            log.info("usage rows recovered from the spool", extra={"records": n})
        self.replayed += n
        return n

    async def _insert_new(self, batch: list[UsageRecord]) -> int:
        """Insert the records not yet in the table: (request_id, ts) names a record (ts is the settle time)."""
        async with self.db.engine.begin() as conn:
            ids = list({r.request_id for r in batch})
            have = set((await conn.execute(
                select(usage.c.request_id, usage.c.ts).where(usage.c.request_id.in_(ids))
            )).all())  # fmt: skip
            new = [r for r in batch if (r.request_id, r.ts) not in have]
            if new:
                await conn.execute(insert(usage), [r.row() for r in new])
        return len(new)

    async def _write_batch(self) -> None:
        if self.spool is not None:
            self.spool.rotate()  # the batch about to be taken can then empty its segment
        await super()._write_batch()

    async def _insert(self, batch: list[UsageRecord]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(usage), [r.row() for r in batch])

    async def _written(self, batch: list[UsageRecord]) -> None:
        if self.spool is not None:
            self.spool.committed(len(batch))

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.spool is not None:
                self.spool.close()


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
