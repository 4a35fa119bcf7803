"""The web_search kind against a local server that speaks each provider's documented format (SearxNG JSON, Brave
Search API, Tavily), plus pages to fetch and extract, domain lists, caps and upstream errors. No internet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from portico.actions import NoApprovalQueue, ToolContext, run_tool
from portico.actions.kinds.web_search import WebSearchTool, web_search_kind
from portico.config.tools import ToolConfig

Server = tuple[str, list[web.Request], list[dict[str, Any]]]  # base URL, requests seen, Tavily bodies
BRAVE_KEY = "brave-secret-123"
TAVILY_KEY = "tvly-secret-456"
ARTICLE = (
    "<html><head><title>Portico gateway</title></head><body><nav>Home | About | Login</nav>"
    "<article><h1>How the Portico gateway routes requests</h1>"
    + "".join(
        f"<p>Paragraph {i}: the gateway keeps one pooled connection per upstream origin and retries an idempotent "
        f"request on another deployment when the first one fails with a server error.</p>"
        for i in range(6)
    )
    + "</article><footer>Copyright 2026 cookie banner</footer></body></html>"
)


def results(base: str) -> list[dict[str, Any]]:
    """The same five results in every format: two local pages, a denied domain, an ad domain, a bad URL."""
    return [
        {
            "title": "Portico <b>gateway</b> routing",
            "url": f"{base}/page/article",
            "text": "How <em>routing</em> works",
        },
        {"title": "Blocked site", "url": "http://blocked.example/spam", "text": "buy now"},
        {"title": "Redirecting page", "url": f"{base}/page/redirect", "text": "moved"},
        {"title": "Sub of blocked", "url": "https://www.blocked.example/x", "text": "more spam"},
        {"title": "Not a web URL", "url": "javascript:alert(1)", "text": "bad"},
        {"title": "Slow page", "url": f"{base}/page/slow", "text": "slow &amp; steady"},
        {"title": "Huge page", "url": f"{base}/page/huge", "text": "big"},
    ]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    seen: list[web.Request] = []
    bodies: list[dict[str, Any]] = []  # Tavily's JSON bodies, in order

    def base(request: web.Request) -> str:
        return f"http://{request.host}"

    async def searxng(request: web.Request) -> web.Response:
        seen.append(request)
        if request.query.get("format") != "json":
            return web.Response(status=403, text="Forbidden")  # what SearxNG answers when json is not enabled
        rows = [
            {"title": r["title"], "url": r["url"], "content": r["text"], "engine": "duckduckgo", "score": 1.0}
            for r in results(base(request))
        ]
        return web.json_response(
            {"query": request.query["q"], "number_of_results": len(rows), "results": rows, "answers": []}
        )

    async def brave(request: web.Request) -> web.Response:
        seen.append(request)
        if request.headers.get("X-Subscription-Token") != BRAVE_KEY:
            error = {"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID"}}
            return web.json_response(error, status=422)
        count = int(request.query.get("count", "20"))
        rows = [
            {"type": "search_result", "title": r["title"], "url": r["url"], "description": r["text"]}
            for r in results(base(request))
        ][:count]
        return web.json_response(
            {"type": "search", "query": {"original": request.query["q"]}, "web": {"type": "search", "results": rows}}
        )

    async def tavily(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        seen.append(request)
        if request.headers.get("Authorization") != f"Bearer {TAVILY_KEY}":
            return web.json_response({"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401)
        rows = [
            {"title": r["title"], "url": r["url"], "content": r["text"], "score": 0.9 - i / 10, "raw_content": None}
            for i, r in enumerate(results(base(request)))
        ][: body.get("max_results", 5)]
        return web.json_response(
            {"query": body["query"], "answer": "Portico routes by deployment.", "results": rows, "response_time": 0.4}
        )

    async def article(request: web.Request) -> web.Response:
        return web.Response(text=ARTICLE, content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://blocked.example/landing")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text=ARTICLE, content_type="text/html")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(ARTICLE.encode()[:-14])  # the article, then 5 MB more before </body></html>
        for _ in range(80):
            await resp.write(b"<p>" + b"filler " * 9000 + b"</p>")
        await resp.write_eof()
        return resp

    async def broken(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=503, text="upstream search engines unavailable")

    app = web.Application()
    app.router.add_get("/search", searxng)
    app.router.add_post("/search", tavily)
    app.router.add_get("/res/v1/web/search", brave)
    app.router.add_get("/page/article", article)
    app.router.add_get("/page/redirect", redirect)
    app.router.add_get("/page/slow", slow)
    app.router.add_get("/page/huge", huge)
    app.router.add_route("*", "/broken/{tail:.*}", broken)
    app.router.add_get("/html/search", article)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield f"http://127.0.0.1:{srv.port}", seen, bodies
    finally:
        await srv.close()


def make(base: str, provider: str, **options: Any) -> WebSearchTool:
    key = {"brave": BRAVE_KEY, "tavily": TAVILY_KEY}.get(provider)
    entry = {"name": f"search_{provider}", "kind": "web_search", "provider": provider, "base_url": base}
    if key:
        entry["api_key"] = key
    source = web_search_kind(ToolConfig.model_validate({**entry, **options}), None)
    tool = source.tools()[0]
    assert isinstance(tool, WebSearchTool)
    return tool


CTX = ToolContext(request_id="r1")


async def call(tool: WebSearchTool, args: dict[str, Any]) -> Any:
    return await run_tool(tool, args, CTX, NoApprovalQueue())


@pytest.mark.parametrize("provider", ["searxng", "brave", "tavily"])
async def test_each_format_normalised_with_citations(server: Server, provider: str) -> None:
    base, seen, bodies = server
    tool = make(base, provider, max_results=3)
    try:
        out = await call(tool, {"query": "portico routing"})
    finally:
        await tool.close()
    assert out.status == "ok", out.result.content
    rows = out.result.data["results"]
    # The javascript: URL never appears; markup and entities are gone from titles and snippets.
    assert [r["url"] for r in rows] == [f"{base}/page/article", "http://blocked.example/spam", f"{base}/page/redirect"]
    assert rows[0]["title"] == "Portico gateway routing" and rows[0]["snippet"] == "How routing works"
    assert out.result.citations[0] == {
        "id": f"search_{provider}-1",
        "title": "Portico gateway routing",
        "url": f"{base}/page/article",
        "source": f"search_{provider}",
    }
    assert "[1] Portico gateway routing" in out.result.content and f"URL: {base}/page/article" in out.result.content
    req = seen[-1]
    if provider == "searxng":
        assert req.method == "GET" and req.query["q"] == "portico routing" and req.query["format"] == "json"
    elif provider == "brave":
        assert req.method == "GET" and req.query["count"] == "3"
    else:
        assert bodies[-1]["max_results"] == 3 and bodies[-1]["query"] == "portico routing"
        assert out.result.data["answer"] == "Portico routes by deployment."
        assert "summary answer" in out.result.content


async def test_model_asks_for_fewer_but_never_more(server: Server) -> None:
    base, _, _ = server
    tool = make(base, "brave", max_results=4)
    try:
        out = await call(tool, {"query": "q", "max_results": 2})
        assert out.status == "ok" and len(out.result.data["results"]) == 2
        client = tool._api
        await call(tool, {"query": "again"})
        assert client is not None and tool._api is client  # one HTTP client for the tool's life
        out = await call(tool, {"query": "q", "max_results": 9})
        assert out.status == "invalid_arguments" and "max_results" in out.result.content
        out = await call(tool, {"query": ""})
        assert out.status == "invalid_arguments"
    finally:
        await tool.close()


async def test_deny_and_allow_lists_filter_results(server: Server) -> None:
    base, _, bodies = server
    tool = make(base, "tavily", max_results=3, deny_domains=["blocked.example"])
    try:
        out = await call(tool, {"query": "q"})
        urls = [r["url"] for r in out.result.data["results"]]
        # Both blocked.example and its subdomain are gone, and the tool asked for more to still return three.
        assert urls == [f"{base}/page/article", f"{base}/page/redirect", f"{base}/page/slow"]
        assert bodies[-1]["exclude_domains"] == ["blocked.example"] and bodies[-1]["max_results"] == 6
    finally:
        await tool.close()
    tool = make(base, "searxng", max_results=10, allow_domains=["example"])
    try:
        out = await call(tool, {"query": "q"})
        assert [r["url"] for r in out.result.data["results"]] == [
            "http://blocked.example/spam",
            "https://www.blocked.example/x",
        ]
    finally:
        await tool.close()


async def test_fetch_extracts_main_text_and_guards_pages(server: Server) -> None:
    base, _, _ = server
    # Allow private hosts (the test server is on 127.0.0.1); the redirect goes to a denied domain.
    tool = make(
        base, "searxng", max_results=7, fetch=5, fetch_timeout=0.5, fetch_max_bytes=200_000,
        fetch_private_hosts=True, deny_domains=["blocked.example"],
    )  # fmt: skip
    try:
        out = await call(tool, {"query": "q"})
    finally:
        await tool.close()
    assert out.status == "ok", out.result.content
    by_url = {r["url"]: r for r in out.result.data["results"]}
    text = by_url[f"{base}/page/article"]["text"]
    assert "pooled connection per upstream origin" in text and "cookie banner" not in text and "Login" not in text
    assert "Page text:" in out.result.content and "Paragraph 5" in out.result.content
    errors = out.result.data["fetch_errors"]
    assert errors[f"{base}/page/redirect"] == "domain not allowed: blocked.example"
    assert errors[f"{base}/page/slow"] == "timed out"
    # The 5 MB page was cut at the byte cap and its head still extracted.
    assert "pooled connection" in by_url[f"{base}/page/huge"]["text"]
    assert "text" not in by_url[f"{base}/page/slow"]


async def test_fetch_refuses_private_addresses_by_default(server: Server) -> None:
    base, _, _ = server
    tool = make(base, "brave", max_results=1, fetch=1)
    try:
        out = await call(tool, {"query": "q"})
    finally:
        await tool.close()
    assert out.status == "ok"
    assert out.result.data["fetch_errors"] == {f"{base}/page/article": "private address: 127.0.0.1"}
    localhost = make(base.replace("127.0.0.1", "localhost"), "brave", max_results=1, fetch=1)
    try:
        out = await call(localhost, {"query": "q"})
    finally:
        await localhost.close()
    # A name resolving to loopback is refused by the resolver, at connect time.
    assert "private address" in next(iter(out.result.data["fetch_errors"].values()))


async def test_upstream_errors_are_tool_errors_without_the_key(server: Server) -> None:
    base, _, _ = server
    tool = make(f"{base}/broken", "brave")
    try:
        out = await call(tool, {"query": "q"})
    finally:
        await tool.close()
    assert out.status == "error"
    assert "brave answered HTTP 503: upstream search engines unavailable" in out.result.content
    entry = {"name": "s", "kind": "web_search", "provider": "tavily", "base_url": base, "api_key": "wrong-key"}
    tool = web_search_kind(ToolConfig.model_validate(entry), None).tools()[0]
    try:
        out = await call(tool, {"query": "q"})
    finally:
        await tool.close()  # type: ignore[attr-defined]
    assert out.status == "error" and "HTTP 401" in out.result.content and "wrong-key" not in out.result.content
    assert "wrong-key" not in repr(tool.options)  # type: ignore[attr-defined]


async def test_searxng_without_json_format_and_dead_upstream(server: Server) -> None:
    base, _, _ = server
    tool = make(f"{base}/html", "searxng")  # an instance without json in search.formats answers its HTML page
    try:
        out = await call(tool, {"query": "q"})
    finally:
        await tool.close()
    assert out.status == "error" and "did not answer JSON" in out.result.content
    dead = make("http://127.0.0.1:9", "searxng")
    try:
        out = await call(dead, {"query": "q"})
    finally:
        await dead.close()
    assert out.status == "error" and "ClientConnectorError" in out.result.content


def test_config_errors() -> None:
    def build(**entry: Any) -> Any:
        return web_search_kind(ToolConfig.model_validate({"name": "s", "kind": "web_search", **entry}), None)

    with pytest.raises(ValueError, match="searxng needs base_url"):
        build(provider="searxng")
    with pytest.raises(ValueError, match="brave needs api_key"):
        build(provider="brave")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        build(provider="brave", api_key="k", colour="blue")
    with pytest.raises(ValueError, match="defines its own parameters"):
        build(provider="brave", api_key="k", parameters={"type": "object"})
    with pytest.raises(ValueError, match="only reads"):
        build(provider="brave", api_key="k", write=True)
    tool = build(provider="tavily", api_key="k", deny_domains=["x.test"]).tools()[0]
    assert tool.public() == {"provider": "tavily", "base_url": "https://api.tavily.com", "max_results": 5, "fetch": 0,
                             "allow_domains": [], "deny_domains": ["x.test"]}  # fmt: skip
    assert tool.write is False and tool.spec()["function"]["parameters"]["required"] == ["query"]
