"""Stored responses (``store: true`` on ``/v1/responses``): what ``previous_response_id``, ``GET``, ``DELETE`` and
``input_items`` read. A row belongs to the key that created it; every read and delete is filtered by that owner,
so another key's id looks like one that does not exist.

Each row keeps the response object, its own input items, and ``context``: the conversation the next turn
continues from (the previous context, this input, this output). A follow-up therefore reads one row, and deleting
an earlier response does not break later ones. Rows expire after the configured retention; expired rows are
invisible at once and purged at most every ``purge_every`` seconds, by whichever write comes first.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column, Float, Index, String, Table, delete, insert, or_, select

from portico.storage.db import Database, metadata

responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),  # key id, "master", or "anonymous" when keys are off
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),  # null: kept until deleted
    Column("response", JSON, nullable=False),
    Column("input_items", JSON, nullable=False),
    Column("context", JSON, nullable=False),
)
Index("ix_responses_expires", responses.c.expires_at)


class ResponseStore:
    def __init__(self, db: Database, retention_seconds: float | None, purge_every: float = 600.0) -> None:
        self.db = db
        self.retention = retention_seconds
        self.purge_every = purge_every
        self._next_purge = 0.0

    async def save(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]],
                   context: list[dict[str, Any]]) -> None:  # fmt: skip
        now = time.time()
        row = {"id": response["id"], "owner": owner, "created_at": now,
               "expires_at": now + self.retention if self.retention else None,
               "response": response, "input_items": input_items, "context": context}  # fmt: skip
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(responses).values(**row))
            if self.retention and now >= self._next_purge:
                self._next_purge = now + self.purge_every
                await conn.execute(delete(responses).where(responses.c.expires_at < now))

    async def get(self, owner: str, response_id: str) -> dict[str, Any] | None:
        """The row (response, input_items, context) if it exists, is the owner's and has not expired."""
        stmt = select(responses.c.response, responses.c.input_items, responses.c.context).where(
            *_visible(owner, response_id)
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return {str(k): v for k, v in row.items()} if row else None

    async def delete(self, owner: str, response_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(responses).where(*_visible(owner, response_id)))
        return bool(result.rowcount)


def _visible(owner: str, response_id: str) -> tuple[Any, ...]:
    return (
        responses.c.id == response_id,
        responses.c.owner == owner,
        or_(responses.c.expires_at.is_(None), responses.c.expires_at >= time.time()),
    )
