"""Agents end to end: a real ``portico serve`` with an agent application, a scripted OpenAI-compatible upstream
and http tools on a local server, driven by the official ``openai`` SDK (streaming and not); the trace, the
admin view of the tools and the ``portico tools`` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.scripted_upstream import ScriptedUpstream, Turn
from tests.support import VENV_BIN, portico_server

MASTER = "mk-" + "a" * 40
AUTH = {"authorization": f"Bearer {MASTER}"}
TOKEN = "orders-token-" + "z" * 20  # reaches the tool through ${PORTICO_TEST_ORDERS_TOKEN}, never the admin view
ENV = {**os.environ, "PORTICO_TEST_ORDERS_TOKEN": TOKEN}


async def _order(request: web.Request) -> web.Response:
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return web.json_response({"error": "unauthorized"}, status=401)
    return web.json_response({"order": request.match_info["order_id"], "status": "shipped"})


async def _eta(request: web.Request) -> web.Response:
    await asyncio.sleep(0.4)  # long enough for keep-alive comments at 0.1 s
    return web.json_response({"eta": "Monday"})


def script(body: dict[str, Any]) -> Turn:
    last = body["messages"][-1]
    if last["role"] == "user" and "weather" in last["content"]:
        return Turn.call("get_weather", city="Rotterdam")
    if last["role"] == "user":
        return Turn.calls(("lookup_order", {"order_id": "A1"}), ("eta", {}))
    return Turn.say("Order A1 is shipped and arrives on Monday.")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream(script, routes=[web.get("/orders/{order_id}", _order), web.get("/eta", _eta)])
    with up.in_thread():
        yield up


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("agents")
    dep = {"provider": "openai", "model": "scripted", "base_url": f"{upstream.url}/v1", "api_key": "sk",
           "price": {"input": 1.0, "output": 2.0}}  # fmt: skip
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "models": [{"name": "m", "deployments": [dep]}],
        "tools": [
            {"name": "lookup_order", "kind": "http", "description": "Look up an order by its id", "method": "GET",
             "url": f"{upstream.url}/orders/{{order_id}}",
             "headers": {"authorization": "Bearer ${PORTICO_TEST_ORDERS_TOKEN}"},
             "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
             "timeout": 10},
            {"name": "eta", "kind": "http", "description": "Delivery estimate", "url": f"{upstream.url}/eta"},
        ],
        "applications": [{"name": "support-agent", "model": "m", "steps": [
            {"use": "agent", "tools": ["lookup_order", "eta"], "max_steps": 6, "keepalive_seconds": 0.1}]}],
    }  # fmt: skip
    os.environ["PORTICO_TEST_ORDERS_TOKEN"] = TOKEN  # portico_server starts the server with this environment
    try:
        with portico_server(cfg, tmp, log="agents.log") as url:
            yield {"url": url, "config": tmp / "agents.yaml"}
    finally:
        os.environ.pop("PORTICO_TEST_ORDERS_TOKEN", None)


def client(server: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key=MASTER, max_retries=0, timeout=30)


QUESTION = [{"role": "user", "content": "Where is my order A1?"}]


def test_the_sdk_gets_the_answer_with_usage_of_the_whole_run(server: dict[str, Any]) -> None:
    raw = client(server).chat.completions.with_raw_response.create(model="support-agent", messages=QUESTION)
    r = raw.parse()
    assert r.choices[0].message.content == "Order A1 is shipped and arrives on Monday."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.total_tokens == 240  # two model calls of 120 tokens
    agent = r.model_extra["portico"]["agent"]
    assert agent["steps"] == 2 and [(c["name"], c["status"]) for c in agent["tool_calls"]] == [
        ("lookup_order", "ok"), ("eta", "ok")]  # fmt: skip
    assert agent["cost_usd"] == pytest.approx(2 * (100 * 1.0 + 20 * 2.0) / 1e6)
    spans = _trace(server, raw.headers["x-request-id"])
    agent_span = next(s for s in spans["children"] if s["name"] == "agent")
    names = [c["name"] for c in agent_span["children"]]
    assert names.count("chat m") == 2 and "tool lookup_order" in names and "tool eta" in names
    tool = next(c for c in agent_span["children"] if c["name"] == "tool lookup_order")
    assert tool["attributes"]["portico.tool.arguments"] == '{"order_id":"A1"}' and TOKEN not in str(spans)


def test_the_sdk_streams_the_answer_through_keepalive_comments(server: dict[str, Any]) -> None:
    stream = client(server).chat.completions.create(model="support-agent", messages=QUESTION, stream=True,
                                                    stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Order A1 is shipped and arrives on Monday."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 240
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    body = {"model": "support-agent", "messages": QUESTION, "stream": True}
    with httpx.stream("POST", f"{server['url']}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
        lines = [line for line in r.iter_lines() if line]
        assert r.headers["x-portico-model"] == "openai/scripted"
    comments = [line for line in lines if line.startswith(":")]
    assert comments[0] == ": portico agent: running lookup_order, eta" and len(comments) >= 2
    assert lines[-1] == "data: [DONE]"


def test_client_tools_come_back_as_tool_calls(server: dict[str, Any]) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
    ask = [{"role": "user", "content": "weather in Rotterdam?"}]
    r = client(server).chat.completions.create(model="support-agent", tools=[weather], messages=ask)
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == '{"city":"Rotterdam"}'


def test_admin_lists_tools_without_secrets(server: dict[str, Any]) -> None:
    assert httpx.get(f"{server['url']}/admin/tools", timeout=10).status_code == 401
    r = httpx.get(f"{server['url']}/admin/tools", headers=AUTH, timeout=10)
    assert r.status_code == 200 and TOKEN not in r.text
    tools = {t["name"]: t for t in r.json()["data"]}
    assert set(tools) == {"lookup_order", "eta"}
    t = tools["lookup_order"]
    assert t["kind"] == "http" and t["write"] is False and t["parameters"]["required"] == ["order_id"]
    assert t["settings"]["headers"] == ["authorization"] and t["settings"]["url"].endswith("/orders/{order_id}")
    assert {s["name"]: s["health"]["status"] for s in r.json()["sources"]} == {"lookup_order": "ok", "eta": "ok"}


def test_cli_lists_and_calls_a_tool(server: dict[str, Any]) -> None:
    portico = str(VENV_BIN / "portico")
    cfg = str(server["config"])
    out = subprocess.run([portico, "tools", "call", "lookup_order", '{"order_id": "B7"}', "--config", cfg],
                         capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"order":"B7","status":"shipped"}' and "lookup_order: ok" in out.stderr
    listed = subprocess.run([portico, "tools", "list", "--json", "--config", cfg], capture_output=True, text=True,
                            env=ENV, timeout=120)  # fmt: skip
    assert listed.returncode == 0 and TOKEN not in listed.stdout
    assert [t["name"] for t in json.loads(listed.stdout)["data"]] == ["lookup_order", "eta"]


def _trace(server: dict[str, Any], request_id: str) -> dict[str, Any]:
    for _ in range(100):  # traces are written after the response
        r = httpx.get(f"{server['url']}/admin/requests/{request_id}", headers=AUTH, timeout=10)
        if r.status_code == 200:
            (root,) = r.json()["spans"]
            return root
        time.sleep(0.1)
    raise AssertionError(f"no trace for {request_id}")
