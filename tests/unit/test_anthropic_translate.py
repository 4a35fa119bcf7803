"""Anthropic Messages translation: hand-written dicts for each mapping, then round trips against llm-katan."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from portico.config.schema import AnthropicDeployment
from portico.gateway.providers.anthropic import AnthropicProvider
from portico.gateway.providers.anthropic.stream import AnthropicStream
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest, UpstreamError

P = AnthropicProvider()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        },
    },
}


def dep(**kw: Any) -> AnthropicDeployment:
    return AnthropicDeployment(**{"provider": "anthropic", "model": "claude-test", "api_key": "sk-ant", **kw})


def req(messages: list[dict[str, Any]] | None = None, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "public", "messages": messages or [{"role": "user", "content": "hi"}], **kw}
    )


def body(messages: list[dict[str, Any]] | None = None, *, stream: bool = False, **kw: Any) -> dict[str, Any]:
    return P.chat_request(req(messages, **kw), dep(), stream=stream).body


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


# ---- request ----------------------------------------------------------------------------------------------


def test_url_headers_model_and_max_tokens() -> None:
    d = dep(base_url="https://proxy.example/", headers={"x-extra": "1"}, anthropic_version="2099-01-01")
    up = P.chat_request(req(), d, stream=False)
    assert up.url == "https://proxy.example/v1/messages"
    assert up.headers == {
        "x-api-key": "sk-ant",
        "anthropic-version": "2099-01-01",
        "content-type": "application/json",
        "x-extra": "1",
    }
    assert up.body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [text("hi")]}],
    }
    assert body(max_tokens=7)["max_tokens"] == 7
    assert body(max_tokens=7, max_completion_tokens=9)["max_tokens"] == 9
    assert "x-api-key" not in P.chat_request(req(), dep(api_key=None), stream=False).headers


def test_system_and_developer_go_to_top_level_in_order() -> None:
    b = body(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [text("Use French.")]},
            {"role": "system", "content": ""},
        ]
    )
    assert b["system"] == [text("Be brief."), text("Use French.")]
    assert b["messages"] == [{"role": "user", "content": [text("hi")]}]
    assert "system" not in body()


def test_system_image_is_rejected() -> None:
    img = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    with pytest.raises(InvalidRequest) as e:
        body([{"role": "system", "content": [text("a"), img]}, {"role": "user", "content": "hi"}])
    assert e.value.param == "messages[0].content[1]"


def test_json_modes_become_system_instructions() -> None:
    b = body(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert b["system"][0] == text("S")
    assert "Respond with only a JSON object" in b["system"][1]["text"]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    b = body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert len(b["system"]) == 1 and json.dumps(schema, separators=(",", ":")) in b["system"][0]["text"]
    assert "system" not in body(response_format={"type": "text"})


def test_consecutive_same_role_messages_are_merged() -> None:
    b = body(
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [text("b")]},
            {"role": "system", "content": "s"},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
            {"role": "user", "content": "e"},
        ]
    )
    assert b["messages"] == [
        {"role": "user", "content": [text("a"), text("b")]},
        {"role": "assistant", "content": [text("c"), text("d")]},
        {"role": "user", "content": [text("e")]},
    ]


def test_images_data_and_http_urls() -> None:
    parts = [
        text("look"),
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    content = body([{"role": "user", "content": parts}])["messages"][0]["content"]
    b64 = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    assert content == [
        text("look"),
        {"type": "image", "source": b64},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["ftp://x/y.png", "data:image/png,rawbytes", "data:;base64,AAAA"])
def test_unusable_image_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        body([{"role": "user", "content": [text("a"), {"type": "image_url", "image_url": {"url": url}}]}])
    assert e.value.param == "messages[0].content[1].image_url.url"


def test_unsupported_part_and_role_and_empty_input() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
    with pytest.raises(InvalidRequest, match="input_audio") as e:
        body([{"role": "user", "content": [audio]}])
    assert e.value.param == "messages[0].content[0]"
    with pytest.raises(InvalidRequest) as e:
        body([{"role": "user", "content": "a"}, {"role": "function", "name": "f", "content": "{}"}])
    assert e.value.param == "messages[1].role"
    with pytest.raises(InvalidRequest) as e:
        body([{"role": "user", "content": ""}])
    assert e.value.param == "messages[0].content"
    with pytest.raises(InvalidRequest) as e:
        body([{"role": "system", "content": "only a system prompt"}])
    assert e.value.param == "messages"


def test_tool_calls_and_results_round_trip() -> None:
    b = body(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [text("21C")]},
            {"role": "user", "content": "Thanks. Which is warmer?"},
        ],
        tools=[WEATHER],
    )
    assert b["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
        ],
    }
    # Both results and the follow-up question share one user turn, results first.
    assert b["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [text("21C")]},
            text("Thanks. Which is warmer?"),
        ],
    }
    assert len(b["messages"]) == 3


def test_tool_results_are_moved_before_text_in_a_merged_user_turn() -> None:
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "also"},
        {"role": "tool", "tool_call_id": "t", "content": ""},
    ]
    assert body(msgs)["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "t"}, text("also")]


@pytest.mark.parametrize("args", ["{not json", "[1, 2]"])
def test_bad_tool_call_arguments_name_the_field(args: str) -> None:
    msgs = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "ok",
            "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "function": {"name": "f", "arguments": args}},
            ],
        },
    ]
    with pytest.raises(InvalidRequest) as e:
        body(msgs)
    assert e.value.param == "messages[1].tool_calls[1].function.arguments"


def test_tools_definitions() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    b = body(tools=[WEATHER, bare])
    assert b["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in b and "tools" not in body()


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ("none", False, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"tools": [WEATHER], "tool_choice": choice, "parallel_tool_calls": parallel}
    assert body(**{k: v for k, v in kw.items() if v is not None})["tool_choice"] == expected


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "nope"}}, {"type": "custom"}])
def test_bad_tool_choice(choice: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as e:
        body(tools=[WEATHER], tool_choice=choice)
    assert e.value.param == "tool_choice"


def test_sampling_stop_user_and_stream() -> None:
    b = body(temperature=1.6, top_p=0.9, stop="END", user="u-42", seed=3, presence_penalty=1, n=3, stream=True)
    assert (b["temperature"], b["top_p"], b["stop_sequences"]) == (1.0, 0.9, ["END"])
    assert b["metadata"] == {"user_id": "u-42"}
    assert b["stream"] is True
    for dropped in ("seed", "presence_penalty", "n", "user", "stop"):
        assert dropped not in b
    b = body(temperature=0.3, stop=["a", "b"])
    assert (b["temperature"], b["stop_sequences"], "stream" in b) == (0.3, ["a", "b"], False)


def test_logprobs_are_rejected() -> None:
    with pytest.raises(InvalidRequest, match="logprobs") as e:
        body(logprobs=True)
    assert e.value.param == "logprobs"


def test_embeddings_are_rejected() -> None:
    er = EmbeddingRequest(model="m", input="x")
    with pytest.raises(InvalidRequest):
        P.embeddings_request(er, dep())
    with pytest.raises(InvalidRequest):
        P.embeddings_response({}, er, dep())
    assert P.name == "anthropic" and P.native_dimensions is False


# ---- response ---------------------------------------------------------------------------------------------


def message(**kw: Any) -> dict[str, Any]:
    base = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "stop_reason": "end_turn",
        "content": [text("Hello, "), {"type": "thinking", "thinking": "hmm"}, text("world")],
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    return {**base, **kw}


def test_text_response() -> None:
    out = P.chat_response(message(), req(), dep())
    assert (out["id"], out["object"], out["model"]) == ("msg_1", "chat.completion", "claude-x")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_tool_use_response() -> None:
    content = [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris", "n": [1, 2]}}]
    out = P.chat_response(message(content=content, stop_reason="tool_use"), req(), dep())
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","n":[1,2]}'},
        }
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(reason: str, expected: str) -> None:
    assert P.chat_response(message(stop_reason=reason), req(), dep())["choices"][0]["finish_reason"] == expected


def test_usage_with_cache_tokens() -> None:
    usage = {"input_tokens": 4, "output_tokens": 7, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
    out = P.chat_response(message(usage=usage), req(), dep())
    assert out["usage"] == {
        "prompt_tokens": 124,
        "completion_tokens": 7,
        "total_tokens": 131,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
    }


def test_error_and_malformed_bodies() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamError, match="Overloaded"):
        P.chat_response(err, req(), dep())
    with pytest.raises(UpstreamError, match="content"):
        P.chat_response({"id": "x", "type": "message"}, req(), dep())
    assert P.error_message(529, orjson.dumps(err)) == "Overloaded"
    assert P.error_message(500, b"gateway exploded") == "gateway exploded"


# ---- stream -----------------------------------------------------------------------------------------------


def ev(kind: str, **data: Any) -> tuple[str, bytes]:
    return kind, orjson.dumps({"type": kind, **data})


def run(events: list[tuple[str | None, bytes]], tr: AnthropicStream | None = None) -> list[dict[str, Any]]:
    tr = tr or P.stream_translator(req(), dep())
    chunks = [c for e, d in events for c in tr.feed(e, d)]
    return chunks + tr.finish()


START = ev(
    "message_start",
    message={
        "id": "msg_s",
        "model": "claude-s",
        "content": [],
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3},
    },
)


def test_stream_text() -> None:
    chunks = run(
        [
            START,
            ev("content_block_start", index=0, content_block=text("")),
            ev("ping"),
            ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hel"}),
            ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "lo"}),
            ev("content_block_stop", index=0),
            ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 6}),
            ev("message_stop"),
            (None, b""),
        ]
    )
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        None,
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("msg_s", chunks[0]["created"], "claude-s", "chat.completion.chunk")
    }
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 6,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 3},
    }


def test_stream_tool_use_with_json_pieces() -> None:
    def tool(index: int, tid: str) -> tuple[str, bytes]:
        block = {"type": "tool_use", "id": tid, "name": "get_weather", "input": {}}
        return ev("content_block_start", index=index, content_block=block)

    def piece(index: int, s: str) -> tuple[str, bytes]:
        return ev("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": s})

    chunks = run(
        [
            START,
            ev("content_block_start", index=0, content_block=text("Checking.")),
            tool(1, "toolu_a"),
            piece(1, ""),
            piece(1, '{"city": '),
            piece(1, '"Paris"}'),
            ev("content_block_stop", index=1),
            tool(2, "toolu_b"),
            piece(2, '{"city": "Rome"}'),
            ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 30}),
        ]
    )
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[1] == {"content": "Checking."}
    assert deltas[2] == {
        "tool_calls": [
            {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ]
    }
    assert deltas[3] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}
    assert deltas[5]["tool_calls"][0]["index"] == 1 and deltas[5]["tool_calls"][0]["id"] == "toolu_b"
    args = {0: "", 1: ""}
    for d in deltas:
        for call in d.get("tool_calls", []):
            args[call["index"]] += call["function"]["arguments"]
    assert {k: json.loads(v) for k, v in args.items()} == {0: {"city": "Paris"}, 1: {"city": "Rome"}}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_error_event_and_bad_data() -> None:
    tr = P.stream_translator(req(), dep())
    tr.feed(*START)
    with pytest.raises(UpstreamError, match="Overloaded") as e:
        tr.feed(*ev("error", error={"type": "overloaded_error", "message": "Overloaded"}))
    assert e.value.status == 502
    with pytest.raises(UpstreamError):
        tr.feed("content_block_delta", b"{truncated")


def test_stream_without_event_names_and_independent_state() -> None:
    a, b = P.stream_translator(req(), dep()), P.stream_translator(req(), dep())
    assert a is not b
    chunks = run([(None, d) for _, d in [START, ev("message_delta", delta={"stop_reason": "refusal"})]], a)
    assert chunks[1]["choices"][0]["finish_reason"] == "content_filter"
    # A stream that never started still yields a well-formed usage chunk under the deployment's model.
    (last,) = b.finish()
    assert last["choices"] == [] and last["model"] == "claude-test" and last["usage"]["total_tokens"] == 0
