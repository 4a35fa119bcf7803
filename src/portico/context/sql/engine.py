"""Connections to a SQL source and read-only execution — the defence in depth behind the validator.

Every statement runs in a read-only transaction (PostgreSQL ``SET TRANSACTION READ ONLY`` on a connection whose
default is read-only too; MariaDB/MySQL ``SET SESSION TRANSACTION READ ONLY``; SQLite opened ``mode=ro`` with
``PRAGMA query_only``), under a statement timeout the database enforces (``statement_timeout``,
``max_statement_time``/``max_execution_time``, a SQLite progress handler), is rolled back afterwards, and at most
``max_rows + 1`` rows are fetched. Drivers are synchronous (psycopg, PyMySQL, sqlite3): each call runs in a worker
thread so the event loop never waits on a database.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import sqlite3
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

# SQLAlchemy backend name → sqlglot dialect.
DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql",
            "sqlite": "sqlite"}  # fmt: skip


class SqlExecutionError(Exception):
    """The database refused or failed the query; ``rule`` is ``timeout`` or ``database_error``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(slots=True)
class Rows:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool  # more rows existed than max_rows
    seconds: float


def normalize_url(url: str) -> URL:
    """The URL with the synchronous driver this module uses (``postgresql://`` → psycopg, ``mysql://`` → PyMySQL,
    ``postgresql+asyncpg://`` and ``sqlite+aiosqlite://`` → their sync drivers)."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    backend = u.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database '{backend}': use sqlite, postgresql or mysql/mariadb")
    return u.set(drivername=_DRIVERS[backend])


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() and abs(v) < 2**53 else float(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, uuid.UUID):
        return str(v)
    return str(v)


class SqlEngine:
    def __init__(self, url: str, timeout: float, max_rows: int) -> None:
        self.url = normalize_url(url)
        self.backend = self.url.get_backend_name()
        self.dialect = DIALECTS[self.backend]
        self.timeout = timeout
        self.max_rows = max_rows
        self.engine = self._create()

    def _create(self) -> Engine:
        if self.backend == "sqlite":
            path = self.url.database or ""
            if not path or path == ":memory:":
                raise ValueError("a sqlite SQL source needs a database file (sqlite:///path/to.db)")
            uri = f"file:{quote(path)}?mode=ro"

            def connect() -> sqlite3.Connection:  # read-only at the file level: no write can even start
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=self.timeout)
                conn.execute("PRAGMA query_only = ON")
                return conn

            return create_engine("sqlite://", creator=connect, poolclass=NullPool)
        if self.backend == "postgresql":
            ms = int(self.timeout * 1000)
            opts = f"-c default_transaction_read_only=on -c statement_timeout={ms}"
            return create_engine(self.url, connect_args={"options": opts, "connect_timeout": 10},
                                 pool_pre_ping=True, pool_size=4)  # fmt: skip
        engine = create_engine(self.url, connect_args={"connect_timeout": 10}, pool_pre_ping=True, pool_size=4,
                               pool_recycle=3600)  # fmt: skip
        timeout = self.timeout

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn: Any, _record: Any) -> None:
            mariadb = "mariadb" in dbapi_conn.get_server_info().lower()
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION READ ONLY")
                if mariadb:
                    cur.execute(f"SET SESSION max_statement_time = {float(timeout):.3f}")
                else:
                    cur.execute(f"SET SESSION max_execution_time = {int(timeout * 1000)}")

        return engine

    def _guard(self, raw: Any) -> None:
        """Per-statement read-only and timeout settings (the connection-level ones are set at connect)."""
        if self.backend == "postgresql":
            with raw.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(f"SET LOCAL statement_timeout = {int(self.timeout * 1000)}")
        elif self.backend == "sqlite":
            deadline = time.monotonic() + self.timeout
            # Called every 10k virtual-machine steps; a non-zero return interrupts the statement.
            raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)

    def run(self, sql: str, max_rows: int | None = None) -> Rows:
        """Run one validated SELECT (blocking; see ``execute``). The DB-API cursor is used directly: SQLAlchemy
        would hand PyMySQL an empty parameter tuple, and PyMySQL then %-formats the SQL (a LIKE '%x' breaks)."""
        cap = self.max_rows if max_rows is None else max_rows
        t0 = time.perf_counter()
        dbapi_error = self.engine.dialect.dbapi.Error  # type: ignore[union-attr]
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                try:
                    self._guard(raw)
                    cur = raw.cursor()
                    try:
                        cur.execute(sql)
                        columns = [d[0] for d in cur.description or ()]
                        fetched = cur.fetchmany(cap + 1) if cur.description else []
                    finally:
                        cur.close()
                finally:
                    raw.rollback()
        except dbapi_error as e:
            raise self._error(e) from None
        except SQLAlchemyError as e:
            raise SqlExecutionError("database_error", str(e).splitlines()[0][:500]) from None
        rows = [[jsonable(v) for v in r] for r in fetched[:cap]]
        return Rows(columns, rows, len(fetched) > cap, time.perf_counter() - t0)

    def _error(self, orig: Exception) -> SqlExecutionError:
        text = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:500]
        low = text.lower()
        code = orig.args[0] if self.backend in ("mysql", "mariadb") and orig.args else None
        timed_out = (
            (self.backend == "postgresql" and getattr(orig, "sqlstate", None) == "57014")
            or code in (1969, 3024)  # MariaDB max_statement_time, MySQL max_execution_time
            or (self.backend == "sqlite" and "interrupted" in low)
        )
        if timed_out:
            return SqlExecutionError("timeout", f"the query ran longer than the source's timeout ({self.timeout:g} s)")
        return SqlExecutionError("database_error", text)

    async def execute(self, sql: str, max_rows: int | None = None) -> Rows:
        return await asyncio.to_thread(self.run, sql, max_rows)

    def close(self) -> None:
        self.engine.dispose()
