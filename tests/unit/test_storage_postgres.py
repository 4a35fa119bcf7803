"""The store against a real PostgreSQL (127.0.0.1:5432, trust auth; ``make test`` starts it if it is down):
keys and usage through the same code the server uses on SQLite."""

from __future__ import annotations

import time

import pytest

from portico.gateway.keys import KeyStore, hash_key
from portico.gateway.state import MemoryState
from portico.storage.db import Database
from portico.storage.usage import UsageRecord, UsageWriter, spend_since, usage_report


@pytest.fixture
def db(store_db: Database) -> Database:
    return store_db


async def test_keys_round_trip(db: Database) -> None:
    store = KeyStore(db, MemoryState(), shared=False)
    await store.load()
    rec, token = await store.create("team", models=["a"], rpm=10, budget_usd=2.0, budget_period="day")
    assert rec.key_hash == hash_key(token) and token.startswith("pk-")
    fresh = KeyStore(db, MemoryState(), shared=False)
    await fresh.load()
    got = await fresh.lookup(token)
    assert got is not None and got.models == frozenset({"a"}) and got.rpm == 10 and got.budget_period == "day"
    await fresh.revoke(rec.id)
    assert (await fresh.lookup(token)).active is False
    assert await fresh.lookup("pk-unknown") is None


async def test_usage_batches_and_reports(db: Database) -> None:
    writer = UsageWriter(db, batch_size=3, interval=0.05)
    writer.start()
    now = time.time()
    for i in range(7):
        writer.add(UsageRecord(ts=now, request_id=f"r{i}", endpoint="chat", status=200 if i else 502, key_id="k1",
                               key_name="team", model="m" if i % 2 else "n", prompt_tokens=10, completion_tokens=5,
                               cost_usd=0.5))  # fmt: skip
    await writer.close()  # nothing queued is lost on shutdown
    assert writer.written == 7
    rows = await usage_report(db, ["model"], since=now - 1)
    by = {r["model"]: r for r in rows}
    assert by["m"]["requests"] == 3 and by["n"]["requests"] == 4 and by["n"]["errors"] == 1
    assert by["m"]["prompt_tokens"] == 30 and by["m"]["cost_usd"] == pytest.approx(1.5)
    assert await spend_since(db, "k1", now - 1) == pytest.approx(3.5)
    assert await spend_since(db, "k1", now + 10) == 0.0


async def test_flush_racing_the_background_writer_writes_each_record_once(db: Database) -> None:
    import asyncio

    writer = UsageWriter(db, batch_size=4, interval=0.001)
    writer.start()
    now = time.time()
    for i in range(50):
        writer.add(UsageRecord(ts=now, request_id=f"x{i}", endpoint="chat", status=200, key_id="race"))
        if i % 7 == 0:
            await asyncio.gather(writer.flush(), writer.flush(), asyncio.sleep(0))
    await writer.close()
    rows = await usage_report(db, [], since=now - 1, key_id="race")
    assert rows[0]["requests"] == 50 and writer.written == 50
