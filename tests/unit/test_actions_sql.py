"""The ``sql`` tool kind through the tool executor: a question answered from a real SQLite source by a scripted
upstream model, the SQL/rows/tables the agent reads, a failure as a tool error naming the rule, read-only config."""

from __future__ import annotations

from pathlib import Path

import pytest

from portico.actions import NoApprovalQueue, ToolContext, run_tool
from portico.config.schema import PorticoConfig
from portico.runtime import Runtime
from tests.unit.test_sql_answer import ScriptedUpstream, config, upstream  # noqa: F401 - the fixture

CTX = ToolContext(request_id="r1", application="analyst")


def with_tools(tmp: Path, url: str, **tool: object) -> PorticoConfig:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = config(tmp, url).model_dump(mode="json", by_alias=True)
    cfg["models"][0]["deployments"][0]["api_key"] = "x"
    cfg["tools"] = [{"name": "shop_db", "kind": "sql", "source": "shop", **tool}]
    return PorticoConfig.model_validate(cfg)


async def test_sql_tool_answers_with_sql_rows_and_tables(tmp_path: Path, upstream: ScriptedUpstream) -> None:  # noqa: F811
    rt = Runtime(with_tools(tmp_path, upstream.url))
    await rt.start()
    try:
        tool = rt.tools.get("shop_db")
        assert tool is not None and not tool.write and tool.kind == "sql"
        upstream.reset("SELECT city, COUNT(*) AS n FROM customers GROUP BY city ORDER BY city")
        out = await run_tool(tool, {"question": "customers per city"}, CTX, NoApprovalQueue())
        assert out.status == "ok", out.result.content
        assert "SQL:\nSELECT city, COUNT(*) AS n FROM customers GROUP BY city ORDER BY city LIMIT 201" in (
            out.result.content
        )
        assert "Tables: customers" in out.result.content and "Cork | 10" in out.result.content
        assert out.result.citations == [{"id": "sql:shop/customers", "title": "customers", "source": "shop"}]
        assert out.result.data["rows"][0] == ["Cork", 10]
        assert len(upstream.requests) == 1  # rows go back to the agent: no answer-writing call
        upstream.reset("DROP TABLE customers")
        out = await run_tool(tool, {"question": "drop it"}, CTX, NoApprovalQueue())
        assert out.status == "error" and "(write)" in out.result.content
    finally:
        await rt.close()


def test_sql_tools_are_read_only_and_need_a_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="read-only"):
        Runtime(with_tools(tmp_path / "a", "http://127.0.0.1:9/v1", write=True, approval={"by": "operator"}))
    with pytest.raises(ValueError, match="unknown sql source 'nope'"):
        Runtime(with_tools(tmp_path / "b", "http://127.0.0.1:9/v1", source="nope"))
