"""Schema migrations on SQLite and the real PostgreSQL: a database made by the last release before migrations
upgrades to head with its rows intact; the baseline revision is that release's schema; the models and the
migrations agree (so a column added without a revision fails here); start-up refuses what it must not touch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Column, Index, MetaData, String, insert, select, text

import portico.runtime  # noqa: F401  (registers every table on the shared metadata)
from portico.storage import migrate
from portico.storage.db import Database, api_keys, metadata, traces, usage
from tests.unit import schema_632235f as old

PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(params=["sqlite", "pg"])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database: a new SQLite file, or a throwaway PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/portico.db"
        return
    name = "portico_mig_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(f"{PG}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _diff(db: Database, target: MetaData) -> list:
    async with db.engine.connect() as conn:
        return await conn.run_sync(migrate.compare, target)


async def _old_release_db(url: str) -> Database:
    """What the last release's start-up left: its tables by ``create_all``, no alembic_version, some rows."""
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(old.metadata.create_all)
        now = time.time()
        key = {"id": "k1", "name": "team", "key_hash": "h" * 64, "key_prefix": "pk-", "budget_usd": 5.0,
               "budget_period": "month", "created_at": now}  # fmt: skip
        use = {"ts": now, "day": "2026-12-07", "request_id": "r1", "key_id": "k1", "endpoint": "chat", "status": 200,
               "prompt_tokens": 3, "completion_tokens": 4, "cached_tokens": 0, "cost_usd": 0.5, "latency_ms": 1.0,
               "attempts": 1}  # fmt: skip
        trace = {"request_id": "r1", "ts": now, "day": "2026-12-07", "endpoint": "chat", "status": 200,
                 "latency_ms": 1.0, "cost_usd": 0.5, "prompt_tokens": 3, "completion_tokens": 4,
                 "input": {"q": "hi"}}  # fmt: skip
        await conn.execute(insert(old.api_keys).values(**key))
        await conn.execute(insert(old.usage).values(**use))
        await conn.execute(insert(old.traces).values(**trace))
    return db


async def test_an_old_release_database_upgrades_to_head_with_its_rows(empty_url: str) -> None:
    db = await _old_release_db(empty_url)
    try:
        st = await migrate.state(db)
        assert st.status == "unversioned" and "api_keys" in st.tables
        with pytest.raises(migrate.SchemaError, match="portico db upgrade"):
            await db.create_schema()  # start-up never alters it
        assert (await migrate.state(db)).current is None
        before, after = await migrate.upgrade(db)
        assert before.status == "unversioned" and after.status == "current" and after.current == after.head
        assert await _diff(db, metadata) == []  # every table and column of today's code, as the models say
        async with db.engine.connect() as conn:
            key = (await conn.execute(select(api_keys))).mappings().one()
            assert (key["name"], key["budget_usd"], key["tools"]) == ("team", 5.0, None)
            assert (await conn.execute(select(usage.c.cost_usd))).scalar_one() == 0.5
            assert (await conn.execute(select(traces.c.input))).scalar_one() == {"q": "hi"}
        await db.create_schema()  # now start-up goes on
        again = await migrate.upgrade(db)  # and a second upgrade is a no-op
        assert again[0].current == again[1].current == after.head
    finally:
        await db.close()


async def test_a_database_made_between_the_release_and_migrations_upgrades(empty_url: str) -> None:
    """``create_all`` of later code (all tables) without the request_meta.ts index added with migrations."""
    db = Database(empty_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(text("DROP INDEX ix_request_meta_ts"))
        assert (await migrate.state(db)).status == "unversioned"
        await migrate.upgrade(db)
        assert (await migrate.state(db)).status == "current"
        assert await _diff(db, metadata) == []
    finally:
        await db.close()


async def test_the_baseline_revision_is_the_old_release_schema(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        await migrate.upgrade(db, migrate.BASELINE)
        assert await _diff(db, old.metadata) == []
        assert (await migrate.state(db)).status == "behind"
        with pytest.raises(migrate.SchemaError, match=r"revision 0001; this Portico needs .*portico db upgrade"):
            await db.create_schema()
    finally:
        await db.close()


async def test_models_and_migrations_agree_and_a_missing_revision_is_caught(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        await db.create_schema()  # an empty database: start-up runs every revision
        assert (await migrate.state(db)).status == "current"
        assert await _diff(db, metadata) == []
        # A column (and an index) added to a model without a revision is a difference the check reports.
        changed = MetaData()
        for t in metadata.tables.values():
            t.to_metadata(changed)
        changed.tables["traces"].append_column(Column("added_later", String(20), nullable=True))
        Index("ix_added_later", changed.tables["traces"].c.added_later)
        kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in await _diff(db, changed)}
        assert {"add_column", "add_index"} <= kinds
    finally:
        await db.close()


async def test_workers_starting_together_on_an_empty_database_create_it_once(empty_url: str) -> None:
    dbs = [Database(empty_url) for _ in range(4)]
    try:
        await asyncio.gather(*(d.create_schema() for d in dbs))
        assert {(await migrate.state(d)).status for d in dbs} == {"current"}
    finally:
        for d in dbs:
            await d.close()


async def test_a_revision_this_code_does_not_know_is_refused(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        await db.create_schema()
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        st = await migrate.state(db)
        assert st.status == "unknown"
        with pytest.raises(migrate.SchemaError, match="does not know"):
            await db.create_schema()
        with pytest.raises(migrate.SchemaError, match="does not know"):
            await migrate.upgrade(db)
    finally:
        await db.close()
