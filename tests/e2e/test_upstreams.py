"""The official OpenAI SDK against Portico, with llm-katan as the OpenAI, Anthropic, Gemini, Vertex and Azure
upstream. The same client code must get OpenAI-shaped answers, tool calls included, from every format."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

UPSTREAMS = ["oai", "claude", "gem", "vtx", "az"]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize("model", UPSTREAMS)
def test_chat_plain(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "ping from the sdk"}], max_tokens=50
    )
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert "ping from the sdk" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert raw.headers["x-portico-model"] == f"{'vertex' if model == 'vtx' else _provider(model)}/echo"
    assert raw.headers["x-request-id"]


def _provider(model: str) -> str:
    return {"oai": "openai", "claude": "anthropic", "gem": "gemini", "az": "azure"}[model]


@pytest.mark.parametrize("model", UPSTREAMS)
def test_chat_stream_with_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "stream me please" in text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_stream_without_usage_request_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="oai", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


@pytest.mark.parametrize("model", UPSTREAMS)
def test_tool_calls(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    assert call.id

    # The tool result goes back in the conversation; every format must accept the round trip.
    follow = client.chat.completions.create(
        model=model,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
    )
    assert follow.choices[0].message.role == "assistant"


@pytest.mark.parametrize("model", ["oai", "claude", "gem"])
def test_tool_call_stream(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather in Rome?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    names, args, finish = [], "", None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                args += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    assert names == ["get_weather"]
    assert isinstance(json.loads(args), dict)
    assert finish == "tool_calls"


@pytest.mark.parametrize("model", ["oai", "claude", "gem"])
def test_json_mode(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "give me json"}],
        response_format={"type": "json_object"},
    )
    assert resp.choices[0].message.content  # echo backends cannot obey; the request must still translate


def test_n_choices_from_a_provider_without_n(client: openai.OpenAI) -> None:
    # Anthropic returns one message per call: the gateway makes n calls and merges them.
    resp = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "two"}], n=2)
    assert [c.index for c in resp.choices] == [0, 1]
    assert all("two" in c.message.content for c in resp.choices)


def test_unknown_fields_pass_through_to_openai_upstreams(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="oai",
        messages=[{"role": "user", "content": "x"}],
        extra_body={"top_k": 5, "repetition_penalty": 1.1},
        seed=7,
        user="u-1",
        metadata={"team": "a"},
        stop=["END"],
        temperature=0.3,
        top_p=0.9,
    )
    assert resp.choices[0].message.content


def test_application_runs_its_pipeline(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="helper", messages=[{"role": "user", "content": "hello app"}]
    )
    resp = raw.parse()
    # llm-katan echoes how many messages it received: the app's system prompt makes two.
    assert "messages=2" in resp.choices[0].message.content
    assert raw.headers["x-portico-model"] == "openai/echo"


def test_fallback_to_next_model_when_upstream_is_down(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": "fallback please"}]
    )
    assert raw.headers["x-portico-model"] == "openai/echo"
    assert "fallback please" in raw.parse().choices[0].message.content


def test_stream_fallback_before_first_byte(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "fb stream"}], stream=True)
    )
    assert "fb stream" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_upstream_unreachable_is_503_with_reason(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model="down", messages=[{"role": "user", "content": "x"}])
    assert ei.value.status_code == 503
    err = ei.value.body
    assert err["code"] == "upstream_unreachable"
    assert "cannot reach upstream" in err["message"]


def test_disconnect_cancels_upstream_stream(portico: str) -> None:
    """The slow upstream needs ~300 ms per chunk; after the client leaves, Portico's in-flight count for it
    must drop to zero long before the stream could have finished on its own."""
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": " ".join(["word"] * 200)}]}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{portico}/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()  # kept open: closing the iterator would close the response
            assert next(line for line in lines if line.startswith("data: "))
            assert _inflight(http, portico) == 1
        # Leaving the block closed the connection mid-stream.
        deadline = time.monotonic() + 10
        while _inflight(http, portico) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _inflight(http, portico) == 0


def _inflight(http: httpx.Client, portico: str) -> int:
    return http.get(f"{portico}/readyz").json()["inflight"]["slow/openai/echo"]
