"""``/mcp`` through the official MCP SDK client against a real server (uvicorn, in this process so a test tool
can be added): per-key tool lists, calls through run_tool, writes queued for approval, auth, audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from portico.actions.tool import SingleTool
from portico.config.loader import validate
from portico.server.app import create_app
from tests.support import free_port
from tests.unit.test_actions_contract import Recorder

MASTER = "sk-master-mcp"


@pytest.fixture
async def server(tmp_path) -> AsyncIterator[tuple[str, Any, Recorder, Recorder]]:
    cfg = validate({"state_dir": str(tmp_path), "auth": {"master_key": MASTER}, "models": [
        {"name": "m", "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]}]})  # fmt: skip
    app = create_app(cfg)
    rt = app.state.runtime
    lookup, send = Recorder("lookup_order"), Recorder("send_email", write=True)
    rt.tools.sources += [SingleTool(lookup), SingleTool(send)]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", rt, lookup, send
    finally:
        srv.should_exit = True
        await task


def connect(url: str, token: str) -> Client:
    http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
    return Client(streamable_http_client(url + "/mcp", http_client=http))


async def test_keys_see_and_call_only_their_tools(server) -> None:
    url, rt, lookup, send = server
    _, reader = await rt.keys.create("reader")  # default: read-only tools only
    _, writer = await rt.keys.create("writer", tools=["lookup_*", "send_email"])
    async with connect(url, reader) as c:
        assert [t.name for t in (await c.list_tools()).tools] == ["lookup_order"]
        r = await c.call_tool("lookup_order", {"order_id": "A7"})
        assert not r.is_error and r.content[0].text == "order A7" and r.structured_content["data"] == {"id": "A7"}
        r = await c.call_tool("send_email", {"order_id": "A7"})
        assert r.is_error and "Unknown tool" in r.content[0].text
        r = await c.call_tool("lookup_order", {"qty": 1})
        assert r.is_error and "order_id" in r.content[0].text
    async with connect(url, writer) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == {"lookup_order", "send_email"} and tools["send_email"].annotations.destructive_hint
        r = await c.call_tool("send_email", {"order_id": "B1"})
        assert not r.is_error and r.structured_content["status"] == "pending_approval"
        approval_id = r.structured_content["approval_id"]
        assert approval_id in r.content[0].text and send.calls == []
    row = await rt.approvals.get(approval_id)
    assert row["status"] == "pending" and row["key_name"] == "writer"
    done = await rt.approvals.approve(approval_id, "operator")
    assert done["status"] == "executed" and len(send.calls) == 1 and len(lookup.calls) == 1
    audit = [(a["action"], a["tool"], a["status"]) for a in await rt.approvals.store.audit_log()]
    assert ("call:mcp", "lookup_order", "ok") in audit and ("call:mcp", "send_email", "pending_approval") in audit
    assert ("call:mcp", "lookup_order", "invalid_arguments") in audit


async def test_bad_or_missing_key_is_refused(server) -> None:
    import httpx

    url, *_ = server
    async with httpx.AsyncClient() as h:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        r = await h.post(url + "/mcp", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = await h.post(url + "/mcp", json=body, headers={"authorization": "Bearer pk-wrong"})
        assert r.status_code == 401


async def test_get_stream_and_wrong_content_type_answer_json_rpc_errors(server) -> None:
    """Found by the fuzzer: a GET held an empty event stream open forever (nothing is ever pushed to a stateless
    server's clients), and a POST without a JSON content type got the SDK's plain-text 400."""
    import httpx

    url, rt, *_ = server
    _, token = await rt.keys.create("getter")
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=5) as h:
        r = await h.get(url + "/mcp", headers={**auth, "accept": "text/event-stream"})
        assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == -32000
        r = await h.post(url + "/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', headers=auth)
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert r.json()["jsonrpc"] == "2.0" and r.json()["error"]["code"] == -32700
