"""The ``http`` tool kind against a real local aiohttp server: templating, methods, headers, SSRF attempts through
arguments, redirects, trimming and timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from portico.actions import NoApprovalQueue, ToolContext, run_tool
from portico.actions.kinds.http import HttpTool, http_kind
from portico.config.tools import ToolConfig
from tests.support import free_port

CTX = ToolContext(request_id="r1")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"method": request.method, "raw_path": request.raw_path, "host": request.host,
                              "query": dict(request.query), "body": body.decode() or None,
                              "auth": request.headers.get("authorization"),
                              "idem": request.headers.get("idempotency-key")})  # fmt: skip


async def _huge(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 5_000_000, content_type="text/plain")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def _fail(request: web.Request) -> web.Response:
    return web.Response(status=503, text="maintenance")


async def _redirect(request: web.Request) -> web.Response:
    where = request.query["to"]
    raise web.HTTPFound(where)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/api/{tail:.*}", _echo)
    app.router.add_get("/huge", _huge)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/fail", _fail)
    app.router.add_get("/redirect", _redirect)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def tool(**cfg: Any) -> HttpTool:
    source = http_kind(ToolConfig.model_validate({"name": "t", "kind": "http", **cfg}), None)
    return source.tool  # type: ignore[attr-defined]


async def call(t: HttpTool, args: dict[str, Any], ctx: ToolContext = CTX) -> Any:
    out = await run_tool(t, args, ctx, NoApprovalQueue())
    await t.close()
    return out


async def test_get_fills_the_path_and_sends_other_arguments_as_query_with_secret_headers(server: str) -> None:
    t = tool(url=f"{server}/api/orders/{{order_id}}", headers={"authorization": "Bearer s3cret-token"},
             parameters={"type": "object", "properties": {"order_id": {"type": "string"}, "full": {"type": "boolean"},
                                                          "tags": {"type": "array"}},
                         "required": ["order_id"]})  # fmt: skip
    out = await call(t, {"order_id": "A 1/2", "full": True, "tags": ["a", "b"]})
    assert out.status == "ok", out.result.content
    seen = out.result.data
    assert seen["method"] == "GET" and seen["raw_path"].startswith("/api/orders/A%201%2F2?")
    # The echo server repeated the header it received; what reaches the model has it replaced.
    assert seen["query"]["full"] == "true" and seen["auth"] == "[redacted]" and seen["idem"] is None
    assert "s3cret" not in out.result.content and "s3cret" not in repr(out.result.data)
    assert "s3cret" not in repr(t.options) and "s3cret" not in str(t.public())


async def test_an_echoed_bare_token_is_redacted_too(server: str) -> None:
    t = tool(url=f"{server}/api/whoami", headers={"x-api-key": "k-0123456789", "authorization": "Bearer tok-abcdefgh"},
             parameters={"type": "object", "properties": {"note": {"type": "string"}}})  # fmt: skip
    out = await call(t, {"note": "tok-abcdefgh and k-0123456789 and application/json"})
    assert "tok-abcdefgh" not in out.result.content and "k-0123456789" not in out.result.content
    assert out.result.data["query"]["note"] == "[redacted] and [redacted] and application/json"  # the rest stays


async def test_post_sends_the_unused_arguments_as_json_and_the_idempotency_key(server: str) -> None:
    t = tool(method="POST", url=f"{server}/api/customers/{{cid}}/orders", write=True,
             parameters={"type": "object", "properties": {"cid": {"type": "integer"}, "item": {"type": "string"},
                                                          "qty": {"type": "integer"}}})  # fmt: skip
    t.write = False  # this test calls it directly; the gate's refusal of writes is tested with the agent
    ctx = ToolContext(request_id="r2", idempotency_key="appr-9")
    out = await call(t, {"cid": 7, "item": "pen", "qty": 2}, ctx)
    seen = out.result.data
    assert seen["method"] == "POST" and seen["raw_path"] == "/api/customers/7/orders"
    assert seen["body"] == '{"item":"pen","qty":2}' and seen["idem"] == "appr-9"


@pytest.mark.parametrize("value", ["../../admin", "http://evil.example/x", "@evil.example", "x?y=1#z", "%2e%2e",
                                   "127.0.0.2:80", "\\\\evil"])  # fmt: skip
async def test_arguments_cannot_leave_the_configured_host_or_path(server: str, value: str) -> None:
    t = tool(url=f"{server}/api/orders/{{order_id}}?view={{view}}")
    out = await call(t, {"order_id": value, "view": value})
    assert out.status == "ok", out.result.content
    seen = out.result.data
    assert seen["host"] == server.removeprefix("http://")
    path, _, _ = seen["raw_path"].partition("?")
    assert path.startswith("/api/orders/") and "/" not in path.removeprefix("/api/orders/")
    assert seen["query"] == {"view": value}  # one whole query value, nothing injected beside it


@pytest.mark.parametrize("value", ["..", "."])
async def test_dot_segments_are_refused(server: str, value: str) -> None:
    out = await call(tool(url=f"{server}/api/orders/{{order_id}}"), {"order_id": value})
    assert out.status == "error" and "may not be" in out.result.content


def test_placeholders_outside_path_and_query_fail_at_build() -> None:
    with pytest.raises(ValueError, match="path and query only"):
        tool(url="http://{host}/x")
    with pytest.raises(ValueError, match="path and query only"):
        tool(url="http://api.example:{port}/x")
    with pytest.raises(ValueError, match="absolute http"):
        tool(url="file:///etc/passwd")
    with pytest.raises(ValueError, match="not properties"):
        tool(url="http://a.example/{x}", parameters={"type": "object", "properties": {"y": {"type": "string"}}})
    with pytest.raises(ValueError, match=r"unknown key|Extra inputs"):
        tool(url="http://a.example/x", allowed_hosts=["b"])


async def test_redirects_stay_on_the_configured_origin(server: str) -> None:
    t = tool(url=f"{server}/redirect?to={{to}}")
    out = await call(t, {"to": "/api/after"})
    assert out.status == "ok" and out.result.data["raw_path"] == "/api/after"
    t = tool(url=f"{server}/redirect?to={{to}}")
    out = await call(t, {"to": "http://127.0.0.2:9/steal"})
    assert out.status == "error" and "another host" in out.result.content


async def test_a_5mb_response_is_cut_at_the_limit_and_again_for_the_model(server: str) -> None:
    t = tool(url=f"{server}/huge", max_response_bytes=100_000)
    out = await run_tool(t, {}, CTX, NoApprovalQueue(), max_result_chars=5000)
    await t.close()
    assert out.status == "ok" and len(out.result.content) < 5200
    assert "truncated" in out.result.content


async def test_timeout_and_http_errors_reach_the_model_as_tool_errors(server: str) -> None:
    t0 = time.perf_counter()
    out = await call(tool(url=f"{server}/slow", timeout=0.3), {})
    assert out.status == "timeout" and time.perf_counter() - t0 < 2
    out = await call(tool(url=f"{server}/fail"), {})
    assert out.status == "error" and out.result.content == "HTTP 503: maintenance"
    dead = f"http://127.0.0.1:{free_port()}"
    out = await call(tool(url=f"{dead}/x"), {})
    assert out.status == "error" and "failed" in out.result.content
