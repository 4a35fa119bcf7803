"""web_search and mcp tools inside an ``agent`` run: a real Runtime, a scripted upstream, a local SearxNG-format
server and the test MCP server over streamable HTTP; the model's tool messages, citations and trace spans."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from portico.config.loader import validate
from portico.observability.spans import ChatSource, chat_trace
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.runtime import Runtime
from portico.storage.usage import UsageRecord
from tests.scripted_upstream import ScriptedUpstream, Turn
from tests.unit.test_tool_mcp import TOKEN, HttpServer


@pytest.fixture
async def searxng() -> AsyncIterator[str]:
    async def search(request: web.Request) -> web.Response:
        rows = [{"title": "Carrier notice", "url": "https://carrier.example/notice", "content": "DHL delays in Lyon"}]
        return web.json_response({"query": request.query["q"], "results": rows})

    app = web.Application()
    app.router.add_get("/search", search)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        await srv.close()


async def test_agent_runs_web_search_and_mcp_tools(tmp_path: Path, searxng: str) -> None:
    mcp = HttpServer(tmp_path)
    mcp.start()
    script = [
        Turn.calls(("web", {"query": "DHL delays Lyon"}), ("orders_lookup_order", {"order_id": "A1"})),
        Turn.say("A1 has shipped; DHL reports delays in Lyon [web-1]."),
    ]
    up = ScriptedUpstream(script)
    cfg = validate({
        "state_dir": str(tmp_path / "state"),
        "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "s", "base_url": f"{up.url}/v1",
                                                  "api_key": "k"}]}],
        "tools": [
            {"name": "web", "kind": "web_search", "provider": "searxng", "base_url": searxng, "max_results": 3},
            {"name": "orders", "kind": "mcp", "url": mcp.url, "headers": {"authorization": f"Bearer {TOKEN}"},
             "allowed_tools": ["lookup_order", "cancel_order"]},
        ],
        "applications": [{"name": "support", "model": "m", "steps": [{"use": "agent", "tools": ["web", "orders"]}]}],
    })  # fmt: skip
    rt = Runtime(cfg)
    try:
        async with up:
            await rt.start()
            offered = {t["function"]["name"] for t in [t.spec() for t in rt.tools.expand(["web", "orders"])]}
            assert offered == {"web", "orders_lookup_order", "orders_cancel_order"}
            req = ChatCompletionRequest.model_validate(
                {"model": "support", "messages": [{"role": "user", "content": "Where is order A1?"}]}
            )
            pipeline, app = rt.pipeline_for("support")
            ctx = RequestContext(request=req, request_id="r1", model="support", application=app)
            await pipeline.run(ctx)
            assert ctx.response is not None
            assert ctx.response["choices"][0]["message"]["content"].startswith("A1 has shipped")
            # The model was offered both kinds and read both results.
            first, second = up.requests[0].body, up.requests[1].body
            assert {t["function"]["name"] for t in first["tools"]} == offered
            tool_msgs = [m["content"] for m in second["messages"] if m["role"] == "tool"]
            assert any("URL: https://carrier.example/notice" in m for m in tool_msgs)
            assert any('"status": "shipped"' in m for m in tool_msgs)
            assert mcp.ran() == ["lookup_order A1"]
            record = UsageRecord(ts=0, request_id="r1", endpoint="chat", status=200, model="support")
            names = {sp.name for sp in chat_trace(ChatSource(ctx, record, time.perf_counter(), 0), "full").spans}
            assert {"agent", "tool web", "tool orders_lookup_order"} <= names
    finally:
        await rt.close()
        mcp.kill()
