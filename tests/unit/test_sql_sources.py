"""SQL sources on real databases: SQLite (a file), PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306), each a
fresh database per test, dropped afterwards. Introspection, read-only execution (the database refuses writes even
when the validator is bypassed), statement timeouts, the row cap, and refresh after a schema change. A server that
is not reachable skips its tests with the reason (``make services`` starts both)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portico.config.sql import SqlSourceConfig
from portico.context.sql.engine import SqlEngine, SqlExecutionError
from portico.context.sql.service import SqlSource
from portico.context.sql.validate import Rejection

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIA = dict(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=3)

DDL = [
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), city VARCHAR(50))",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total DECIMAL(10,2), "
    "FOREIGN KEY (customer_id) REFERENCES customers(id))",
    "CREATE TABLE secrets (id INTEGER PRIMARY KEY, token VARCHAR(50))",
]
CITIES = ["Oslo", "Lima", "Pune", "Kyiv", "Cork"]


def seed() -> list[str]:
    rows = [f"INSERT INTO customers VALUES ({i}, 'c{i}', '{CITIES[i % 5]}')" for i in range(1, 51)]
    rows += [f"INSERT INTO orders VALUES ({i}, {1 + i % 50}, {i * 1.5})" for i in range(1, 201)]
    rows.append("INSERT INTO secrets VALUES (1, 'hunter2')")
    return rows


@dataclass
class Db:
    kind: str
    url: str
    admin: Callable[[str], None]  # runs DDL/DML as the owner (not through Portico)


def _sqlite(tmp: Path) -> Iterator[Db]:
    path = tmp / "shop.db"
    conn = sqlite3.connect(path)
    for s in DDL + seed():
        conn.execute(s)
    conn.commit()

    def admin(sql: str) -> None:
        conn.execute(sql)
        conn.commit()

    yield Db("sqlite", f"sqlite:///{path}", admin)
    conn.close()


def _postgres() -> Iterator[Db]:
    psycopg = pytest.importorskip("psycopg")
    try:
        root = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({e}); `make services` starts it")
    name = "portico_sql_" + uuid.uuid4().hex[:8]
    root.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    conn = psycopg.connect(url, autocommit=True)
    for s in DDL + seed():
        conn.execute(s)
    try:
        yield Db("postgres", url, lambda sql: conn.execute(sql) and None)
    finally:
        conn.close()
        root.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        root.close()


def _mariadb() -> Iterator[Db]:
    pymysql = pytest.importorskip("pymysql")
    try:
        root = pymysql.connect(**MARIA, autocommit=True)
    except pymysql.err.OperationalError as e:
        pytest.skip(f"MariaDB is not reachable at 127.0.0.1:3306 ({e}); `make services` starts it")
    name = "portico_sql_" + uuid.uuid4().hex[:8]
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    conn = pymysql.connect(**MARIA, database=name, autocommit=True)

    def admin(sql: str) -> None:
        with conn.cursor() as cur:
            cur.execute(sql)

    for s in DDL + seed():
        admin(s)
    try:
        yield Db("mariadb", f"mysql+pymysql://root@127.0.0.1:3306/{name}", admin)
    finally:
        conn.close()
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE `{name}`")
        root.close()


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    gen = {"sqlite": lambda: _sqlite(tmp_path), "postgres": _postgres, "mariadb": _mariadb}[request.param]()
    yield next(gen)
    next(gen, None)


def make_source(db: Db, tmp: Path, **kw: object) -> SqlSource:
    cfg = SqlSourceConfig.model_validate({"name": "shop", "url": db.url, "tables": ["customers", "orders"], **kw})
    return SqlSource(cfg, tmp / "state", None)


async def test_introspection(db: Db, tmp_path: Path) -> None:
    src = make_source(db, tmp_path, sample_values=2)
    await src.open()
    s = src.schema
    assert s is not None and set(s.tables) == {"customers", "orders"}  # the allow-list, not secrets
    cust, orders = s.tables["customers"], s.tables["orders"]
    assert cust.row_count == 50 and orders.row_count == 200
    assert [c.name for c in cust.columns if c.primary_key] == ["id"]
    assert [(f.columns, f.table, f.referred) for f in orders.foreign_keys] == [(["customer_id"], "customers", ["id"])]
    city = next(c for c in cust.columns if c.name == "city")
    assert len(city.samples) == 2 and set(city.samples) <= set(CITIES)
    await src.close()
    # A second source instance reads the cached schema instead of introspecting again.
    again = make_source(db, tmp_path)
    await again.open()
    assert again.schema is not None and again.schema.refreshed_at == s.refreshed_at
    await again.close()


async def test_run_validated_select_and_blocked_write(db: Db, tmp_path: Path) -> None:
    src = make_source(db, tmp_path)
    checked, rows = await src.run(
        "SELECT c.city, COUNT(*) AS n FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE c.city LIKE '%o%' GROUP BY c.city ORDER BY c.city"
    )
    assert rows.columns == ["city", "n"] and [r[0] for r in rows.rows] == ["Cork", "Oslo"]
    assert checked.tables == ("customers", "orders")
    for bad, rule in [("DELETE FROM customers", "write"), ("SELECT token FROM secrets", "table_not_allowed")]:
        with pytest.raises(Rejection) as e:
            await src.run(bad)
        assert e.value.rule == rule
    await src.close()


WRITES = ["DELETE FROM customers", "UPDATE customers SET name = 'x'", "INSERT INTO secrets VALUES (2, 'x')",
          "CREATE TABLE t (a INTEGER)", "DROP TABLE secrets"]  # fmt: skip


async def test_database_refuses_writes_even_past_the_validator(db: Db) -> None:
    """Defence in depth: the engine alone (no validator) runs in a read-only transaction/connection."""
    engine = SqlEngine(db.url, 5.0, 10)
    for sql in WRITES:
        with pytest.raises(SqlExecutionError) as e:
            await engine.execute(sql)
        assert e.value.rule == "database_error"
        assert "read" in e.value.message.lower(), e.value.message  # read-only / readonly / READ ONLY
    rows = await engine.execute("SELECT COUNT(*) FROM secrets")
    assert rows.rows == [[1]]  # nothing was deleted
    engine.close()


async def test_timeout(db: Db, tmp_path: Path) -> None:
    src = make_source(db, tmp_path, timeout=0.5)
    # Valid SQL that would run for minutes: 200^4 combinations. The database stops it at the source's timeout.
    with pytest.raises(SqlExecutionError) as e:
        await src.run("SELECT COUNT(*) FROM orders a, orders b, orders c, orders d WHERE a.total + b.total > c.total")
    assert e.value.rule == "timeout"
    _, rows = await src.run("SELECT COUNT(*) FROM customers")  # the connection is usable afterwards
    assert rows.rows == [[50]]
    await src.close()


async def test_row_cap(db: Db, tmp_path: Path) -> None:
    src = make_source(db, tmp_path, max_rows=10)
    checked, rows = await src.run("SELECT id FROM orders ORDER BY id")
    assert checked.limited and len(rows.rows) == 10 and rows.truncated
    _, small = await src.run("SELECT id FROM orders ORDER BY id LIMIT 3")
    assert len(small.rows) == 3 and not small.truncated
    # The fetch itself is capped too, whatever the SQL says.
    raw = await src.engine.execute("SELECT id FROM orders", max_rows=7)
    assert len(raw.rows) == 7 and raw.truncated
    await src.close()


async def test_refresh_after_schema_change(db: Db, tmp_path: Path) -> None:
    src = make_source(db, tmp_path)
    await src.open()
    with pytest.raises(Rejection) as e:
        src.validate("SELECT email FROM customers")
    assert e.value.rule == "unknown_column"
    db.admin("ALTER TABLE customers ADD COLUMN email VARCHAR(80)")
    db.admin("UPDATE customers SET email = 'a@example.org' WHERE id = 1")
    info = await src.refresh()
    assert "email" in info.tables["customers"].column_names()
    _, rows = await src.run("SELECT email FROM customers WHERE id = 1")
    assert rows.rows == [["a@example.org"]]
    await src.close()
