"""The Responses API's built-in tools on the wire: parsing their entries, which MCP calls need approval, the items
a reported call becomes, how those items read back as history, and the stream events of a server tool's item."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from portico.protocol.errors import InvalidRequest
from portico.protocol.responses import InputItem, ResponsesRequest, to_messages
from portico.protocol.responses_out import ResponseEvents, ResponseHead
from portico.protocol.responses_tools import (
    FILE_SEARCH_RESULTS,
    McpSpec,
    approval_decisions,
    call_item,
    server_tools,
)

ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


@pytest.mark.parametrize(
    ("require", "expected"),
    [
        (None, {"a": True, "b": True}),  # OpenAI's default: always
        ("never", {"a": False, "b": False}),
        ({"never": {"tool_names": ["a"]}}, {"a": False, "b": True}),
        ({"always": {"tool_names": ["a"]}}, {"a": True, "b": False}),
        ({"always": {"tool_names": ["a"]}, "never": {"tool_names": ["b"]}}, {"a": True, "b": False}),
    ],
)
def test_which_mcp_calls_need_approval(require: Any, expected: dict[str, bool]) -> None:
    spec = McpSpec.model_validate({"type": "mcp", "server_label": "s", **({"require_approval": require}
                                                                          if require else {})})  # fmt: skip
    assert {name: spec.needs_approval(name) for name in expected} == expected


def test_server_tools_are_parsed_and_function_tools_left_alone() -> None:
    mcp = {"type": "mcp", "server_label": "s", "allowed_tools": {"tool_names": ["x"]}}
    tools = [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": ["kb"]},
             {"type": "web_search_preview"}, mcp]  # fmt: skip
    parsed = server_tools(tools)
    assert [i for i, _ in parsed] == [1, 2, 3]
    assert parsed[2][1].allowed() == ["x"]
    req = ResponsesRequest.model_validate({"model": "m", "input": "x", "tools": tools})
    assert [t["function"]["name"] for t in req.function_tools()] == ["f"]


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "mcp"}, "tools[0].server_label"),
        ({"type": "mcp", "server_label": "s", "connector_id": "connector_gmail"}, "tools[0].connector_id"),
        ({"type": "file_search", "vector_store_ids": ["kb"], "filters": {"type": "eq"}}, "tools[0].filters"),
        ({"type": "file_search", "max_num_results": 0}, "tools[0].max_num_results"),
    ],
)
def test_bad_tool_entries_name_the_field(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        server_tools([tool])
    assert ei.value.param == param


def test_calls_as_items() -> None:
    hits = [{"id": "vacation#0", "document_id": "vacation", "title": "Vacation", "text": "28 days", "score": 0.9,
             "kb": "handbook"}]  # fmt: skip
    ev = {"name": "file_search", "arguments": '{"query": "days"}', "status": "ok", "content": "…", "data": hits}
    item = call_item(ev, "file_search", None, None, frozenset({FILE_SEARCH_RESULTS}))
    assert item["type"] == "file_search_call" and item["queries"] == ["days"]
    assert (
        item["results"][0]["filename"] == "Vacation"
        and item["results"][0]["attributes"]["knowledge_base"] == "handbook"
    )
    assert call_item(ev, "file_search", None, None, frozenset())["results"] is None

    pending = {"name": "orders_x", "arguments": "{}", "status": "pending_approval", "approval_id": "appr_" + "a" * 32}
    req = call_item(pending, "mcp", "orders", "x", frozenset())
    assert req == {"id": "mcpr_" + "a" * 32, "type": "mcp_approval_request", "server_label": "orders", "name": "x",
                   "arguments": "{}"}  # fmt: skip
    failed = call_item({"name": "orders_x", "arguments": {"a": 1}, "status": "error", "content": "boom"}, "mcp",
                       "orders", "x", frozenset())  # fmt: skip
    assert (failed["status"], failed["error"], failed["output"], failed["arguments"]) == ("failed", "boom", None,
                                                                                         '{"a":1}')  # fmt: skip


def test_history_and_decisions() -> None:
    aid = "a" * 32
    items = ITEMS.validate_python([
        {"role": "user", "content": "cancel A1"},
        {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "orders", "tools": []},
        {"type": "mcp_approval_request", "id": f"mcpr_{aid}", "server_label": "orders", "name": "cancel_order",
         "arguments": '{"order_id": "A1"}'},
        {"type": "mcp_approval_response", "approval_request_id": f"mcpr_{aid}", "approve": True},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "orders", "name": "add", "arguments": "{}", "output": "3"},
    ])  # fmt: skip
    msgs = to_messages(items)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant", "tool"]
    assert f"appr_{aid}" in msgs[2]["content"]  # what the agent loop looks up when the conversation returns
    assert msgs[1]["tool_calls"][0]["function"]["name"] == "orders_cancel_order" and msgs[4]["content"] == "3"
    assert approval_decisions(items) == {"approve": [f"appr_{aid}"], "deny": []}
    with pytest.raises(InvalidRequest):
        approval_decisions(ITEMS.validate_python([{"type": "mcp_approval_response", "approval_request_id": "x"}]))


def test_a_server_tool_item_closes_the_open_message() -> None:
    req = ResponsesRequest.model_validate({"model": "m", "input": "x", "stream": True})
    tr = ResponseEvents(ResponseHead(req), lambda ev: {"id": "ws_1", "type": "web_search_call", "status": "completed",
                                                       "action": {"type": "search", "query": "q"}})  # fmt: skip
    events = tr.start()
    events += tr.feed({"choices": [{"index": 0, "delta": {"content": "Looking. "}}]})
    events += tr.tool_event({"name": "web"})
    events += tr.feed({"choices": [{"index": 0, "delta": {"content": "Found."}, "finish_reason": "stop"}]})
    events += tr.finish() + tr.completed()
    done = [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"]
    assert done == ["message", "web_search_call", "message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [o["type"] for o in tr.response["output"]] == done  # type: ignore[index]


def _mcp_item(event: dict[str, Any]) -> dict[str, Any]:
    return call_item(event, "mcp", "orders", event["name"], frozenset())


def test_parallel_server_calls_open_as_they_start_and_close_as_they_end() -> None:
    req = ResponsesRequest.model_validate({"model": "m", "input": "x", "stream": True})
    tr = ResponseEvents(ResponseHead(req), _mcp_item)
    events = tr.start() + tr.feed({"choices": [{"index": 0, "delta": {"content": "Checking."}}]})
    events += tr.tool_started({"call_id": "c1", "name": "a", "arguments": '{"x":1}'})
    events += tr.tool_started({"call_id": "c2", "name": "b", "arguments": "{}"})
    events += tr.tool_started({"call_id": "c3", "name": "c", "arguments": "{}"})  # never reports its end
    opened = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"], e["item"]["status"]) for e in opened] == [
        (0, "message", "in_progress"), (1, "mcp_call", "in_progress"), (2, "mcp_call", "in_progress"),
        (3, "mcp_call", "in_progress")]  # fmt: skip
    assert events[len(events) - 4]["type"] == "response.output_item.added"  # c3's added, then its start events
    assert [e["type"] for e in events[-3:]] == ["response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
                                                "response.mcp_call_arguments.done"]  # fmt: skip
    # The second call ends first: its events name its own item and index.
    ends = tr.tool_event({"call_id": "c2", "name": "b", "arguments": "{}", "status": "error", "content": "boom"})
    ends += tr.tool_event({"call_id": "c1", "name": "a", "arguments": '{"x":1}', "status": "ok", "content": "7"})
    assert [(e["type"], e["output_index"]) for e in ends] == [
        ("response.mcp_call.failed", 2), ("response.output_item.done", 2),
        ("response.mcp_call.completed", 1), ("response.output_item.done", 1)]  # fmt: skip
    assert ends[0]["item_id"] == opened[2]["item"]["id"] == ends[1]["item"]["id"]
    assert ends[3]["item"]["output"] == "7" and ends[1]["item"]["error"] == "boom"
    events += ends + tr.feed({"choices": [{"index": 0, "delta": {"content": "Done."}, "finish_reason": "stop"}]})
    events += tr.finish() + tr.completed()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    out = tr.response["output"]  # type: ignore[index]
    assert [(o["type"], o["status"]) for o in out] == [("message", "completed"), ("mcp_call", "completed"),
                                                      ("mcp_call", "failed"), ("mcp_call", "failed"),
                                                      ("message", "completed")]  # fmt: skip
    assert out[0]["content"][0]["text"] == "Checking." and out[4]["content"][0]["text"] == "Done."
