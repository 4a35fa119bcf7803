"""The Responses API's built-in tools, run by Portico's agent loop: ``file_search`` over a knowledge base,
``web_search`` through a configured SearxNG-format search tool, and ``mcp`` through a configured MCP server (the
real test server over streamable HTTP) with ``allowed_tools`` and ``require_approval`` answered in-band by
``mcp_approval_response``. A real ``portico serve``, a scripted upstream, the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.scripted_upstream import ScriptedUpstream, Turn
from tests.support import portico_server
from tests.unit.test_tool_mcp import TOKEN, HttpServer

MASTER = "mk-" + "r" * 40


async def _search(request: web.Request) -> web.Response:
    if "slow" in request.query["q"]:  # a search that takes a while: its call is seen starting before it ends
        await asyncio.sleep(1.5)
    rows = [{"title": "Carrier notice", "url": "https://carrier.example/notice", "content": "DHL delays in Lyon"}]
    return web.json_response({"query": request.query["q"], "results": rows})


def script(body: dict[str, Any], answers: dict[str, int]) -> Turn:
    """One tool call per kind of question, then an answer quoting what the tools (and approvals) said. ``answers``
    counts the answers to each "flaky" question: its first answer fails the output check of the app "checked"."""
    msgs = body["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    after = [m for m in msgs[last_user + 1 :] if m["role"] in ("tool", "system")]
    question = str(msgs[last_user]["content"])
    if "flaky" in question:
        if not body.get("tools"):
            return Turn.say("I have no tools to look that up.")
        if not after:
            return Turn.call("web", {"query": question})
        answers[question] = answers.get(question, 0) + 1
        if answers[question] == 1:
            return Turn.say("A FORBIDDEN answer.")
    if after:
        return Turn.say("Done: " + " | ".join(str(m["content"]) for m in after)[:1500])
    if "lyon" in question:  # the model says something before it calls a tool
        return Turn.calls(("web", {"query": "slow Lyon"}), content="Let me check the news first.")
    if "think" in question:
        return Turn(content="It is 4.", reasoning="Two plus two is four, so the answer is 4.")
    for word, call in (("vacation", ("file_search", {"query": "vacation days"})),
                       ("news", ("web", {"query": "DHL delays"})),
                       ("cancel", ("orders_cancel_order", {"order_id": "A1"})),
                       ("order", ("orders_lookup_order", {"order_id": "A1"})),
                       ("weather", ("get_weather", {"city": "Paris"}))):  # fmt: skip
        if word in question:
            return Turn.call(call[0], call[1])
    return Turn.say("hello")


@pytest.fixture(scope="module")
def mcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    srv = HttpServer(tmp_path_factory.mktemp("mcp"))
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def server(mcp: HttpServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    answers: dict[str, int] = {}
    up = ScriptedUpstream(lambda body: script(body, answers), routes=[web.get("/search", _search)])
    tmp: Path = tmp_path_factory.mktemp("responses-tools")
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "s", "base_url": f"{up.url}/v1",
                                                  "api_key": "k"}]},
                   {"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]}],
        "applications": [{"name": "checked", "model": "m", "steps": [
            {"use": "output_checks", "forbid": ["FORBIDDEN", "check the news"],
             "on_fail": {"retry": 1, "answer": "Sorry, no answer."}}]}],
        "tools": [
            {"name": "web", "kind": "web_search", "provider": "searxng", "base_url": up.url, "max_results": 3},
            {"name": "orders", "kind": "mcp", "url": mcp.url, "headers": {"authorization": f"Bearer {TOKEN}"},
             "allowed_tools": ["lookup_order", "cancel_order", "add"], "approval": {"by": "user"}},
        ],
    }  # fmt: skip
    with up.in_thread(), portico_server(cfg, tmp, log="responses-tools.log", timeout=180) as url:
        auth = {"authorization": f"Bearer {MASTER}"}
        r = httpx.post(f"{url}/v1/knowledge_bases", json={"name": "handbook"}, headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        docs = [{"id": "vacation", "title": "Vacation", "text": "Employees get 28 days of paid vacation per year."},
                {"id": "laptops", "title": "Equipment", "text": "Every engineer receives a laptop."}]  # fmt: skip
        r = httpx.post(
            f"{url}/v1/knowledge_bases/handbook/documents", json={"documents": docs}, headers=auth, timeout=120
        )
        assert r.status_code == 200, r.text
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER, max_retries=0, timeout=60)


FILE_SEARCH = {"type": "file_search", "vector_store_ids": ["handbook"]}
ORDERS = {"type": "mcp", "server_label": "orders", "require_approval": "never"}


def types(r: Any) -> list[str]:
    return [o.type for o in r.output]


def test_file_search_runs_on_the_server_with_results_when_included(server: str) -> None:
    r = client(server).responses.create(model="m", input="How many vacation days?", tools=[FILE_SEARCH],
                                        include=["file_search_call.results"])  # fmt: skip
    assert types(r) == ["file_search_call", "message"]
    call = r.output[0]
    assert call.status == "completed" and call.queries == ["vacation days"]
    assert call.results and call.results[0].filename == "Vacation" and "28 days" in call.results[0].text
    assert "28 days of paid vacation" in r.output_text  # the model read the passage
    plain = client(server).responses.create(model="m", input="vacation?", tools=[FILE_SEARCH])
    assert plain.output[0].results is None  # results only when include asks


def test_web_search_streams_its_call_events(server: str) -> None:
    with client(server).responses.stream(model="m", input="any news on DHL?", tools=[{"type": "web_search"}],
                                         include=["web_search_call.action.sources"]) as stream:  # fmt: skip
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    call_events = ["response.web_search_call.in_progress", "response.web_search_call.searching",
                   "response.web_search_call.completed"]  # fmt: skip
    assert [k for k in kinds if k.startswith("response.web_search_call")] == call_events
    assert kinds.index("response.web_search_call.completed") < kinds.index("response.output_text.delta")
    assert types(final) == ["web_search_call", "message"]
    action = final.output[0].action
    assert action.query == "DHL delays" and [s.url for s in action.sources] == ["https://carrier.example/notice"]
    assert "carrier.example/notice" in final.output_text


def test_text_before_a_tool_call_is_a_message_item_before_the_call(server: str) -> None:
    c = client(server)
    r = c.responses.create(model="m", input="delays in lyon?", tools=[{"type": "web_search"}])
    assert types(r) == ["message", "web_search_call", "message"]
    assert r.output[0].content[0].text == "Let me check the news first."
    assert r.output[1].action.query == "slow Lyon" and "carrier.example/notice" in r.output[2].content[0].text
    stored = c.responses.retrieve(r.id)
    assert [o.type for o in stored.output] == types(r)


def test_a_tool_call_is_streamed_when_it_starts_and_when_it_ends(server: str) -> None:
    stream = client(server).responses.create(model="m", input="delays in lyon?", tools=[{"type": "web_search"}],
                                             stream=True)  # fmt: skip
    seen = [(e, time.monotonic()) for e in stream]
    events = [e for e, _ in seen]
    at = {e.type: t for e, t in seen}  # each call event happens once here
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    call = [e for e in events if getattr(e, "item", None) is not None and e.item.type == "web_search_call"]
    assert [e.type for e in call] == ["response.output_item.added", "response.output_item.done"]
    assert call[0].item.status == "in_progress" and call[1].item.status == "completed"
    assert call[0].item.id == call[1].item.id and call[0].output_index == call[1].output_index == 1
    ws = [k for k in kinds if k.startswith("response.web_search_call")]
    assert ws == ["response.web_search_call.in_progress", "response.web_search_call.searching",
                  "response.web_search_call.completed"]  # fmt: skip
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta")
    start, end = kinds.index("response.web_search_call.searching"), kinds.index("response.web_search_call.completed")
    assert all(e.output_index == 1 for e in events[start : end + 1] if hasattr(e, "output_index"))
    assert at["response.web_search_call.completed"] - at["response.web_search_call.searching"] > 1.0  # the search
    final = events[-1].response
    assert [o.type for o in final.output] == ["message", "web_search_call", "message"]
    assert final.output[0].content[0].text == "Let me check the news first."


def test_an_output_check_retry_runs_with_the_requests_tools(server: str) -> None:
    c = client(server)
    r = c.responses.create(model="checked", input="flaky: any news?", tools=[{"type": "web_search"}])
    assert types(r) == ["web_search_call", "message"]  # the call of the run that answered, once
    assert r.output_text.startswith("Done: ") and "carrier.example/notice" in r.output_text
    # What the model said before its tool call is checked too; the stock answer replaces it.
    stock = c.responses.create(model="checked", input="delays in lyon?", tools=[{"type": "web_search"}])
    assert stock.output_text == "Sorry, no answer." and "check the news" not in stock.model_dump_json()


def test_mcp_lists_and_calls_an_allowed_tool(server: str, mcp: HttpServer) -> None:
    before = len(mcp.ran())
    tool = {**ORDERS, "allowed_tools": ["lookup_order"]}
    r = client(server).responses.create(model="m", input="Where is order A1?", tools=[tool])
    assert types(r) == ["mcp_list_tools", "mcp_call", "message"]
    assert [t.name for t in r.output[0].tools] == ["lookup_order"] and r.output[0].server_label == "orders"
    call = r.output[1]
    assert (call.name, call.server_label, call.status) == ("lookup_order", "orders", "completed")
    assert '"order_id": "A1"' in call.output or '"order_id":"A1"' in call.output
    assert mcp.ran()[before:] == ["lookup_order A1"]
    # The listing is not repeated on a follow-up that has it in its history.
    again = client(server).responses.create(model="m", input="Where is order A1 now?", tools=[tool],
                                            previous_response_id=r.id)  # fmt: skip
    assert types(again) == ["mcp_call", "message"]


def test_mcp_streams_list_and_call_events(server: str) -> None:
    events = list(client(server).responses.create(model="m", input="order A1?", tools=[ORDERS], stream=True))
    kinds = [e.type for e in events]
    for k in (
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ):
        assert k in kinds
    done = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert done == ["mcp_list_tools", "mcp_call", "message"]
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_mcp_approval_request_is_answered_by_the_next_call(server: str, mcp: HttpServer) -> None:
    c = client(server)
    tool = {"type": "mcp", "server_label": "orders", "server_url": mcp.url}  # require_approval: always (default)
    before = len(mcp.ran())
    r = c.responses.create(model="m", input="Where is order A1?", tools=[tool])
    assert types(r) == ["mcp_list_tools", "mcp_approval_request"]  # the run stops: nothing ran, nothing said
    req = r.output[1]
    assert (req.name, req.server_label) == ("lookup_order", "orders") and req.id.startswith("mcpr_")
    assert mcp.ran()[before:] == []
    approved = c.responses.create(model="m", tools=[tool], previous_response_id=r.id, input=[
        {"type": "mcp_approval_response", "approval_request_id": req.id, "approve": True}])  # fmt: skip
    assert types(approved) == ["mcp_call", "message"]
    assert approved.output[0].approval_request_id == req.id and "shipped" in approved.output[0].output
    assert mcp.ran()[before:] == ["lookup_order A1"]
    assert "approved and executed" in approved.output_text  # the model was told what became of it
    # The same approval again: already decided, the call does not run twice.
    again = c.responses.create(model="m", tools=[tool], previous_response_id=r.id, input=[
        {"type": "mcp_approval_response", "approval_request_id": req.id, "approve": True}])  # fmt: skip
    assert mcp.ran()[before:] == ["lookup_order A1"] and "not applied" in again.output_text


def test_a_streamed_response_ends_with_the_approval_request(server: str, mcp: HttpServer) -> None:
    before = len(mcp.ran())
    tool = {"type": "mcp", "server_label": "orders", "require_approval": {"always": {"tool_names": ["lookup_order"]}}}
    events = list(client(server).responses.create(model="m", input="order A1?", tools=[tool], stream=True))
    done = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert done == ["mcp_list_tools", "mcp_approval_request"] and events[-1].type == "response.completed"
    assert [o.type for o in events[-1].response.output] == done and mcp.ran()[before:] == []


def test_a_denied_call_never_runs_and_a_write_waits_even_with_never(server: str, mcp: HttpServer) -> None:
    c = client(server)
    before = len(mcp.ran())
    # cancel_order writes: the config's approval applies whatever the request says.
    r = c.responses.create(model="m", input="cancel order A1", tools=[ORDERS])
    assert types(r) == ["mcp_list_tools", "mcp_approval_request"] and r.output[1].name == "cancel_order"
    denied = c.responses.create(model="m", tools=[ORDERS], previous_response_id=r.id, input=[
        {"type": "mcp_approval_response", "approval_request_id": r.output[1].id, "approve": False}])  # fmt: skip
    assert types(denied) == ["message"] and "was denied" in denied.output_text
    assert mcp.ran()[before:] == []


def test_reasoning_text_of_the_upstream_is_a_reasoning_item(server: str) -> None:
    c = client(server)
    r = c.responses.create(model="m", input="think: what is 2+2?")
    assert types(r) == ["reasoning", "message"] and r.output_text == "It is 4."
    assert r.output[0].content[0].text == "Two plus two is four, so the answer is 4."
    with c.responses.stream(model="m", input="think: what is 2+2?") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert types(final) == ["reasoning", "message"] and final.output[0].content[0].text.startswith("Two plus two")
    follow = c.responses.create(model="m", input="and think of 3+3?", previous_response_id=r.id)  # reasoning: skipped
    assert follow.output_text == "It is 4."


def test_function_tools_still_return_to_the_client(server: str) -> None:
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}  # fmt: skip
    r = client(server).responses.create(model="m", input="weather in Paris?", tools=[FILE_SEARCH, weather])
    assert types(r) == ["function_call"] and r.output[0].name == "get_weather"


@pytest.mark.parametrize(
    ("tool", "param", "code"),
    [
        ({"type": "mcp", "server_label": "elsewhere", "server_url": "http://169.254.169.254/"},
         "tools[0].server_label", "mcp_server_not_allowed"),
        ({"type": "mcp", "server_label": "orders", "server_url": "http://127.0.0.1:1/mcp"}, "tools[0].server_url",
         "mcp_server_not_allowed"),
        ({"type": "file_search", "vector_store_ids": ["nope"]}, "tools[0].vector_store_ids[0]",
         "vector_store_not_found"),
        ({"type": "mcp", "server_label": "orders", "require_approval": "sometimes"}, "tools[0].require_approval",
         None),
    ],
)  # fmt: skip
def test_tools_outside_the_config_are_refused(server: str, tool: dict, param: str, code: str | None) -> None:
    r = httpx.post(f"{server}/v1/responses", json={"model": "m", "input": "x", "tools": [tool]},
                   headers={"authorization": f"Bearer {MASTER}"}, timeout=30)  # fmt: skip
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and (code is None or err["code"] == code)


async def test_agents_sdk_hosted_mcp_with_approval_and_web_search(server: str, mcp: HttpServer) -> None:
    """The Agents SDK's hosted tools: its approval callback answers Portico's mcp_approval_request (the SDK sends
    the whole history back, not previous_response_id) and the approved call runs once."""
    from agents import Agent as SdkAgent
    from agents import HostedMCPTool, OpenAIResponsesModel, Runner, WebSearchTool, set_tracing_disabled

    set_tracing_disabled(True)
    asked: list[str] = []

    def approve(request: Any) -> dict[str, Any]:
        asked.append(request.data.name)
        return {"approve": True}

    before = len(mcp.ran())
    orders = HostedMCPTool(tool_config={"type": "mcp", "server_label": "orders", "require_approval": "always"},
                           on_approval_request=approve)  # fmt: skip
    oai = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=MASTER, max_retries=0, timeout=60)
    agent = SdkAgent(name="orders", model=OpenAIResponsesModel("m", oai), tools=[orders, WebSearchTool()])
    result = await Runner.run(agent, "Where is order A1?")
    assert asked == ["lookup_order"] and mcp.ran()[before:] == ["lookup_order A1"]
    assert "approved and executed" in result.final_output
    news = await Runner.run(agent, "any news on DHL?")
    assert "carrier.example/notice" in news.final_output
    assert "web_search_call" in [getattr(i.raw_item, "type", None) for i in news.new_items]


def _key(url: str, **fields: Any) -> openai.OpenAI:
    r = httpx.post(f"{url}/admin/keys", headers={"authorization": f"Bearer {MASTER}"}, timeout=30,
                   json={"name": f"k-{os.urandom(4).hex()}", **fields})  # fmt: skip
    assert r.status_code == 201, r.text
    return openai.OpenAI(base_url=f"{url}/v1", api_key=r.json()["key"], max_retries=0, timeout=60)


def test_only_the_asking_key_approves_and_a_read_only_key_gets_no_write_tool(server: str, mcp: HttpServer) -> None:
    a, b = _key(server), _key(server)  # no tools list: read-only tools only
    tool = {"type": "mcp", "server_label": "orders"}
    before = len(mcp.ran())
    r = a.responses.create(model="m", input="Where is order A1?", tools=[tool])
    req = r.output[-1]
    assert req.type == "mcp_approval_request"
    # Another key sends the whole conversation with an approval: not its action, nothing runs.
    history = [{"role": "user", "content": "Where is order A1?"}, req.model_dump(exclude_none=True),
               {"type": "mcp_approval_response", "approval_request_id": req.id, "approve": True}]  # fmt: skip
    other = b.responses.create(model="m", tools=[tool], input=history)
    assert "not applied" in other.output_text and mcp.ran()[before:] == []
    ok = a.responses.create(model="m", tools=[tool], previous_response_id=r.id, input=history[2:])
    assert types(ok) == ["mcp_call", "message"] and mcp.ran()[before:] == ["lookup_order A1"]
    # cancel_order writes: a key without a tools list is not offered it, and a call of it runs nothing.
    w = a.responses.create(model="m", input="cancel order A1", tools=[{**tool, "require_approval": "never"}])
    assert sorted(t.name for t in w.output[0].tools) == ["add", "lookup_order"]
    assert "no tool named 'orders_cancel_order'" in w.output_text and mcp.ran()[before:] == ["lookup_order A1"]
