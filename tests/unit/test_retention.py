"""Retention on SQLite and the real PostgreSQL: old traces (with their spans and request metadata), old usage
rows and expired stored responses go, in batches; recent rows, and usage rows a lifetime budget sums, stay. The
background purger deletes while the event loop keeps running other tasks."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, insert, select

from portico.storage.db import Database, api_keys, spans, traces, usage
from portico.storage.feedback import request_meta
from portico.storage.responses import responses
from portico.storage.retention import DAY, Purger, RetentionPolicy, purge

NOW = time.time()


async def _count(db: Database, table) -> int:  # type: ignore[no-untyped-def]
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _fill(db: Database, old: int, new: int) -> None:
    """``old`` requests 40 days ago and ``new`` ones an hour ago, each with a trace, two spans, request_meta and
    a usage row; half the old usage belongs to a key with a lifetime budget."""
    keys = [
        {"id": "life", "name": "lifetime", "key_hash": "a" * 64, "key_prefix": "pk-a", "budget_usd": 9.0,
         "budget_period": "total", "created_at": NOW},
        {"id": "month", "name": "monthly", "key_hash": "b" * 64, "key_prefix": "pk-b", "budget_usd": 9.0,
         "budget_period": "month", "created_at": NOW},
    ]  # fmt: skip
    t_rows, s_rows, m_rows, u_rows = [], [], [], []
    for i in range(old + new):
        ts = NOW - (40 * DAY if i < old else 3600) + i
        rid = f"r{i}"
        key = "life" if i % 2 else "month"
        t_rows.append({"request_id": rid, "ts": ts, "day": "d", "endpoint": "chat", "status": 200,
                       "latency_ms": 1.0, "cost_usd": 0.0, "prompt_tokens": 1, "completion_tokens": 1})  # fmt: skip
        s_rows += [{"request_id": rid, "span_id": f"s{j}", "name": "x", "start_ms": 0.0, "duration_ms": 1.0,
                    "status": "ok", "attributes": {}} for j in range(2)]  # fmt: skip
        m_rows.append({"request_id": rid, "ts": ts, "key_id": key})
        u_rows.append({"ts": ts, "day": "d", "request_id": rid, "key_id": key, "endpoint": "chat", "status": 200,
                       "prompt_tokens": 1, "completion_tokens": 1, "cached_tokens": 0, "cost_usd": 0.01,
                       "latency_ms": 1.0, "attempts": 1})  # fmt: skip
    r_rows = [{"id": f"resp_{i}", "owner": "k", "created_at": NOW - 100, "expires_at": NOW - 1 if i < 5 else None,
               "response": {}, "input_items": [], "context": []} for i in range(8)]  # fmt: skip
    async with db.engine.begin() as conn:
        await conn.execute(insert(api_keys), keys)
        for table, rows in ((traces, t_rows), (spans, s_rows), (request_meta, m_rows), (usage, u_rows),
                            (responses, r_rows)):  # fmt: skip
            await conn.execute(insert(table), rows)


async def test_purge_deletes_only_what_is_past_retention_in_batches(store_db: Database) -> None:
    await _fill(store_db, old=23, new=7)
    result = await purge(store_db, RetentionPolicy(traces_days=30, usage_days=31, batch_size=5), now=NOW)
    # 23 old traces in batches of 5: 5 batches; old usage: the 11 or 12 rows of the monthly key go.
    old_monthly = len([i for i in range(23) if i % 2 == 0])
    assert result.deleted == {"traces": 23, "request_meta": 23, "usage": old_monthly, "responses": 5}
    assert result.batches >= 5 + 5 + 3 + 1
    assert await _count(store_db, traces) == 7
    assert await _count(store_db, spans) == 14  # the spans of the 7 recent traces, none orphaned
    assert await _count(store_db, request_meta) == 7
    assert await _count(store_db, usage) == 30 - old_monthly  # lifetime-budget rows stay: their spend is the sum
    assert await _count(store_db, responses) == 3
    async with store_db.engine.connect() as conn:
        left = (await conn.execute(select(func.min(traces.c.ts)))).scalar_one()
    assert left > NOW - DAY
    again = await purge(store_db, RetentionPolicy(traces_days=30, usage_days=31, batch_size=5), now=NOW)
    assert sum(again.deleted.values()) == 0


async def test_null_retention_keeps_everything_but_expired_responses(store_db: Database) -> None:
    await _fill(store_db, old=4, new=2)
    result = await purge(store_db, RetentionPolicy(traces_days=None, usage_days=None), now=NOW)
    assert result.deleted == {"responses": 5}
    assert await _count(store_db, traces) == 6 and await _count(store_db, usage) == 6


async def test_the_background_purger_deletes_without_holding_the_loop(store_db: Database) -> None:
    await _fill(store_db, old=400, new=10)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    tick_task = asyncio.create_task(ticker())
    purger = Purger(store_db, RetentionPolicy(traces_days=30, batch_size=20, pause_seconds=0.001,
                                              interval_seconds=0.05))  # fmt: skip
    purger.start()
    deadline = time.monotonic() + 30
    while purger.runs == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    ticks_during = ticks
    await purger.close()
    stop.set()
    await tick_task
    assert purger.runs >= 1 and purger.last is not None
    assert purger.last.deleted["traces"] == 400 and purger.last.batches >= 20
    assert await _count(store_db, traces) == 10
    # The loop ran other work between the 20+ batches (one tick per loop turn at most every millisecond).
    assert ticks_during >= purger.last.batches


def test_retention_config_defaults_and_bounds() -> None:
    import pytest
    from pydantic import ValidationError

    from portico.config.retention import RetentionConfig

    r = RetentionConfig()
    assert (r.traces_days, r.usage_days) == (30.0, None)
    with pytest.raises(ValidationError, match="greater than or equal to 31"):
        RetentionConfig(usage_days=7)  # a monthly budget would lose part of its month
    with pytest.raises(ValidationError):
        RetentionConfig(traces_days=0)
