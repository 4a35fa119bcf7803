"""Questions over SQL through a real ``portico serve`` and the real ``portico sql`` commands: the query endpoint
(SQL and question forms, blocked SQL as a 400 naming the rule, auth), and validate/train/refresh/query."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import VENV_BIN, portico_server
from tests.unit.test_sql_answer import ScriptedUpstream, shop_db

KEY = "sk-master-sql-test"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    yield up
    up.close()


def _config(tmp: Path, upstream: ScriptedUpstream) -> dict:
    return {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": KEY},
        "models": [{"name": "writer", "deployments": [{"provider": "openai", "model": "scripted",
                                                        "base_url": upstream.url, "api_key": "x"}]}],
        "sql_sources": [{"name": "shop", "url": shop_db(tmp), "tables": ["customers", "orders"], "max_rows": 5}],
    }  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("sql-e2e")
    with portico_server(_config(tmp, upstream), tmp) as url:
        yield url


def _post(url: str, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/sql_sources/shop/query", json=body, headers=headers, timeout=30)


def test_sql_form_returns_the_structured_result(server: str) -> None:
    r = _post(server, {"sql": "SELECT id, name FROM customers ORDER BY id"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["id", "name"] and len(body["rows"]) == 5 and body["truncated"] is True
    assert body["sql"] == "SELECT id, name FROM customers ORDER BY id LIMIT 6" and body["tables"] == ["customers"]


@pytest.mark.parametrize(("sql", "rule"), [
    ("DELETE FROM customers", "write"),
    ("SELECT name FROM customers; DROP TABLE orders", "multiple_statements"),
    ("SELECT token FROM secrets", "table_not_allowed"),
    ("SELECT * FROM sqlite_master", "table_not_allowed"),
    ("SELECT load_extension('/tmp/evil.so')", "denied_function"),
])  # fmt: skip
def test_blocked_sql_is_a_400_naming_the_rule(server: str, sql: str, rule: str) -> None:
    r = _post(server, {"sql": sql})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == rule and err["type"] == "invalid_request_error" and rule in err["message"]


def test_question_form_through_the_model(server: str, upstream: ScriptedUpstream) -> None:
    upstream.reset("SELECT COUNT(*) AS n FROM customers WHERE city = 'Oslo'", "Ten customers live in Oslo.")
    r = _post(server, {"question": "How many customers live in Oslo?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == [[10]] and body["answer"].startswith("Ten customers live in Oslo.")
    assert "Tables: customers" in body["answer"] and body["attempts"][0]["rows"] == 1


def test_endpoint_errors_and_auth(server: str) -> None:
    assert _post(server, {"sql": "SELECT 1"}, key=None).status_code == 401
    assert _post(server, {"sql": "SELECT 1", "question": "x"}).status_code == 400
    r = httpx.post(f"{server}/v1/sql_sources/nope/query", json={"sql": "SELECT 1"},
                   headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
    assert r.status_code == 404 and r.json()["error"]["code"] == "sql_source_not_found"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "portico"), "sql", *args], capture_output=True, text=True, timeout=120)


def test_cli_validate_train_refresh(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    cfg = tmp_path / "portico.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, upstream)))
    ok = _cli("validate", "shop", "SELECT name FROM customers -- hi", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "SELECT name FROM customers LIMIT 6"
    blocked = _cli("validate", "shop", "UPDATE customers SET name = 'x'", "--config", str(cfg))
    assert blocked.returncode == 3 and "write" in blocked.stderr
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"question": "how many orders", "sql": "SELECT COUNT(*) FROM orders"}\n'
                        '{"question": "steal", "sql": "SELECT * FROM secrets"}\n')  # fmt: skip
    trained = _cli("train", "shop", str(examples), "--config", str(cfg))
    assert trained.returncode == 0 and "1 examples added, 1 skipped" in trained.stdout, trained.stdout + trained.stderr
    assert (tmp_path / "state" / "sql" / "shop.examples.jsonl").read_text().count("\n") == 1
    # A column added to the database is unknown until `portico sql refresh` reads the schema again.
    db = sqlite3.connect(tmp_path / "shop.db")
    db.execute("ALTER TABLE customers ADD COLUMN email TEXT")
    db.commit()
    db.close()
    assert _cli("validate", "shop", "SELECT email FROM customers", "--config", str(cfg)).returncode == 3
    refreshed = _cli("refresh", "shop", "--config", str(cfg))
    assert refreshed.returncode == 0 and "customers: 4 columns, 50 rows" in refreshed.stdout
    assert _cli("validate", "shop", "SELECT email FROM customers", "--config", str(cfg)).returncode == 0
    ran = _cli("query", "shop", "SELECT COUNT(*) FROM orders", "--sql", "--json", "--config", str(cfg))
    assert ran.returncode == 0 and '"rows": [[200]]' in ran.stdout, ran.stderr
