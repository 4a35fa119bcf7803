"""Dashboard statistics over the usage table, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from portico.storage.db import Database, usage
from portico.storage.stats import Window, dashboard_stats, pick_bucket
from portico.storage.usage import UsageRecord

T0 = 1_764_000_000.0  # a multiple of 3600: buckets start on it


async def _fill(db: Database, records: list[UsageRecord]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(usage), [r.row() for r in records])


def _rec(i: int, ts: float, model: str, status: int = 200, latency: float = 10.0, **kw: object) -> UsageRecord:
    return UsageRecord(ts=ts, request_id=f"r{i}", endpoint="chat", status=status, model=model, latency_ms=latency,
                       prompt_tokens=10, completion_tokens=5, cost_usd=0.001, **kw)  # type: ignore[arg-type]  # fmt: skip


async def test_buckets_groups_errors_and_percentiles(store_db: Database) -> None:
    recs = [_rec(i, T0 + 60 + i, "a", latency=float(i + 1), key_name="k1") for i in range(10)]  # bucket 0
    recs += [_rec(100 + i, T0 + 3600 + 5 * i, "b", key_name="k2") for i in range(4)]  # bucket 1
    recs += [_rec(200, T0 + 3600 + 30, "b", status=429, error_type="rate_limit_exceeded", key_name="k2"),
             _rec(201, T0 + 2 * 3600 + 1, "a", status=502, error_type="upstream_error", key_name="k1"),
             _rec(202, T0 - 10, "a"), _rec(203, T0 + 3 * 3600, "a")]  # outside the window  # fmt: skip
    await _fill(store_db, recs)
    s = await dashboard_stats(store_db, Window(T0, T0 + 3 * 3600, 3600), "model")

    assert [p["t"] for p in s["series"]] == [T0, T0 + 3600, T0 + 7200, T0 + 10800]
    assert [p["requests"] for p in s["series"]] == [10, 5, 1, 0]
    assert [p["errors"] for p in s["series"]] == [0, 1, 1, 0]
    assert s["totals"]["requests"] == 16 and s["totals"]["errors"] == 2
    assert s["totals"]["prompt_tokens"] == 160 and s["totals"]["cost_usd"] == pytest.approx(0.016)
    # Latency percentiles are over successful requests only: bucket 0 holds 1..10 ms.
    assert s["series"][0]["p50_ms"] in (5.0, 6.0) and s["series"][0]["p95_ms"] == 10.0
    assert s["series"][2]["p50_ms"] is None  # only a failure there
    assert s["latency_sample"] == 14

    a, b = s["groups"]
    assert (a["name"], a["requests"], a["errors"]) == ("a", 11, 1)
    assert (b["name"], b["requests"], b["errors"]) == ("b", 5, 1)
    assert a["series"]["requests"] == [10, 0, 1, 0] and b["series"]["tokens"] == [0, 75, 0, 0]
    assert {(e["type"], e["status"], e["count"]) for e in s["errors"]} == {
        ("rate_limit_exceeded", 429, 1), ("upstream_error", 502, 1)}  # fmt: skip

    by_key = await dashboard_stats(store_db, Window(T0, T0 + 3 * 3600, 3600), "key")
    assert [(g["name"], g["requests"]) for g in by_key["groups"]] == [("k1", 11), ("k2", 5)]


async def test_empty_window_has_zero_series(store_db: Database) -> None:
    s = await dashboard_stats(store_db, Window(T0, T0 + 600, 60), "application")
    assert len(s["series"]) == 11 and all(p["requests"] == 0 for p in s["series"])
    assert s["groups"] == [] and s["totals"]["p50_ms"] is None


def test_bucket_width_keeps_charts_readable() -> None:
    assert pick_bucket(0, 3600) == 60
    assert pick_bucket(0, 86400) == 900
    assert pick_bucket(0, 7 * 86400) == 3 * 3600
    assert pick_bucket(0, 30 * 86400) == 6 * 3600
