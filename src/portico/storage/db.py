"""The database: one async engine, the tables, and the schema check at start-up (``migrate``: Alembic revisions).

SQLite (``sqlite+aiosqlite:///.portico/portico.db``) is the embedded default; PostgreSQL
(``postgresql+asyncpg://…``) is the scale-out store. Only SQLAlchemy Core is used, so both dialects share
every statement.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),  # shown in lists so people can tell keys apart
    Column("models", JSON, nullable=True),  # null: every model
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("budget_usd", Float, nullable=True),
    Column("budget_period", String(8), nullable=True),  # day | month | total
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("tools", JSON, nullable=True),  # tool names/globs it may call; null: read-only tools only
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("day", String(10), nullable=False),  # UTC YYYY-MM-DD, precomputed so grouping is dialect-free
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("application", String(200), nullable=True),
    Column("deployment", String(300), nullable=True),
    Column("endpoint", String(40), nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(60), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=1),
)
Index("ix_usage_ts", usage.c.ts)
Index("ix_usage_key_ts", usage.c.key_id, usage.c.ts)

traces = Table(
    "traces",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("ts", Float, nullable=False),  # when the request started (epoch seconds)
    Column("day", String(10), nullable=False),
    Column("endpoint", String(40), nullable=False),
    Column("key_name", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("application", String(200), nullable=True),
    Column("deployment", String(300), nullable=True),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("input", JSON(none_as_null=True), nullable=True),  # per tracing.content; null when not stored
    Column("output", JSON(none_as_null=True), nullable=True),
)
Index("ix_traces_ts", traces.c.ts)

spans = Table(
    "spans",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_id", String(16), nullable=True),
    Column("name", String(200), nullable=False),
    Column("start_ms", Float, nullable=False),  # offset from the trace's start
    Column("duration_ms", Float, nullable=False),
    Column("status", String(8), nullable=False),  # ok | error
    Column("attributes", JSON, nullable=False),
)


def normalise_url(url: str) -> str:
    """Accept plain ``sqlite:///…`` / ``postgresql://…`` and pick the async drivers."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(self.url, pool_pre_ping=self.dialect != "sqlite")
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def create_schema(self) -> None:
        """Create the schema in an empty database; raise ``SchemaError`` unless an existing one is at head
        (``portico db upgrade`` migrates it: existing data is never altered at start-up)."""
        from portico.storage.migrate import ensure  # alembic loads only where a database opens

        await ensure(self)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL: readers (admin queries) never block the usage writer; NORMAL sync is safe with WAL.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
