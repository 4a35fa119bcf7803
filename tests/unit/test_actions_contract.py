"""The tool contract: validation before any call, the write gate, timeouts, failures and size as tool errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from portico.actions import NoApprovalQueue, Tool, Toolbox, ToolContext, ToolKinds, ToolResult, run_tool
from portico.actions.execute import GateDecision
from portico.actions.tool import SingleTool, ToolSource
from portico.config.loader import ConfigError, validate

SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
    "required": ["order_id"],
    "additionalProperties": False,
}


class Recorder(Tool):
    kind = "test"

    def __init__(self, name: str = "lookup", *, write: bool = False, timeout: float = 5.0, behave: str = "ok"):
        super().__init__(name, "test tool", SCHEMA, write=write, timeout=timeout)
        self.calls: list[tuple[dict[str, Any], ToolContext]] = []
        self.behave = behave

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append((arguments, ctx))
        if self.behave == "sleep":
            await asyncio.sleep(10)
        if self.behave == "raise":
            raise RuntimeError("backend exploded")
        if self.behave == "huge":
            return ToolResult("x" * 5_000_000)
        return ToolResult(f"order {arguments['order_id']}", data={"id": arguments["order_id"]})


CTX = ToolContext(request_id="req-1")


async def test_valid_call_runs_once_with_parsed_arguments() -> None:
    t = Recorder()
    out = await run_tool(t, '{"order_id": "A1", "qty": 2}', CTX, NoApprovalQueue())
    assert out.status == "ok" and out.result.content == "order A1" and out.result.data == {"id": "A1"}
    assert t.calls[0][0] == {"order_id": "A1", "qty": 2}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ('{"qty": 2}', "'order_id' is a required property"),
        ('{"order_id": "A", "qty": 0}', "at qty"),
        ('{"order_id": 5}', "at order_id"),
        ('{"order_id": "A", "extra": 1}', "Additional properties"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
async def test_invalid_arguments_never_reach_the_tool(raw: str, needle: str) -> None:
    t = Recorder()
    out = await run_tool(t, raw, CTX, NoApprovalQueue())
    assert out.status == "invalid_arguments" and out.result.is_error
    assert needle in out.result.content and "lookup" in out.result.content
    assert t.calls == []


async def test_write_tool_never_runs_without_an_approval() -> None:
    t = Recorder("send_email", write=True)
    out = await run_tool(t, '{"order_id": "A1"}', CTX, NoApprovalQueue())
    assert out.status == "denied" and out.result.is_error and "approval" in out.result.content
    assert t.calls == []


async def test_gate_that_approves_passes_the_idempotency_key() -> None:
    class Yes:
        async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision:
            return GateDecision(True, idempotency_key="appr-7")

    class Pending:
        async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision:
            return GateDecision(False, "waits for approval appr-8", status="pending_approval", approval_id="appr-8")

    t = Recorder("place_order", write=True)
    out = await run_tool(t, {"order_id": "A1"}, CTX, Yes())
    assert out.status == "ok" and t.calls[0][1].idempotency_key == "appr-7"
    out = await run_tool(t, {"order_id": "A2"}, CTX, Pending())
    assert out.status == "pending_approval" and out.approval_id == "appr-8" and len(t.calls) == 1


async def test_timeout_failure_and_size_become_tool_errors() -> None:
    t0 = time.perf_counter()
    out = await run_tool(Recorder(timeout=0.2, behave="sleep"), '{"order_id": "A"}', CTX, NoApprovalQueue())
    assert out.status == "timeout" and "0.2 s" in out.result.content and time.perf_counter() - t0 < 2
    out = await run_tool(Recorder(behave="raise"), '{"order_id": "A"}', CTX, NoApprovalQueue())
    assert out.status == "error" and "backend exploded" in out.result.content
    out = await run_tool(Recorder(behave="huge"), '{"order_id": "A"}', CTX, NoApprovalQueue(), max_result_chars=1000)
    assert out.status == "ok" and len(out.result.content) < 1100 and "truncated: 1000 of 5000000" in out.result.content


async def test_run_deadline_caps_the_tool_timeout() -> None:
    ctx = ToolContext(request_id="r", deadline=time.monotonic() + 0.2)
    t0 = time.perf_counter()
    out = await run_tool(Recorder(timeout=30, behave="sleep"), '{"order_id": "A"}', ctx, NoApprovalQueue())
    assert out.status == "timeout" and time.perf_counter() - t0 < 2


def test_bad_schema_and_bad_name_fail_at_build() -> None:
    class Bad(Recorder):
        pass

    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        Tool.__init__(Bad.__new__(Bad), "x", "d", {"type": "nonsense"})
    with pytest.raises(ValueError, match="must match"):
        Recorder("has space")


class Many(ToolSource):
    def __init__(self, name: str, tools: list[Tool]) -> None:
        super().__init__(name, "server")
        self._tools = tools

    def tools(self) -> list[Tool]:
        return self._tools


def test_toolbox_expands_sources_and_names() -> None:
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    box = Toolbox([SingleTool(a), Many("srv", [b, c])])
    assert [t.name for t in box.expand(["a"])] == ["a"]
    assert [t.name for t in box.expand(["srv"])] == ["b", "c"]
    assert [t.name for t in box.expand(["c", "a"])] == ["a", "c"]
    assert box.get("b") is b and box.get("zz") is None and box.source("srv") is not None


def test_kinds_and_config_errors_name_the_entry() -> None:
    kinds = ToolKinds()
    kinds.register("test", lambda cfg, services: SingleTool(Recorder(cfg.name)))
    with pytest.raises(ValueError, match="twice"):
        kinds.register("test", lambda cfg, services: None)
    base = {"models": [{"name": "m", "deployments": [{"provider": "openai", "base_url": "http://x/v1"}]}]}
    cfg = validate({**base, "tools": [{"name": "ok_1", "kind": "test", "url": "u"}, {"name": "z", "kind": "nope"}]})
    assert cfg.tools[0].options == {"url": "u"}
    with pytest.raises(ValueError, match=r"tools\[1\] \(z\): unknown tool kind 'nope' \(known: test\)"):
        Toolbox.build(cfg.tools, kinds, services=None)
    with pytest.raises(ConfigError, match="defined twice"):
        validate({**base, "tools": [{"name": "t", "kind": "test"}, {"name": "t", "kind": "test"}]})
    with pytest.raises(ConfigError, match="tools"):
        validate({**base, "tools": [{"name": "bad name", "kind": "test"}]})
