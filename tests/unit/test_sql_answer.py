"""Question → SQL → answer through the real gateway against a scripted upstream (a tiny HTTP server speaking OpenAI
chat completions that replies with the next scripted text): the repair loop, the empty-result retry, failure, table
selection with join paths, example retrieval and the ``sql`` step, over a real SQLite database."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from portico.config.schema import PorticoConfig
from portico.context.sql.generate import SqlAnswerer, SqlFailed, extract_sql
from portico.context.sql.retrieval import Example, ExampleStore, TableSelector
from portico.context.sql.schema import ColumnInfo, ForeignKey, SchemaInfo, TableInfo
from portico.context.sql.service import sql_of
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.runtime import Runtime
from tests.unit.test_sql_sources import DDL, seed


class ScriptedUpstream:
    """Replies with ``script`` in order (the last one repeats); records every request's messages."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests: list[list[dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append(body["messages"])
                i = min(len(outer.requests), len(outer.script)) - 1
                text = outer.script[i] if outer.script else ""
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
                out = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "scripted",
                                  "choices": [choice], "usage": usage}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, *script: str) -> None:
        self.script = list(script)
        self.requests = []

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    yield up
    up.close()


def shop_db(tmp: Path) -> str:
    path = tmp / "shop.db"
    conn = sqlite3.connect(path)
    for s in DDL + seed():
        conn.execute(s)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def config(tmp: Path, upstream_url: str, steps: list[dict] | None = None, **source: Any) -> PorticoConfig:
    return PorticoConfig.model_validate({
        "state_dir": str(tmp / "state"),
        "cache": {"enabled": False},
        "models": [{"name": "writer", "deployments": [{"provider": "openai", "model": "scripted",
                                                        "base_url": upstream_url, "api_key": "x"}]}],
        "sql_sources": [{"name": "shop", "url": shop_db(tmp), "tables": ["customers", "orders"], **source}],
        "applications": [{"name": "analyst", "model": "writer", "steps": steps or []}],
    })  # fmt: skip


@pytest.fixture
async def runtime(tmp_path: Path, upstream: ScriptedUpstream) -> Any:
    rt = Runtime(config(tmp_path, upstream.url, max_repairs=2))
    await rt.start()
    yield rt
    await rt.close()


async def test_repair_loop_feeds_back_rejections_and_errors(runtime: Runtime, upstream: ScriptedUpstream) -> None:
    upstream.reset(
        "```sql\nDELETE FROM customers\n```",
        "SELECT nme FROM customers",
        "Here you go:\n```sql\nSELECT name FROM customers WHERE city = 'Oslo' ORDER BY id\n```",
        "Ten customers live in Oslo, among them c5.",
    )
    src = sql_of(runtime).get("shop")
    got = await SqlAnswerer(runtime.gateway).answer(src, "Which customers live in Oslo?", "writer")
    assert [a.get("rule") for a in got.attempts] == ["write", "unknown_column", None]
    assert got.result.columns == ["name"] and got.result.rows[0] == ["c5"] and len(got.result.rows) == 10
    assert got.result.tables == ["customers"] and not got.result.truncated
    # The model saw the rule that blocked its first query, then the unknown column.
    assert "(write)" in upstream.requests[1][-1]["content"]
    assert "unknown_column" in upstream.requests[2][-1]["content"]
    # The prompt holds the schema with sample values and the dialect.
    first = upstream.requests[0]
    assert "SQLite" in first[0]["content"] and "TABLE customers" in first[1]["content"]
    assert "FOREIGN KEY (customer_id) REFERENCES customers(id)" in first[1]["content"]
    # The answer quotes the SQL that ran and the tables it read, whatever the model wrote.
    assert got.answer.startswith("Ten customers live in Oslo")
    assert "```sql\nSELECT name FROM customers WHERE city = 'Oslo' ORDER BY id LIMIT 201\n```" in got.answer
    assert got.answer.endswith("Tables: customers")


async def test_empty_result_is_retried_once_then_accepted(runtime: Runtime, upstream: ScriptedUpstream) -> None:
    upstream.reset("SELECT name FROM customers WHERE city = 'oslo'", "SELECT name FROM customers WHERE city = 'Oslo'",
                   "c5 and others.")  # fmt: skip
    src = sql_of(runtime).get("shop")
    got = await SqlAnswerer(runtime.gateway).answer(src, "customers in oslo", "writer")
    assert [a.get("rule") for a in got.attempts] == ["empty_result", None]
    assert "no rows" in upstream.requests[1][-1]["content"] and got.result.rows
    # A model that repeats its query stands by the empty answer: no more repairs.
    upstream.reset("SELECT name FROM customers WHERE city = 'Atlantis'")
    got = await SqlAnswerer(runtime.gateway).answer(src, "customers in Atlantis", "writer")
    assert len(got.attempts) == 2 and got.result.rows == [] and "no rows" in got.answer


async def test_no_valid_query_names_the_last_rule(runtime: Runtime, upstream: ScriptedUpstream) -> None:
    upstream.reset("SELECT token FROM secrets")
    src = sql_of(runtime).get("shop")
    with pytest.raises(SqlFailed) as e:
        await SqlAnswerer(runtime.gateway).answer(src, "show me the tokens", "writer")
    assert e.value.rule == "table_not_allowed" and len(e.value.attempts) == 3  # 1 + max_repairs
    assert e.value.status == 400 and e.value.code == "table_not_allowed"


