"""Dashboard statistics from the usage table: time buckets x (requests, errors, tokens, cost, latency).

Counts and sums are grouped in SQL (one statement, both dialects), so a long window costs one scan and returns
buckets x groups rows. Latency percentiles need the values themselves: they come from the newest
``PERCENTILE_SAMPLE`` rows of the window, which is exact for the windows an operator looks at most and an
honest sample beyond.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Integer, case, cast, func, select

from portico.storage.db import Database, usage

GroupBy = Literal["model", "key", "application", "deployment"]
GROUP_COLUMNS: dict[str, Any] = {
    "model": usage.c.model,
    "key": usage.c.key_name,
    "application": usage.c.application,
    "deployment": usage.c.deployment,
}
PERCENTILE_SAMPLE = 20_000
MAX_BUCKETS = 500


@dataclass(frozen=True, slots=True)
class Window:
    since: float
    until: float
    bucket: int  # seconds

    def buckets(self) -> list[float]:
        first = int(self.since // self.bucket) * self.bucket
        return [float(t) for t in range(first, int(self.until) + 1, self.bucket)]


def pick_bucket(since: float, until: float) -> int:
    """A bucket width that gives a readable chart: at most ~120 bars for the window."""
    span = max(1.0, until - since)
    for width in (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400):
        if span / width <= 120:
            return width
    return 30 * 86400


def _bucket_expr(db: Database, width: int) -> Any:
    # floor(ts / width) in both dialects: SQLite truncates toward zero on CAST (ts is positive), PostgreSQL
    # would round, so it gets an explicit floor.
    if db.dialect == "sqlite":
        return cast(usage.c.ts / width, Integer)
    return cast(func.floor(usage.c.ts / width), Integer)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    i = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return round(values[i], 3)


async def dashboard_stats(db: Database, window: Window, group_by: GroupBy = "model") -> dict[str, Any]:
    width = window.bucket
    bucket = _bucket_expr(db, width).label("b")
    group = GROUP_COLUMNS[group_by].label("g")
    errors = func.sum(case((usage.c.status >= 400, 1), else_=0)).label("errors")
    in_window = (usage.c.ts >= window.since) & (usage.c.ts < window.until)
    stmt = (
        select(
            bucket,
            group,
            func.count().label("requests"),
            errors,
            func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
            func.sum(usage.c.completion_tokens).label("completion_tokens"),
            func.sum(usage.c.cost_usd).label("cost_usd"),
        )
        .where(in_window)
        .group_by(bucket, group)
    )
    errs = (
        select(usage.c.error_type, usage.c.status, func.count().label("n"))
        .where(in_window & (usage.c.status >= 400))
        .group_by(usage.c.error_type, usage.c.status)
    )
    lat = (
        select(bucket, usage.c.latency_ms)
        .where(in_window & (usage.c.status < 400))
        .order_by(usage.c.ts.desc())
        .limit(PERCENTILE_SAMPLE)
    )
    async with db.engine.connect() as conn:
        grouped = (await conn.execute(stmt)).all()
        error_rows = (await conn.execute(errs)).all()
        latency_rows = (await conn.execute(lat)).all()

    times = window.buckets()
    index = {t: i for i, t in enumerate(times)}
    zero = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    series = [{"t": t, **zero} for t in times]
    groups: dict[str, dict[str, Any]] = {}
    for b, g, n, e, pt, ct, cost in grouped:
        t = float(int(b) * width)
        point = series[index[t]] if t in index else None
        name = g if g is not None else "none"
        entry = groups.setdefault(name, {"name": name, **zero, "series": {
            "requests": [0] * len(times), "cost_usd": [0.0] * len(times), "tokens": [0] * len(times)}})  # fmt: skip
        values = {"requests": n, "errors": int(e or 0), "prompt_tokens": int(pt or 0),
                  "completion_tokens": int(ct or 0), "cost_usd": float(cost or 0.0)}  # fmt: skip
        for k, v in values.items():
            entry[k] += v
            if point is not None:
                point[k] += v
        if t in index:
            i = index[t]
            entry["series"]["requests"][i] += n
            entry["series"]["cost_usd"][i] += values["cost_usd"]
            entry["series"]["tokens"][i] += values["prompt_tokens"] + values["completion_tokens"]

    by_bucket: dict[float, list[float]] = defaultdict(list)
    every: list[float] = []
    for b, ms in latency_rows:
        by_bucket[float(int(b) * width)].append(ms)
        every.append(ms)
    for point in series:
        values = by_bucket.get(point["t"], [])
        point["p50_ms"] = _percentile(values, 0.5)
        point["p95_ms"] = _percentile(values, 0.95)
        point["cost_usd"] = round(point["cost_usd"], 8)

    totals = {k: sum(p[k] for p in series) for k in zero}
    totals["cost_usd"] = round(totals["cost_usd"], 8)
    totals["p50_ms"] = _percentile(every, 0.5)
    totals["p95_ms"] = _percentile(every, 0.95)
    return {
        "object": "stats",
        "since": window.since,
        "until": window.until,
        "bucket_seconds": width,
        "group_by": group_by,
        "totals": totals,
        "series": series,
        "groups": sorted(groups.values(), key=lambda g: (-g["requests"], g["name"])),
        "errors": sorted(
            ({"type": t or str(s), "status": s, "count": n} for t, s, n in error_rows), key=lambda r: -r["count"]
        ),
        "latency_sample": len(every),
    }
