"""Session fixtures: two real llm-katan upstreams and one real Portico server (with the real local models)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import openai
import pytest
import yaml

from portico.storage.db import Database
from tests.support import VENV_BIN, free_port, katan_cmd, running


@pytest.fixture(scope="session")
def katan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llm-katan echo server speaking OpenAI, Anthropic, Gemini/Vertex and Azure formats."""
    tmp = tmp_path_factory.mktemp("katan")
    port = free_port()
    with running(katan_cmd(port, tmp), f"http://127.0.0.1:{port}/health", tmp / "katan.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def slow_katan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llm-katan that streams one chunk every 300 ms: long enough to disconnect mid-stream."""
    tmp = tmp_path_factory.mktemp("slow-katan")
    port = free_port()
    cmd = katan_cmd(port, tmp, "--itl-ms", "300", "--max-concurrent", "8")
    with running(cmd, f"http://127.0.0.1:{port}/health", tmp / "katan.log"):
        yield f"http://127.0.0.1:{port}"


def server_config(katan: str, slow_katan: str, self_url: str, dead: str, state_dir: str) -> dict:
    key = {"api_key": "sk-test"}
    return {
        "state_dir": state_dir,
        "logging": {"level": "INFO"},
        "models": [
            {"name": "local", "deployments": [{"provider": "local", "n_ctx": 2048}]},
            {"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]},
            {"name": "oai", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", **key}]},
            {"name": "claude", "deployments": [{"provider": "anthropic", "model": "echo", "base_url": katan, **key}]},
            {"name": "gem", "deployments": [{"provider": "gemini", "model": "echo", "base_url": katan, **key}]},
            {
                "name": "vtx",
                "deployments": [
                    {
                        "provider": "vertex",
                        "model": "echo",
                        "base_url": katan,
                        "project": "p1",
                        "location": "europe-west4",
                        **key,
                    }
                ],
            },
            {
                "name": "az",
                "deployments": [
                    {"provider": "azure", "model": "echo", "deployment": "echo-dep", "base_url": katan, **key}
                ],
            },
            {
                "name": "slow",
                "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{slow_katan}/v1", **key}],
            },
            {
                "name": "down",
                "deployments": [
                    {"provider": "openai", "model": "x", "base_url": f"{dead}/v1", **key, "timeouts": {"connect": 2}}
                ],
            },
            {"name": "gem-down", "deployments": [{"provider": "gemini", "model": "x", "base_url": dead, **key}]},
            {
                "name": "flaky",
                "deployments": [{"provider": "openai", "model": "x", "base_url": f"{dead}/v1", **key}],
                "fallbacks": ["oai"],
            },
            # OpenAI-compatible embeddings upstream: this very server's local embedder, reached over HTTP.
            {
                "name": "remote-embed",
                "type": "embedding",
                "deployments": [{"provider": "openai", "model": "local-embed", "base_url": f"{self_url}/v1", **key}],
            },
        ],
        "applications": [
            {"name": "helper", "model": "oai", "steps": [{"use": "system_prompt", "text": "You are terse."}]},
        ],
        "metrics": [{"name": "helpful", "type": "boolean"}],  # for /v1/feedback's documented example
    }


@pytest.fixture(scope="session")
def portico_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("portico")


@pytest.fixture(scope="session")
def portico(katan: str, slow_katan: str, portico_dir: Path) -> Iterator[str]:
    tmp = portico_dir
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    cfg = tmp / "portico.yaml"
    cfg.write_text(yaml.safe_dump(server_config(katan, slow_katan, url, dead, str(tmp / "state"))))
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(cfg), "--port", str(port)]
    # /readyz turns 200 only once the local GGUF and the embedder are loaded.
    with running(cmd, f"{url}/readyz", tmp / "portico.log", timeout=180):
        yield url


@pytest.fixture(scope="session")
def portico_log(portico: str, portico_dir: Path) -> Path:
    """Portico's own log (JSON lines on stderr) for this session."""
    return portico_dir / "portico.log"


@pytest.fixture
def client(portico: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{portico}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture
def aclient(portico: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{portico}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(params=["sqlite", "pg"])
async def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Portico's database on SQLite and on the real PostgreSQL at 127.0.0.1:5432 (a fresh database, dropped
    afterwards; ``make test`` starts the server if it is down)."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/store.db")
        await db.create_schema()
        yield db
        await db.close()
        return
    name = "portico_test_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    db = Database(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        await db.create_schema()
        yield db
    finally:
        await db.close()
        await admin.execute(f'DROP DATABASE "{name}"')
        await admin.close()