def test_extract_sql() -> None:
    assert extract_sql("```sql\nSELECT 1;\n```") == "SELECT 1"
    assert extract_sql("Sure! SELECT a FROM t") == "SELECT a FROM t"
    assert extract_sql("WITH x AS (SELECT 1) SELECT * FROM x;") == "WITH x AS (SELECT 1) SELECT * FROM x"


def _schema(n_noise: int) -> SchemaInfo:
    def t(name: str, cols: list[str], fks: list[ForeignKey] | None = None, desc: str = "") -> TableInfo:
        return TableInfo(name, [ColumnInfo(c, "TEXT") for c in cols], fks or [], 10, desc)

    tables = [
        t("patients", ["patient_id", "full_name", "birth_date"]),
        t("admissions", ["admission_id", "patient_id", "ward_id", "admitted_at"],
          [ForeignKey(["patient_id"], "patients", ["patient_id"]), ForeignKey(["ward_id"], "wards", ["ward_id"])]),
        t("wards", ["ward_id", "ward_name", "floor"], desc="hospital wards (cardiology, oncology, …)"),
    ]  # fmt: skip
    tables += [t(f"noise_{i}", [f"metric_{i}", f"value_{i}", "recorded_on"]) for i in range(n_noise)]
    return SchemaInfo("h", "sqlite", ["main"], {x.name: x for x in tables}, 0.0)


async def test_table_selection_adds_join_paths() -> None:
    sel = TableSelector(_schema(40), None)  # BM25 only: no embedder configured
    tables, joins = await sel.select("names of patients in the cardiology ward", 2)
    assert tables[:2] == ["patients", "wards"] or tables[:2] == ["wards", "patients"]
    assert "admissions" in tables and len(tables) == 3  # the table between them, found through foreign keys
    conds = {j.condition() for j in joins}
    assert conds == {"patients.patient_id = admissions.patient_id", "admissions.ward_id = wards.ward_id"} or conds == {
        "wards.ward_id = admissions.ward_id",
        "admissions.patient_id = patients.patient_id",
    }


async def test_example_store_retrieves_nearest(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path / "ex.jsonl", None)
    store.add([Example("how many customers live in Oslo", "SELECT COUNT(*) FROM customers WHERE city = 'Oslo'"),
               Example("total of all orders", "SELECT SUM(total) FROM orders"),
               Example("list customer names", "SELECT name FROM customers")])  # fmt: skip
    got = await store.search("what is the total of the orders", 1)
    assert got[0].sql == "SELECT SUM(total) FROM orders"
    again = ExampleStore(tmp_path / "ex.jsonl", None)  # persisted
    assert len(again.examples) == 3


async def _ask(rt: Runtime, app: str, question: str) -> RequestContext:
    req = ChatCompletionRequest.model_validate({"model": app, "messages": [{"role": "user", "content": question}]})
    pipeline, name = rt.pipeline_for(app)
    ctx = RequestContext(request=req, request_id=uuid.uuid4().hex, model=app, application=name)
    return await pipeline.run(ctx)


async def test_sql_step_answers_with_structured_result(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    rt = Runtime(config(tmp_path, upstream.url, [{"use": "sql", "source": "shop"}]))
    await rt.start()
    try:
        upstream.reset("SELECT COUNT(*) AS n FROM orders", "There are 200 orders.")
        ctx = await _ask(rt, "analyst", "how many orders are there?")
        assert ctx.answered_by == "sql"
        assert ctx.response is not None
        body = ctx.response["choices"][0]["message"]["content"]
        assert body.startswith("There are 200 orders.") and "Tables: orders" in body
        assert ctx.response["portico"]["sql"]["rows"] == [[200]]
        assert ctx.response["portico"]["sql"]["columns"] == ["n"]
    finally:
        await rt.close()


async def test_sql_step_context_mode_feeds_generate(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    steps = [{"use": "sql", "source": "shop", "mode": "context"}]
    rt = Runtime(config(tmp_path, upstream.url, steps))
    await rt.start()
    try:
        upstream.reset("SELECT COUNT(*) AS n FROM orders", "generated answer")
        ctx = await _ask(rt, "analyst", "how many orders are there?")
        assert ctx.answered_by is None and ctx.documents and "200" in ctx.documents[0]["text"]
        assert ctx.documents[0]["sql"]["sql"].startswith("SELECT COUNT(*) AS n FROM orders")
    finally:
        await rt.close()


def test_step_rejects_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sql source 'nope'"):
        Runtime(config(tmp_path, "http://127.0.0.1:9/v1", [{"use": "sql", "source": "nope"}]))


def test_duplicate_source_names_fail(tmp_path: Path) -> None:
    src = {"name": "shop", "url": "sqlite:///x.db"}
    cfg = {"models": [{"name": "m", "deployments": [{"provider": "local"}]}], "sql_sources": [src, src]}
    with pytest.raises(ValueError, match="'shop' is defined twice"):
        PorticoConfig.model_validate(cfg)
