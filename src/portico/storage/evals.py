"""Datasets (versioned by content hash) and eval runs with one result row per item x variant x repeat.

A result row is written as soon as its cell finishes, so an interrupted run resumes by skipping the cells it
already has (the primary key is the cell). Both dialects share every statement (SQLAlchemy Core).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, Text, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from portico.storage.db import Database, metadata

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("items", Integer, nullable=False),
    Column("source", Text, nullable=True),  # a file path or the trace query it was built from
)

dataset_items = Table(
    "dataset_items",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("item", JSON, nullable=False),
)

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("run_id", String(120), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("status", String(16), nullable=False),  # running | done
    Column("dataset", String(200), nullable=False),
    Column("dataset_version", Integer, nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("summary", JSON(none_as_null=True), nullable=True),
)
Index("ix_eval_runs_name", eval_runs.c.name, eval_runs.c.created_at)

eval_results = Table(
    "eval_results",
    metadata,
    Column("run_id", String(120), primary_key=True),
    Column("item_id", String(200), primary_key=True),
    Column("variant", String(200), primary_key=True),
    Column("repeat", Integer, primary_key=True),
    Column("ts", Float, nullable=False),
    Column("output", JSON(none_as_null=True), nullable=True),  # text, tool calls, retrieved and cited ids
    Column("scores", JSON, nullable=False),  # scorer name → value in [0, 1] (or null when not applicable)
    Column("details", JSON(none_as_null=True), nullable=True),  # judges' reasons, parse failures
    Column("cost_usd", Float, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("tokens", Integer, nullable=True),
    Column("error", Text, nullable=True),
)

eval_pairs = Table(
    "eval_pairs",
    metadata,
    Column("run_id", String(120), primary_key=True),
    Column("judge", String(200), primary_key=True),
    Column("item_id", String(200), primary_key=True),
    Column("a", String(200), primary_key=True),
    Column("b", String(200), primary_key=True),
    Column("winner", String(8), nullable=False),  # a | b | tie
    Column("details", JSON(none_as_null=True), nullable=True),
)


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}


# ---- datasets ----
async def register_dataset(db: Database, name: str, digest: str, items: list[dict[str, Any]],
                           source: str | None) -> int:  # fmt: skip
    """The version holding exactly these items: the existing one when the hash matches, else a new one."""
    async with db.engine.connect() as conn:
        found = (await conn.execute(select(datasets.c.version).where(
            (datasets.c.name == name) & (datasets.c.hash == digest)))).scalar()  # fmt: skip
        if found is not None:
            return int(found)
        latest = (await conn.execute(select(func.max(datasets.c.version)).where(datasets.c.name == name))).scalar()
    version = int(latest or 0) + 1
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(datasets), [{"name": name, "version": version, "hash": digest,
                                                   "created_at": time.time(), "items": len(items),
                                                   "source": source}])  # fmt: skip
            if items:
                await conn.execute(insert(dataset_items), [{"name": name, "version": version, "idx": i, "item": it}
                                                           for i, it in enumerate(items)])  # fmt: skip
    except IntegrityError:  # another process registered the same name concurrently: look again
        return await register_dataset(db, name, digest, items, source)
    return version


async def list_datasets(db: Database) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(datasets).order_by(datasets.c.name, datasets.c.version.desc()))).mappings()
        return [_plain(r) for r in rows.all()]


async def dataset_items_of(db: Database, name: str, version: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    async with db.engine.connect() as conn:
        if version is None:
            version = (await conn.execute(select(func.max(datasets.c.version)).where(datasets.c.name == name))).scalar()
            if version is None:
                raise KeyError(name)
        rows = (await conn.execute(select(dataset_items.c.item).where(
            (dataset_items.c.name == name) & (dataset_items.c.version == version))
            .order_by(dataset_items.c.idx)))  # fmt: skip
        items = [r[0] for r in rows.all()]
        exists = (await conn.execute(select(datasets.c["items"]).where(
            (datasets.c.name == name) & (datasets.c.version == version)))).scalar()  # fmt: skip
    if exists is None:
        raise KeyError(f"{name} v{version}")
    return int(version), items


# ---- runs ----
async def get_run(db: Database, run_id: str) -> dict[str, Any] | None:
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(eval_runs).where(eval_runs.c.run_id == run_id))).mappings().first()
    return _plain(row) if row is not None else None


async def create_run(db: Database, row: dict[str, Any]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(eval_runs), [row])


async def finish_run(db: Database, run_id: str, summary: dict[str, Any]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(update(eval_runs).where(eval_runs.c.run_id == run_id).values(
            status="done", finished_at=time.time(), summary=summary))  # fmt: skip


async def list_runs(db: Database, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    cols = [c for c in eval_runs.c if c.name != "spec"]
    stmt = select(*cols).order_by(eval_runs.c.created_at.desc()).limit(limit)
    if name:
        stmt = stmt.where(eval_runs.c.name == name)
    async with db.engine.connect() as conn:
        return [_plain(r) for r in (await conn.execute(stmt)).mappings().all()]


async def previous_run(db: Database, name: str, before: float) -> dict[str, Any] | None:
    """The newest finished run of the same eval before this one: the default baseline of a regression gate."""
    stmt = (select(eval_runs).where((eval_runs.c.name == name) & (eval_runs.c.status == "done")
                                    & (eval_runs.c.created_at < before))
            .order_by(eval_runs.c.created_at.desc()).limit(1))  # fmt: skip
    async with db.engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    return _plain(row) if row is not None else None


async def save_result(db: Database, row: dict[str, Any]) -> None:
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(eval_results), [row])
    except IntegrityError:
        pass  # two writers of one cell (a resumed run racing a stale one): the first stays


async def results_of(db: Database, run_id: str) -> list[dict[str, Any]]:
    stmt = select(eval_results).where(eval_results.c.run_id == run_id).order_by(
        eval_results.c.item_id, eval_results.c.variant, eval_results.c.repeat)  # fmt: skip
    async with db.engine.connect() as conn:
        return [_plain(r) for r in (await conn.execute(stmt)).mappings().all()]


async def save_pair(db: Database, row: dict[str, Any]) -> None:
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(eval_pairs), [row])
    except IntegrityError:
        pass


async def pairs_of(db: Database, run_id: str) -> list[dict[str, Any]]:
    stmt = select(eval_pairs).where(eval_pairs.c.run_id == run_id).order_by(eval_pairs.c.item_id)
    async with db.engine.connect() as conn:
        return [_plain(r) for r in (await conn.execute(stmt)).mappings().all()]
