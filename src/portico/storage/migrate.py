"""Versioned schema: the Alembic migrations in ``portico/storage/migrations``, run from code (no alembic.ini).

A database is in one of five states (``SchemaState.status``):

- ``empty``: no Portico table at all (a new SQLite file, a new PostgreSQL database). Start-up creates the schema
  by running every migration: nothing exists that could be lost, so ``make run`` needs no extra command.
- ``current``: at the newest revision this code ships. Start-up goes on.
- ``behind``: an older revision, or ``unversioned``: tables made before migrations existed (``create_all``).
  Start-up refuses (``SchemaError``) and tells the user to run ``portico db upgrade``: an existing database is
  never altered behind its owner's back, on SQLite as on PostgreSQL (a backup first is their call).
- ``unknown``: a revision this code does not know (a newer Portico migrated it). Refused too.

Concurrent starters (workers, replicas) serialise on a lock: a PostgreSQL advisory lock held in the migrating
transaction, a lock file beside a SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK = 0x706F7274  # "port": the advisory lock id every Portico process migrates under
BASELINE = "0001"  # the schema of the last release before migrations
# The baseline's tables: a database holding any of them is a Portico database, not an empty one.
BASELINE_TABLES = frozenset({"api_keys", "usage", "traces", "spans", "handoffs"})


class Database(Protocol):  # storage.db.Database (not imported: it calls into this module)
    url: str
    dialect: str
    engine: AsyncEngine


class SchemaError(RuntimeError):
    """The database is not at the schema this code needs; the message says what to run."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # the revision recorded in alembic_version
    head: str
    known: bool  # the recorded revision is one of ours
    tables: tuple[str, ...]  # the baseline tables present

    @property
    def status(self) -> str:
        if self.current is None:
            return "unversioned" if self.tables else "empty"
        if not self.known:
            return "unknown"
        return "current" if self.current == self.head else "behind"


def alembic_config(connection: Connection | None = None, target: MetaData | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = target
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def only_tables_of(target: MetaData) -> Callable[[str | None, str, Any], bool]:
    """An ``include_name`` filter: the same database may hold other tables (pgvector stores, the semantic cache)."""
    return lambda name, type_, _parent: type_ != "table" or name in target.tables


def _state(conn: Connection, scripts: ScriptDirectory) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    known = current is None or _known(scripts, current)
    names = set(inspect(conn).get_table_names())
    return SchemaState(current, scripts.get_current_head() or "", known, tuple(sorted(names & BASELINE_TABLES)))


def _known(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an id it has never seen
        return False


def _upgrade(conn: Connection, revision: str) -> None:
    command.upgrade(alembic_config(conn), revision)


@contextlib.asynccontextmanager
async def _locked(db: Database) -> AsyncIterator[Connection | Any]:
    """A transaction on ``db`` that only one process at a time holds while it inspects or migrates."""
    lock_file = None
    if db.dialect == "sqlite":
        path = make_url(db.url).database
        if path and path != ":memory:":
            lock_file = open(path + ".migrate-lock", "a+")  # noqa: SIM115 (held for the whole block)
            await asyncio.to_thread(fcntl.flock, lock_file.fileno(), fcntl.LOCK_EX)
    try:
        async with db.engine.begin() as conn:
            if db.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            yield conn
    finally:
        if lock_file is not None:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
            lock_file.close()


async def state(db: Database) -> SchemaState:
    scripts = await asyncio.to_thread(script)
    async with db.engine.connect() as conn:
        return await conn.run_sync(_state, scripts)


async def upgrade(db: Database, revision: str = "head") -> tuple[SchemaState, SchemaState]:
    """Run the migrations up to ``revision``; returns the state before and after. A database made before
    migrations existed runs them all: each creates only the tables, columns and indexes still missing (the old
    start-up made some of them, depending on the version that last ran)."""
    scripts = await asyncio.to_thread(script)
    async with _locked(db) as conn:
        before = await conn.run_sync(_state, scripts)
        if before.status == "unknown":
            raise SchemaError(_message(db, before))
        await conn.run_sync(_upgrade, revision)
        after = await conn.run_sync(_state, scripts)
    return before, after


async def ensure(db: Database) -> SchemaState:
    """Start-up: create the schema in an empty database, go on at head, refuse anything else."""
    scripts = await asyncio.to_thread(script)
    async with _locked(db) as conn:
        st = await conn.run_sync(_state, scripts)
        if st.status == "empty":
            await conn.run_sync(_upgrade, "head")
            st = await conn.run_sync(_state, scripts)
    if st.status != "current":
        raise SchemaError(_message(db, st))
    return st


def redacted_url(db: Database) -> str:
    return make_url(db.url).render_as_string(hide_password=True)


def _message(db: Database, st: SchemaState) -> str:
    where = f"The database {redacted_url(db)}"
    if st.status == "unknown":
        return (f"{where} is at schema revision {st.current}, which this Portico does not know (a newer version "
                f"migrated it; this one needs {st.head}). Run the newer Portico, or restore a backup.")  # fmt: skip
    if st.status == "unversioned":
        what = "was created before schema migrations existed"
    else:
        what = f"is at schema revision {st.current}; this Portico needs {st.head}"
    return (f"{where} {what}. Back it up if you wish, then run `portico db upgrade` (with the same --config) "
            "and start again.")  # fmt: skip


def compare(conn: Connection, target: MetaData) -> list[Any]:
    """Differences between ``target`` (the models) and the database (after the migrations): empty when they agree."""
    from alembic.autogenerate import compare_metadata

    ctx = MigrationContext.configure(conn, opts={"include_name": only_tables_of(target), "compare_type": True})
    return compare_metadata(ctx, target)


async def revision(message: str, db: Database, target: MetaData) -> str:
    """For developers: write the next revision (``000N_<message>.py``), autogenerated from the models
    (``target``) against ``db`` at head; returns its path."""
    scripts = await asyncio.to_thread(script)
    rev_id = f"{int(scripts.get_current_head() or 0) + 1:04d}"

    def run(conn: Connection) -> str:
        made = command.revision(alembic_config(conn, target), message=message, autogenerate=True, rev_id=rev_id)
        return str(made[0].path if isinstance(made, list) else made.path)  # type: ignore[union-attr]

    async with db.engine.begin() as conn:
        return await conn.run_sync(run)
