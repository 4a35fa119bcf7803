"""The Responses API's translation without a server: items → chat messages, tools and formats, a completion → a
response object, chunks → semantic events (incl. a failure mid-stream), and the stored-responses table."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from portico.protocol.chat import chunk_dict, completion_chunks, delta_choice
from portico.protocol.errors import InvalidRequest, UpstreamError
from portico.protocol.responses import ResponsesRequest, to_chat_request
from portico.protocol.responses_out import ResponseEvents, ResponseHead, from_completion
from portico.server.responses import _events
from portico.storage.db import Database
from portico.storage.responses import ResponseStore, responses


def req(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def chat(**fields: Any) -> dict[str, Any]:
    return to_chat_request(req(**fields), []).model_dump(exclude_none=True, by_alias=True)


def test_string_input_and_instructions() -> None:
    c = chat(instructions="Be terse.", max_output_tokens=9, temperature=0.5, user="u1")
    assert c["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert c["max_completion_tokens"] == 9 and c["temperature"] == 0.5 and c["user"] == "u1"
    assert "stream" not in c and "tools" not in c


def test_items_become_messages_with_calls_grouped() -> None:
    items = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"a\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
    ]  # fmt: skip
    m = chat(input=items)["messages"]
    assert m[0] == {"role": "developer", "content": "rules"}
    assert m[1]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    assert m[2]["content"] == "calling" and [t["id"] for t in m[2]["tool_calls"]] == ["c1", "c2"]
    assert m[3] == {"role": "tool", "tool_call_id": "c1", "content": "one"}
    assert m[4] == {"role": "tool", "tool_call_id": "c2", "content": "two"}
    assert len(m) == 5  # the reasoning item is dropped


def test_function_call_without_preceding_text_opens_an_assistant_message() -> None:
    m = chat(input=[{"role": "user", "content": "q"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}])["messages"]  # fmt: skip
    assert m[1]["role"] == "assistant" and "content" not in m[1] and m[1]["tool_calls"][0]["id"] == "c"


def test_history_comes_before_input() -> None:
    history = req(input=[{"role": "user", "content": "old"}]).items()
    c = to_chat_request(req(instructions="new"), history)
    assert [m.role for m in c.messages] == ["system", "user", "user"] and c.messages[1].text() == "old"


def test_tools_tool_choice_and_text_format() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    c = chat(tools=[tool], tool_choice={"type": "function", "name": "f"}, parallel_tool_calls=False,
             text={"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}},
             reasoning={"effort": "low"}, metadata={"conversation_id": "c9"})  # fmt: skip
    assert c["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                            "strict": True}}]  # fmt: skip
    assert c["tool_choice"] == {"type": "function", "function": {"name": "f"}} and c["parallel_tool_calls"] is False
    assert c["response_format"] == {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"},
                                                                           "strict": True}}  # fmt: skip
    assert c["reasoning_effort"] == "low" and c["metadata"] == {"conversation_id": "c9"}
    assert chat(text={"format": {"type": "json_object"}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat(text={"format": {"type": "text"}})
    assert "tool_choice" not in chat(tool_choice="none")  # no tools: nothing to choose from upstream


def test_allowed_tools_narrow_the_tool_list() -> None:
    tools = [{"type": "function", "name": n} for n in ("a", "b", "c")]
    c = chat(tools=tools, tool_choice={"type": "allowed_tools", "mode": "required",
                                       "tools": [{"type": "function", "name": "b"}]})  # fmt: skip
    assert [t["function"]["name"] for t in c["tools"]] == ["b"] and c["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "file_search"}}, "tool_choice.type"),
        ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
         "input[0].content"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].file_data"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0]"),
        ({"input": []}, "input"),
    ],
)  # fmt: skip
def test_translation_errors_name_the_field(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        chat(**fields)
    assert ei.value.param == param


def test_request_validation() -> None:
    for bad in ({"top_logprobs": 2}, {"metadata": {str(i): "v" for i in range(17)}}, {"truncation": "maybe"}):
        with pytest.raises(ValidationError):
            req(**bad)


def test_completion_becomes_a_response_object() -> None:
    head = ResponseHead(req(instructions="x", metadata={"a": "b"}))
    completion = {"model": "up", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "let me check",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                  "prompt_tokens_details": {"cached_tokens": 2}}}  # fmt: skip
    r = from_completion(head, completion)
    assert r["id"] == head.id and r["status"] == "completed" and r["model"] == "up" and r["metadata"] == {"a": "b"}
    assert [i["type"] for i in r["output"]] == ["message", "function_call"]
    assert r["output"][0]["content"][0] == {"type": "output_text", "text": "let me check", "annotations": [],
                                            "logprobs": []}  # fmt: skip
    assert r["output"][1]["call_id"] == "call_1" and r["output"][1]["status"] == "completed"
    assert r["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 3,
                          "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10}  # fmt: skip


def test_length_and_content_filter_are_incomplete() -> None:
    for finish, reason in (("length", "max_output_tokens"), ("content_filter", "content_filter")):
        r = from_completion(ResponseHead(req()), {"choices": [{"finish_reason": finish, "message": {"content": "x"}}]})
        assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": reason}
    refusal = {"choices": [{"finish_reason": "stop", "message": {"content": None, "refusal": "no"}}]}
    assert from_completion(ResponseHead(req()), refusal)["output"][0]["content"] == [{"type": "refusal",
                                                                                      "refusal": "no"}]  # fmt: skip


def _chunks(*deltas: dict[str, Any], finish: str = "stop") -> list[dict[str, Any]]:
    base = {"id": "c", "model": "up", "created": 1}
    out = [chunk_dict(**base, choices=[delta_choice(0, d)]) for d in deltas]
    out.append(chunk_dict(**base, choices=[delta_choice(0, {}, finish)]))
    out.append(chunk_dict(**base, choices=[], usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}))
    return out


def _run(events: ResponseEvents, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = events.start()
    for c in chunks:
        out += events.feed(c)
    return out + events.finish() + events.completed()


def test_text_then_tool_calls_stream_as_ordered_events() -> None:
    chunks = _chunks(
        {"role": "assistant", "content": "Hel"}, {"content": "lo"},
        {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"x"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
        {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]},
        finish="tool_calls",
    )  # fmt: skip
    events = _run(ResponseEvents(ResponseHead(req())), chunks)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [(e["type"], e.get("output_index")) for e in events] == [
        ("response.created", None), ("response.in_progress", None),
        ("response.output_item.added", 0), ("response.content_part.added", 0),
        ("response.output_text.delta", 0), ("response.output_text.delta", 0),
        ("response.output_item.added", 1), ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.output_item.added", 2), ("response.function_call_arguments.delta", 2),
        ("response.output_text.done", 0), ("response.content_part.done", 0), ("response.output_item.done", 0),
        ("response.function_call_arguments.done", 1), ("response.output_item.done", 1),
        ("response.function_call_arguments.done", 2), ("response.output_item.done", 2),
        ("response.completed", None),
    ]  # fmt: skip
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["output"][1]["arguments"] == '{"x": 1}' and final["output"][1]["call_id"] == "call_a"
    assert final["output"][2]["name"] == "g" and final["usage"]["total_tokens"] == 6
    assert events[2]["item"]["status"] == "in_progress" and events[13]["item"]["status"] == "completed"


def test_an_empty_answer_is_one_empty_message_and_length_is_incomplete() -> None:
    events = _run(ResponseEvents(ResponseHead(req())), _chunks(finish="length"))
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" not in kinds and kinds[-1] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


async def _failing(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for c in chunks:
        yield c
    raise UpstreamError("upstream went away", status=502)


class _NoStore:
    async def save(self, *args: Any) -> None:
        raise AssertionError("a failed response is not stored")


class _Runtime:
    responses = _NoStore()


async def test_a_failure_mid_stream_ends_with_response_failed() -> None:
    r = req(stream=True)
    gen = _events(_Runtime(), r, ResponseHead(r), _failing(_chunks({"content": "partial"})[:1]), "o", [], [])  # type: ignore[arg-type]
    events = [e async for e in gen]
    last = events[-1]
    assert last["type"] == "response.failed" and last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "upstream_error", "message": "upstream went away"}
    assert last["response"]["output"][0]["content"] == []  # the item never closed: what arrived is not claimed


def test_completion_chunks_replayed_give_the_same_output_as_the_completion() -> None:
    completion = {"id": "c", "model": "up", "created": 1, "choices": [{"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": "cached answer"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}  # fmt: skip
    events = _run(ResponseEvents(ResponseHead(req())), completion_chunks(completion))
    streamed = events[-1]["response"]
    whole = from_completion(ResponseHead(req()), completion)
    assert streamed["output"][0]["content"] == whole["output"][0]["content"]
    assert streamed["usage"] == whole["usage"]


# ---- the store (SQLite and PostgreSQL) --------------------------------------------------------------------


async def test_store_owner_isolation_expiry_and_delete(store_db: Database) -> None:
    store = ResponseStore(store_db, retention_seconds=60)
    await store.save("key-a", {"id": "resp_1", "output": []}, [{"id": "msg_1"}], [{"id": "msg_1"}])
    assert (await store.get("key-a", "resp_1"))["input_items"] == [{"id": "msg_1"}]
    assert await store.get("key-b", "resp_1") is None
    assert not await store.delete("key-b", "resp_1")
    assert await store.delete("key-a", "resp_1") and await store.get("key-a", "resp_1") is None
    expired = ResponseStore(store_db, retention_seconds=1e-6)
    await expired.save("key-a", {"id": "resp_2", "output": []}, [], [])
    time.sleep(0.01)
    assert await expired.get("key-a", "resp_2") is None
    keep = ResponseStore(store_db, retention_seconds=None)
    await keep.save("key-a", {"id": "resp_4", "output": []}, [], [])
    time.sleep(0.01)
    # A store's first write (then one every purge_every seconds) deletes the expired rows.
    await ResponseStore(store_db, retention_seconds=60).save("key-a", {"id": "resp_5", "output": []}, [], [])
    async with store_db.engine.connect() as conn:
        ids = {r[0] for r in await conn.execute(select(responses.c.id))}
    assert ids == {"resp_4", "resp_5"}
