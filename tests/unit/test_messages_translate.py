"""Anthropic Messages inbound without a server: requests → chat requests, completions → messages, chunks →
Anthropic's event sequence (incl. a failure mid-stream), errors → Anthropic's shape, and the shared mappings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from portico.protocol.anthropic import anthropic_usage, finish_reason, image_block, image_url, openai_usage, stop_reason
from portico.protocol.chat import COMMENT_OBJECT, chunk_dict, comment_chunk, delta_choice
from portico.protocol.errors import InvalidRequest, PorticoError, RateLimited, UpstreamError
from portico.protocol.messages import MessagesRequest, to_chat_request
from portico.protocol.messages_out import MessageEvents, error_body, from_completion
from portico.server.sse import encode_named, translated

USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    req = MessagesRequest.model_validate({"model": "m", "max_tokens": 50, "messages": USER, **fields})
    return to_chat_request(req).model_dump(exclude_none=True)


def test_system_sampling_and_limits() -> None:
    c = chat(system=[{"type": "text", "text": "A. "}, {"type": "text", "text": "B."}], temperature=0.3, top_p=0.9,
             top_k=5, stop_sequences=["END"], metadata={"user_id": "u7"}, thinking={"type": "enabled"})  # fmt: skip
    assert c["messages"][0] == {"role": "system", "content": "A. B."}
    assert c["max_completion_tokens"] == 50 and c["stop"] == ["END"] and c["user"] == "u7"
    assert c["temperature"] == 0.3 and c["top_p"] == 0.9 and "top_k" not in c


def test_tool_use_and_tool_results_become_calls_and_tool_messages() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    c = chat(messages=[
        {"role": "user", "content": [image, {"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "tu_1", "name": "w", "input": {"city": "Oslo"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "snow"}]},
            {"type": "tool_result", "tool_use_id": "tu_2", "content": "down", "is_error": True},
            {"type": "text", "text": "and tomorrow?"},
        ]},
    ])["messages"]  # fmt: skip
    assert c[0]["content"][0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert c[1]["content"] == "checking"
    assert c[1]["tool_calls"] == [{"id": "tu_1", "type": "function",
                                   "function": {"name": "w", "arguments": '{"city":"Oslo"}'}}]  # fmt: skip
    assert c[2] == {"role": "tool", "tool_call_id": "tu_1", "content": "snow"}
    assert c[3] == {"role": "tool", "tool_call_id": "tu_2", "content": "Error: down"}
    assert c[4] == {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]}


def test_tools_and_tool_choice() -> None:
    tools = [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}, {"name": "x"}]
    c = chat(tools=tools, tool_choice={"type": "tool", "name": "w", "disable_parallel_tool_use": True})
    assert c["tools"][0] == {"type": "function", "function": {"name": "w", "parameters": {"type": "object"},
                                                              "description": "weather"}}  # fmt: skip
    assert c["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert c["tool_choice"] == {"type": "function", "function": {"name": "w"}} and c["parallel_tool_calls"] is False
    assert chat(tools=tools, tool_choice={"type": "any"})["tool_choice"] == "required"
    assert chat(tools=tools, tool_choice={"type": "none"})["tool_choice"] == "none"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
        ({"tools": [{"name": "w"}], "tool_choice": {"type": "tool", "name": "v"}}, "tool_choice.name"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "n", "input": {}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
         "messages[0].content[0].source"),
    ],
)  # fmt: skip
def test_translation_errors_name_the_field(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        chat(**fields)
    assert ei.value.param == param


def test_request_validation() -> None:
    for bad in ({"max_tokens": 0}, {"stop_sequences": list("abcde")}, {"temperature": 1.2},
                {"mcp_servers": [{"type": "url", "url": "https://x"}]}):  # fmt: skip
        with pytest.raises(ValidationError):
            MessagesRequest.model_validate({"model": "m", "max_tokens": 5, "messages": USER, **bad})


def test_completion_becomes_a_message() -> None:
    completion = {"id": "chatcmpl-1", "model": "up", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": "let me see", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                  "prompt_tokens_details": {"cached_tokens": 6}}}  # fmt: skip
    m = from_completion(completion, "m")
    assert m["id"].startswith("msg_") and m["type"] == "message" and m["model"] == "up"
    assert m["content"] == [{"type": "text", "text": "let me see"},
                            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Oslo"}}]  # fmt: skip
    assert m["stop_reason"] == "tool_use" and m["stop_sequence"] is None
    assert m["usage"] == {"input_tokens": 4, "output_tokens": 4, "cache_read_input_tokens": 6}
    bad = {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[1]"}}]}}]}
    with pytest.raises(UpstreamError):
        from_completion(bad, "m")


def test_mappings_read_both_ways() -> None:
    for finish in ("stop", "length", "tool_calls", "content_filter"):
        assert finish_reason(stop_reason(finish)) == finish
    assert stop_reason(None) == "end_turn" and stop_reason("function_call") == "tool_use"
    usage = openai_usage(5, 3, cache_read=2, cache_write=1)
    assert anthropic_usage(usage) == {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 2,
                                      "cache_creation_input_tokens": 1}  # fmt: skip
    for url in ("https://x/y.png", "data:image/jpeg;base64,QUJD"):
        assert image_url(image_block(url, "p")["source"], "p") == url


def _chunks(*deltas: dict[str, Any], finish: str = "stop") -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-9", "model": "up", "created": 1}
    out = [chunk_dict(**base, choices=[delta_choice(0, d)]) for d in deltas]
    out.append(chunk_dict(**base, choices=[delta_choice(0, {}, finish)]))
    out.append(chunk_dict(**base, choices=[], usage={"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}))
    return out


async def _stream(chunks: list[dict[str, Any]], fail: bool = False) -> AsyncIterator[dict[str, Any]]:
    for c in chunks:
        yield c
    if fail:
        raise UpstreamError("upstream timed out", status=504)


async def test_text_then_two_tool_calls_as_sequential_blocks() -> None:
    chunks = _chunks(
        {"role": "assistant", "content": ""}, {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
        {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": ""}}]},
        finish="tool_calls",
    )  # fmt: skip
    events = [e async for e in translated(MessageEvents("m"), _stream(chunks))]
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None), ("ping", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None),
    ]  # fmt: skip
    assert events[0]["message"]["model"] == "up" and events[0]["message"]["id"].startswith("msg_")
    assert events[5]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}
    assert events[7]["delta"] == {"type": "input_json_delta", "partial_json": ": 1}"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 8, "output_tokens": 5, "cache_read_input_tokens": 0}


async def test_a_failure_mid_stream_is_an_error_event() -> None:
    events = [e async for e in translated(MessageEvents("m"), _stream(_chunks({"content": "part"})[:1], fail=True))]
    assert [e["type"] for e in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                           "error"]  # fmt: skip
    assert events[-1]["error"] == {"type": "timeout_error", "message": "upstream timed out"}


def test_interleaved_tool_calls_fail_loudly() -> None:
    tr = MessageEvents("m")
    call = {"function": {"name": "f", "arguments": "{}"}}
    tr.feed(chunk_dict(id="c", model="m", created=1, choices=[delta_choice(0, {"tool_calls": [{"index": 0, **call}]})]))
    tr.feed(chunk_dict(id="c", model="m", created=1, choices=[delta_choice(0, {"tool_calls": [{"index": 1, **call}]})]))
    with pytest.raises(UpstreamError):
        tr.feed(chunk_dict(id="c", model="m", created=1, choices=[delta_choice(0, {"tool_calls": [{"index": 0}]})]))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("x"), "invalid_request_error"),
        (PorticoError("x", status=401), "authentication_error"),
        (PorticoError("x", status=404), "not_found_error"),
        (InvalidRequest("x", status=413), "request_too_large"),
        (RateLimited("x"), "rate_limit_error"),
        (UpstreamError("x", status=502), "api_error"),
        (UpstreamError("x", status=503), "overloaded_error"),
        (PorticoError("x", status=409), "invalid_request_error"),
    ],
)
def test_errors_in_anthropics_shape(error: PorticoError, kind: str) -> None:
    assert error_body(error) == {"type": "error", "error": {"type": kind, "message": "x"}}


async def test_keep_alive_comments_pass_through_as_sse_comments() -> None:
    chunks = [comment_chunk("running a tool"), *_chunks({"content": "ok"})]
    events = [e async for e in translated(MessageEvents("m"), _stream(chunks))]
    assert events[0]["object"] == COMMENT_OBJECT and events[1]["type"] == "message_start"
    wire = [b async for b in encode_named(_stream(events[:2]))]
    assert wire[0] == b": running a tool\n\n" and wire[1].startswith(b"event: message_start\ndata: {")
