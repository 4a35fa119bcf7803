"""The mcp kind against a real MCP server built with the official SDK (tests/mcp_server.py), started as a
subprocess: streamable HTTP on a free port and stdio; list, call, allowed/blocked, write flags, a server killed
mid-run and restarted, a server down at start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from portico.actions import NoApprovalQueue, Tool, ToolContext, run_tool
from portico.actions.execute import GateDecision
from portico.actions.kinds.mcp import McpServer, mcp_kind
from portico.config.tools import ToolConfig
from tests.support import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "mcp-test-token-789"
CTX = ToolContext(request_id="r1")


class Approve:
    async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision:
        return GateDecision(True)


class HttpServer:
    """The test MCP server over streamable HTTP; can be killed and started again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.calls = tmp / "calls.log"
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tests.mcp_server", "http", "--port", str(self.port), "--token", TOKEN]
        env = {
            **os.environ,
            "MCP_TEST_LOG": str(self.calls),
            "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/health", self.proc, 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def ran(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    srv = HttpServer(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def entry(**options: Any) -> ToolConfig:
    return ToolConfig.model_validate({"name": "orders", "kind": "mcp", "timeout": 10, **options})


@contextlib.asynccontextmanager
async def started(cfg: ToolConfig) -> AsyncIterator[McpServer]:
    source = mcp_kind(cfg, None)
    await source.start()
    try:
        yield source
    finally:
        await source.close()


def http_entry(srv: HttpServer, **options: Any) -> ToolConfig:
    return entry(url=srv.url, headers={"Authorization": f"Bearer {TOKEN}"}, **options)


async def call(source: McpServer, name: str, args: dict[str, Any], gate: Any = None) -> Any:
    tool = next(t for t in source.tools() if t.name == name)
    return await run_tool(tool, args, CTX, gate or NoApprovalQueue())


async def test_http_lists_calls_and_flags_writes(http_server: HttpServer) -> None:
    async with started(http_entry(http_server, blocked_tools=["fail"])) as source:
        tools = {t.name: t for t in source.tools()}
        assert sorted(tools) == [
            "orders_add",
            "orders_cancel_order",
            "orders_lookup_order",
            "orders_pid",
            "orders_sleep",
        ]
        add = tools["orders_add"]
        assert add.description == "Add two integers." and add.parameters["required"] == ["a", "b"]
        assert add.spec()["function"]["name"] == "orders_add"
        assert add.public() == {"server": "orders", "remote_name": "add", "transport": "http"}
        # destructiveHint makes cancel_order a write tool; the rest follow the entry's default (read-only).
        assert tools["orders_cancel_order"].write and not add.write and not tools["orders_lookup_order"].write
        session = source._session
        health = source.health()
        assert (
            health["connected"] and health["tools"] == 5 and health["transport"] == "http" and health["status"] == "ok"
        )

        out = await call(source, "orders_add", {"a": 2, "b": 40})
        assert out.status == "ok" and out.result.content == "42" and out.result.data == {"result": 42}
        out = await call(source, "orders_lookup_order", {"order_id": "A7"})
        assert out.status == "ok" and '"status": "shipped"' in out.result.content
        # Schema from the server, checked before any call; the server never sees the bad arguments.
        out = await call(source, "orders_add", {"a": "two"})
        assert out.status == "invalid_arguments"
        assert http_server.ran() == ["add 2 40", "lookup_order A7"]
        out = await call(source, "orders_cancel_order", {"order_id": "A7"})
        assert out.status == "denied" and "cancel_order A7" not in http_server.ran()
        out = await call(source, "orders_cancel_order", {"order_id": "A7"}, Approve())
        assert out.status == "ok" and out.result.content == "order A7 cancelled"
        # Every call, concurrent ones too, went over the one session opened at start.
        outs = await asyncio.gather(*(call(source, "orders_add", {"a": i, "b": i}) for i in range(8)))
        assert [o.result.content for o in outs] == [str(2 * i) for i in range(8)]
        assert source._session is session


async def test_allowed_tools_names_and_write_config(http_server: HttpServer) -> None:
    cfg = http_entry(
        http_server,
        allowed_tools=["add", "lookup_order", "fail"],
        prefix="",
        tool_names={"add": "plus"},
        write_tools=["lookup_order"],
    )
    async with started(cfg) as source:
        tools = {t.name: t for t in source.tools()}
        assert sorted(tools) == ["fail", "lookup_order", "plus"]
        assert tools["lookup_order"].write and not tools["plus"].write
        out = await call(source, "fail", {"reason": "no such order"})
        assert out.status == "error" and "no such order" in out.result.content
    # The entry's write flag makes every tool a write tool; readOnlyHint never lifts it.
    async with started(http_entry(http_server, write=True, allowed_tools=["add"])) as source:
        assert [(t.name, t.write) for t in source.tools()] == [("orders_add", True)]


async def test_headers_are_sent_and_a_refused_server_is_reported(http_server: HttpServer) -> None:
    t0 = time.perf_counter()
    async with started(entry(url=http_server.url, connect_timeout=3)) as source:  # no token: 401
        assert time.perf_counter() - t0 < 5
        health = source.health()
        assert source.tools() == [] and health["status"] == "down" and not health["connected"]
        assert health["last_error"]
    async with started(http_entry(http_server)) as source:
        assert source.health()["connected"]
        assert TOKEN not in repr(source.options)


async def test_http_server_restarted_reconnects_and_retries_reads_only(http_server: HttpServer) -> None:
    async with started(http_entry(http_server, write_tools=["sleep"], allowed_tools=["pid", "sleep"])) as source:
        first = (await call(source, "orders_pid", {})).result.content
        http_server.kill()
        http_server.start()
        out = await call(source, "orders_pid", {})  # the next call reconnects transparently
        assert out.status == "ok" and out.result.content != first

        # A write call cut mid-flight is not sent again (the server may have run it) ...
        pending = asyncio.create_task(call(source, "orders_sleep", {"seconds": 1.5}, Approve()))
        await asyncio.sleep(0.6)
        http_server.kill()
        http_server.start()
        out = await pending
        assert out.status == "error" and "not retried" in out.result.content
        assert http_server.ran().count("sleep 1.5") == 1
        # ... and the source is usable again right after.
        out = await call(source, "orders_pid", {})
        assert out.status == "ok"


async def test_read_call_cut_mid_flight_is_retried(http_server: HttpServer) -> None:
    async with started(http_entry(http_server, allowed_tools=["sleep"])) as source:
        pending = asyncio.create_task(call(source, "orders_sleep", {"seconds": 1.0}))
        await asyncio.sleep(0.5)
        http_server.kill()
        http_server.start()
        out = await pending
        assert out.status == "ok" and out.result.content == "woke up"
        assert http_server.ran().count("sleep 1.0") == 2


async def test_server_down_at_start_comes_up_later(tmp_path: Path) -> None:
    srv = HttpServer(tmp_path)
    t0 = time.perf_counter()
    async with started(http_entry(srv, connect_timeout=2)) as source:
        assert time.perf_counter() - t0 < 4  # start-up is not held
        assert source.tools() == [] and source.health()["status"] == "down"
        srv.start()
        try:
            deadline = time.monotonic() + 20
            while not source.tools() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert source.health()["connected"] and len(source.tools()) == 6
            out = await call(source, "orders_add", {"a": 1, "b": 1})
            assert out.status == "ok" and out.result.content == "2"
        finally:
            srv.kill()


async def test_stdio_lists_calls_and_respawns_a_dead_server(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    cfg = entry(
        command=sys.executable,
        args=["-m", "tests.mcp_server", "stdio"],
        env={"PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "MCP_TEST_LOG": str(log)},
        cwd=str(ROOT),
        blocked_tools=["sleep"],
    )
    async with started(cfg) as source:
        assert source.health()["transport"] == "stdio" and source.health()["connected"]
        assert "orders_sleep" not in {t.name for t in source.tools()}
        out = await call(source, "orders_add", {"a": 3, "b": 4})
        assert out.status == "ok" and out.result.content == "7"
        pid = int((await call(source, "orders_pid", {})).result.content)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.3)
        out = await call(source, "orders_pid", {})  # a new subprocess answers
        assert out.status == "ok" and int(out.result.content) != pid
    # close() ended the subprocess it had started.
    await asyncio.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(int(out.result.content), 0)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of url"):
        mcp_kind(entry(), None)
    with pytest.raises(ValueError, match="exactly one of url"):
        mcp_kind(entry(url="http://x/mcp", command="srv"), None)
    with pytest.raises(ValueError, match="must match"):
        mcp_kind(entry(url="http://x/mcp", tool_names={"a": "has space"}), None)
    with pytest.raises(ValueError, match="lists its own tools"):
        mcp_kind(entry(url="http://x/mcp", parameters={"type": "object"}), None)
    with pytest.raises(ValueError, match="Extra inputs"):
        mcp_kind(entry(url="http://x/mcp", allow_tools=["a"]), None)


def test_agent_steps_may_name_tools_before_the_server_is_reached() -> None:
    open_server = mcp_kind(entry(url="http://127.0.0.1:9/mcp", tool_names={"add": "plus"}), None)
    assert open_server.declares("orders_anything") and open_server.declares("plus")
    assert not open_server.declares("other_tool")
    listed = mcp_kind(entry(url="http://127.0.0.1:9/mcp", allowed_tools=["add", "pid"], blocked_tools=["pid"]), None)
    assert listed.declares("orders_add") and not listed.declares("orders_pid") and not listed.declares("orders_x")
