"""Data access for virtual keys (hashes only; the key itself is never stored)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from portico.storage.db import Database, api_keys


async def insert_key(db: Database, row: dict[str, Any]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(api_keys).values(**row))


async def all_keys(db: Database) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).mappings()]


async def key_by_hash(db: Database, key_hash: str) -> dict[str, Any] | None:
    async with db.engine.connect() as conn:
        r = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).mappings().first()
    return dict(r) if r else None


async def key_by_id(db: Database, key_id: str) -> dict[str, Any] | None:
    async with db.engine.connect() as conn:
        r = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings().first()
    return dict(r) if r else None


async def update_key(db: Database, key_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
    async with db.engine.begin() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))
    return await key_by_id(db, key_id)
