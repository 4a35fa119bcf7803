"""``portico db`` and ``serve`` against databases in every state, as a user runs them (real processes, SQLite and
the real PostgreSQL): an empty database is created at start-up; one from the last release before migrations makes
``serve`` refuse, with the command to run, until ``portico db upgrade``; ``portico db purge`` applies retention."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml
from sqlalchemy import create_engine, func, insert, select

from tests.support import VENV_BIN, free_port, portico_server
from tests.unit import schema_632235f as old

PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(params=["sqlite", "pg"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/portico.db"
        return
    import asyncio

    name = "portico_dbcli_" + uuid.uuid4().hex[:8]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{PG}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _sync(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")  # psycopg: the sync driver already installed


def _config(katan: str, url: str, tmp: Path) -> dict:
    return {
        "state_dir": str(tmp / "state"),
        "storage": {"url": url},
        "logging": {"level": "WARNING"},
        "models": [{"name": "echo", "deployments": [{"provider": "openai", "model": "echo",
                                                     "base_url": f"{katan}/v1", "api_key": "sk-test"}]}],
    }  # fmt: skip


def portico(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "portico"), *args], capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_an_old_release_database_until_db_upgrade(katan: str, db_url: str, tmp_path: Path) -> None:
    engine = create_engine(_sync(db_url))
    old.metadata.create_all(engine)  # what the last release's start-up made
    with engine.begin() as conn:
        conn.execute(insert(old.api_keys).values(id="k1", name="kept", key_hash="h" * 64, key_prefix="pk-",
                                                 created_at=time.time()))  # fmt: skip
    cfg_path = tmp_path / "portico.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(katan, db_url, tmp_path)))

    refused = portico("serve", "-c", str(cfg_path), "--port", str(free_port()), timeout=60)
    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert "created before schema migrations existed" in said and "run `portico db upgrade`" in said
    assert "Traceback" not in refused.stderr
    assert "password" not in refused.stderr

    behind = portico("db", "current", "-c", str(cfg_path), "--json")
    assert behind.returncode == 1 and json.loads(behind.stdout)["status"] == "unversioned"

    up = portico("db", "upgrade", "-c", str(cfg_path))
    assert up.returncode == 0, up.stderr
    assert "unversioned (before migrations) -> 0003" in up.stdout
    now = portico("db", "current", "-c", str(cfg_path), "--json")
    assert now.returncode == 0 and json.loads(now.stdout)["status"] == "current"
    assert "already at" in portico("db", "upgrade", "-c", str(cfg_path)).stdout

    with portico_server(_config(katan, db_url, tmp_path), tmp_path) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
    with engine.connect() as conn:
        assert conn.execute(select(old.api_keys.c.name)).scalar_one() == "kept"
    engine.dispose()


def test_make_run_on_a_fresh_machine_needs_no_command(katan: str, db_url: str, tmp_path: Path) -> None:
    """An empty database (a new SQLite file, a new PostgreSQL database) gets the schema at start-up."""
    with portico_server(_config(katan, db_url, tmp_path), tmp_path) as url:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=body)
        assert r.status_code == 200
    cfg_path = tmp_path / "portico.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(katan, db_url, tmp_path)))
    assert portico("db", "current", "-c", str(cfg_path)).returncode == 0


def test_db_purge_applies_retention(katan: str, db_url: str, tmp_path: Path) -> None:
    cfg = _config(katan, db_url, tmp_path)
    cfg_path = tmp_path / "portico.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert portico("db", "upgrade", "-c", str(cfg_path)).returncode == 0
    from portico.storage.db import traces

    engine = create_engine(_sync(db_url))
    day = 86400
    with engine.begin() as conn:
        conn.execute(insert(traces), [{"request_id": f"r{i}", "ts": time.time() - (i % 2) * 60 * day, "day": "d",
                                       "endpoint": "chat", "status": 200, "latency_ms": 0.0, "cost_usd": 0.0,
                                       "prompt_tokens": 0, "completion_tokens": 0} for i in range(10)])  # fmt: skip
    done = portico("db", "purge", "-c", str(cfg_path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"]["traces"] == 5  # the 60-day-old half (traces_days: 30 by default)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(traces)).scalar_one() == 5
    engine.dispose()


def test_serve_purges_in_the_background_while_answering(katan: str, db_url: str, tmp_path: Path) -> None:
    cfg = _config(katan, db_url, tmp_path)
    cfg["retention"] = {"traces_days": 30, "interval_seconds": 0.5, "batch_size": 50}
    cfg_path = tmp_path / "portico.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert portico("db", "upgrade", "-c", str(cfg_path)).returncode == 0
    from portico.storage.db import traces

    engine = create_engine(_sync(db_url))
    old_ts = time.time() - 45 * 86400
    with engine.begin() as conn:
        conn.execute(insert(traces), [{"request_id": f"old{i}", "ts": old_ts, "day": "d", "endpoint": "chat",
                                       "status": 200, "latency_ms": 0.0, "cost_usd": 0.0, "prompt_tokens": 0,
                                       "completion_tokens": 0} for i in range(600)])  # fmt: skip

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(traces).where(traces.c.ts < time.time() - 86400)) \
                .scalar_one()  # fmt: skip

    with portico_server(cfg, tmp_path) as url:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        deadline = time.monotonic() + 30
        answered = 0
        while count() and time.monotonic() < deadline:
            assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200
            answered += 1
        assert count() == 0 and answered >= 1
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200
    with engine.connect() as conn:  # the requests' own (new) traces are kept
        assert conn.execute(select(func.count()).select_from(traces)).scalar_one() >= answered
    engine.dispose()
