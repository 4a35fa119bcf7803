"""The clients people already use, pointed at a real ``portico serve``: the OpenAI JS SDK under Node, the OpenAI
Agents SDK (its default Responses model and its chat-completions model, each with a server-side tool and a client
function tool), LangChain's ``ChatOpenAI`` (chat and Responses), ``ChatAnthropic`` and ``OpenAIEmbeddings``, and
LlamaIndex's ``OpenAILike``. The upstream is a scripted OpenAI-compatible server (tool calls on cue); the local
model answers LangChain too. ``make test`` installs the JS SDK (tests/clients-js, ``npm ci``) and LlamaIndex's
venv (tests/clients-py/.venv: its OpenAI integration pins openai<3) first."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.scripted_upstream import ScriptedUpstream, Turn
from tests.support import portico_server

ROOT = Path(__file__).resolve().parents[2]
MASTER = "mk-" + "c" * 40


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content or "")


def script(body: dict[str, Any]) -> Turn:
    """Echo a question; for weather, first the server-side tool it was offered (file_search, lookup_order), then
    the client's get_weather, then an answer quoting every tool result."""
    msgs = body["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    question = _text(msgs[last_user]["content"])
    results = [_text(m["content"]) for m in msgs[last_user + 1 :] if m["role"] == "tool"]
    offered = {t["function"]["name"] for t in body.get("tools") or []}
    if "weather" not in question:
        return Turn.say(f"echo: {question}")
    if any("sunny" in r for r in results):
        return Turn.say("Done: " + " | ".join(results))
    if not results and "file_search" in offered:
        return Turn.call("file_search", query="vacation days")
    if not results and "lookup_order" in offered:
        return Turn.call("lookup_order", order_id="A1")
    return Turn.call("get_weather", city="Paris")


async def _order(request: web.Request) -> web.Response:
    return web.json_response({"order": request.match_info["order_id"], "status": "shipped"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    up = ScriptedUpstream(script, routes=[web.get("/orders/{order_id}", _order)])
    tmp: Path = tmp_path_factory.mktemp("sdk-clients")
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "models": [
            {"name": "s", "deployments": [{"provider": "openai", "model": "s", "base_url": f"{up.url}/v1",
                                           "api_key": "k"}]},
            {"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]},
        ],
        "tools": [{"name": "lookup_order", "kind": "http", "description": "Look up an order by its id",
                   "url": f"{up.url}/orders/{{order_id}}",
                   "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                  "required": ["order_id"]}}],
        "applications": [{"name": "support-agent", "model": "s",
                          "steps": [{"use": "agent", "tools": ["lookup_order"]}]}],
    }  # fmt: skip
    with up.in_thread(), portico_server(cfg, tmp, log="sdk-clients.log", timeout=180) as url:
        auth = {"authorization": f"Bearer {MASTER}"}
        r = httpx.post(f"{url}/v1/knowledge_bases", json={"name": "handbook"}, headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        doc = {"id": "vacation", "title": "Vacation", "text": "Employees get 28 days of paid vacation per year."}
        r = httpx.post(f"{url}/v1/knowledge_bases/handbook/documents", json=doc, headers=auth, timeout=120)
        assert r.status_code == 200, r.text
        yield url


# ---- OpenAI JS SDK ------------------------------------------------------------------------------------------


def test_openai_js_sdk(server: str) -> None:
    js = ROOT / "tests" / "clients-js"
    assert (js / "node_modules" / "openai").is_dir(), "run `make clients` (npm ci in tests/clients-js)"
    run = subprocess.run(["node", "client.mjs", f"{server}/v1", MASTER, "s"], cwd=js, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["chat"] == "echo: hello js" and out["chat_stream"] == "echo: stream js"
    assert out["responses"] == "echo: responses js" and out["responses_usage"] == 120
    assert out["follow_up"] == "echo: and again" and out["retrieved"] is True
    events = out["responses_stream_events"]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events and out["responses_stream_text"] == "echo: responses stream js"
    assert out["function_calls"] == ["get_weather"]
    assert out["error"] == {"status": 404, "code": "model_not_found"}


# ---- OpenAI Agents SDK --------------------------------------------------------------------------------------


def _agents_client(server: str) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=MASTER, max_retries=0, timeout=60)


def _weather_tool() -> Any:
    from agents import function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    return get_weather


async def test_agents_sdk_responses_model_with_file_search_and_a_function_tool(server: str) -> None:
    from agents import Agent, FileSearchTool, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK would export traces to OpenAI
    model = OpenAIResponsesModel("s", _agents_client(server))
    search = FileSearchTool(vector_store_ids=["handbook"], include_search_results=True)  # run by Portico
    agent = Agent(name="helper", instructions="Be brief.", model=model, tools=[search, _weather_tool()])
    result = await Runner.run(agent, "vacation days and the weather in Paris?")
    assert result.final_output.startswith("Done:") and "sunny in Paris" in result.final_output
    kinds = [getattr(i.raw_item, "type", None) for i in result.new_items]
    assert "file_search_call" in kinds and "function_call" in kinds  # run by Portico, then by the SDK
    found = next(i.raw_item for i in result.new_items if getattr(i.raw_item, "type", None) == "file_search_call")
    assert found.results and "28 days" in found.results[0].text


async def test_agents_sdk_chat_completions_model_with_a_server_tool_and_a_function_tool(server: str) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    model = OpenAIChatCompletionsModel("support-agent", _agents_client(server))  # an application with an agent step
    agent = Agent(name="helper", instructions="Be brief.", model=model, tools=[_weather_tool()])
    result = await Runner.run(agent, "order A1 and the weather in Paris?")
    # lookup_order ran in Portico's agent step; get_weather came back to the SDK, which ran it.
    assert result.final_output == "Done: sunny in Paris"
    calls = [i.raw_item for i in result.new_items if type(i).__name__ == "ToolCallItem"]
    assert [c.function.name if hasattr(c, "function") else c.name for c in calls] == ["get_weather"]


# ---- LangChain ----------------------------------------------------------------------------------------------


def _lc_weather() -> Any:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    return get_weather


def test_langchain_chat_openai(server: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="s", base_url=f"{server}/v1", api_key=MASTER, max_retries=0)
    assert llm.invoke("hello lc").content == "echo: hello lc"
    assert "".join(c.content for c in llm.stream("stream lc")) == "echo: stream lc"
    msg = llm.bind_tools([_lc_weather()]).invoke("weather in Paris?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"})]
    responses = ChatOpenAI(model="s", base_url=f"{server}/v1", api_key=MASTER, max_retries=0, use_responses_api=True)
    assert responses.invoke("hello responses lc").text == "echo: hello responses lc"


def test_langchain_chat_anthropic(server: str) -> None:
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(model="s", base_url=server, api_key=MASTER, max_retries=0, max_tokens=64)
    assert llm.invoke("hello claude lc").text == "echo: hello claude lc"
    assert "".join(c.text for c in llm.stream("stream claude lc")) == "echo: stream claude lc"
    msg = llm.bind_tools([_lc_weather()]).invoke("weather in Paris?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_langchain_openai_embeddings(server: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="local-embed", base_url=f"{server}/v1", api_key=MASTER, max_retries=0,
                           check_embedding_ctx_length=False)  # fmt: skip
    docs = emb.embed_documents(["vacation policy", "laptop policy"])
    query = emb.embed_query("how many vacation days?")
    assert len(docs) == 2 and len(query) == len(docs[0]) == 384

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert dot(query, docs[0]) > dot(query, docs[1])  # real embeddings: the vacation text is nearer


def test_langchain_with_the_local_model(portico: str) -> None:
    from langchain_anthropic import ChatAnthropic
    from langchain_openai import ChatOpenAI

    assert ChatOpenAI(model="local", base_url=f"{portico}/v1", api_key="x", max_tokens=8).invoke("Hi").text.strip()
    assert ChatAnthropic(model="local", base_url=portico, api_key="x", max_tokens=8).invoke("Hi").text.strip()


# ---- LlamaIndex ---------------------------------------------------------------------------------------------


def test_llamaindex_openai_like(server: str) -> None:
    py = ROOT / "tests" / "clients-py" / ".venv" / "bin" / "python"
    assert py.exists(), "run `make clients` (LlamaIndex's venv in tests/clients-py/.venv)"
    run = subprocess.run([str(py), "llamaindex_client.py", f"{server}/v1", MASTER, "s"], cwd=py.parents[2],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["complete"] == "echo: hello llamaindex" and out["chat"] == "echo: chat llamaindex"
    assert out["stream"] == "echo: stream li"
    assert out["tool_calls"] == [["get_weather", {"city": "Paris"}]]


def test_responses_built_in_tools_join_an_agent_applications_tools(server: str) -> None:
    import openai

    c = openai.OpenAI(base_url=f"{server}/v1", api_key=MASTER, max_retries=0, timeout=60)
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}  # fmt: skip
    r = c.responses.create(model="support-agent", input="vacation and the weather?",
                           tools=[{"type": "file_search", "vector_store_ids": ["handbook"]}, weather])  # fmt: skip
    # The application's agent step offered its lookup_order and the request's file_search (which the model called
    # and Portico ran); get_weather is the client's.
    assert [o.type for o in r.output] == ["file_search_call", "function_call"] and r.output[1].name == "get_weather"
