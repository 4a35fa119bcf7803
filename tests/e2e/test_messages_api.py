"""``/v1/messages`` driven by the official anthropic SDK against a real ``portico serve``: create, stream (SDK
helper and the raw event sequence), tools and tool results, count_tokens (the local model's own tokenizer), images,
errors in Anthropic's shape, keys by ``x-api-key`` or bearer, limits. Upstreams: llm-katan's echo model speaking
OpenAI (``oai``) and Anthropic (``claude``), and the local model."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_responses_api import keyed_server, new_key

WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# A 1x1 transparent PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
        "0000050001e226059b0000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def claude(portico: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=portico, api_key="x", max_retries=0, timeout=120)


def test_create_with_system_and_usage(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="oai", max_tokens=64, system="Be brief.",
                               messages=[{"role": "user", "content": "hello there"}])  # fmt: skip
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    [block] = m.content
    assert block.type == "text" and "User: hello there" in block.text and "messages=2" in block.text
    assert m.stop_reason == "end_turn" and m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_multi_turn_with_system_blocks(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model="oai",
        max_tokens=64,
        system=[{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}],
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
    )
    assert "messages=4" in m.content[0].text and "User: second" in m.content[0].text


def test_stream_helper_text_and_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="oai", max_tokens=64, messages=[{"role": "user", "content": "stream"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert "User: stream" in text and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def _raw_events(portico: str, body: dict) -> list[tuple[str, dict]]:
    """(event name, data) pairs of a raw SSE stream."""
    out = []
    with httpx.stream("POST", f"{portico}/v1/messages", json={"stream": True, **body},
                      headers={"anthropic-version": "2023-06-01"}, timeout=60) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name
                out.append((name, data))
    return out


def test_raw_stream_follows_anthropics_event_sequence(portico: str) -> None:
    events = _raw_events(portico, {"model": "oai", "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]})
    names = [n for n, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas > 1
    assert names == ["message_start", "ping", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for n, d in events if n == "content_block_delta")
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 0 and delta["usage"]["input_tokens"] > 0


def test_tool_use_and_tool_result_round_trip(claude: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    m1 = claude.messages.create(model="oai", max_tokens=64, messages=[ask], tools=[WEATHER])
    [use] = m1.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.input["city"] and m1.stop_reason == "tool_use"
    m2 = claude.messages.create(
        model="oai",
        max_tokens=64,
        messages=[
            ask,
            {"role": "assistant", "content": m1.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )
    assert "messages=3" in m2.content[0].text  # question, tool call, tool result


def test_tool_use_streams_input_json(portico: str, claude: anthropic.Anthropic) -> None:
    body = {"model": "oai", "max_tokens": 64, "messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER]}
    events = _raw_events(portico, body)
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    parts = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert parts and all(d["delta"]["type"] == "input_json_delta" for n, d in events if n == "content_block_delta")
    assert json.loads("".join(parts))["city"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    with claude.messages.stream(**body) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input["city"]


def test_image_blocks_are_accepted(claude: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    turn = {"role": "user", "content": [image, {"type": "text", "text": "what?"}]}
    m = claude.messages.create(model="oai", max_tokens=32, messages=[turn])
    assert "what?" in m.content[0].text


def test_anthropic_upstream_round_trip(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="claude", max_tokens=55, stop_sequences=["zzz"],
                               messages=[{"role": "user", "content": "hello"}])  # fmt: skip
    assert "max_tokens=55" in m.content[0].text


def test_count_tokens_uses_the_local_models_tokenizer(claude: anthropic.Anthropic, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count the tokens of this sentence, please."}]
    counted = claude.messages.count_tokens(model="local", system="Be brief.", messages=messages).input_tokens
    chat = client.chat.completions.create(model="local", max_tokens=1,
                                          messages=[{"role": "system", "content": "Be brief."}, *messages])  # fmt: skip
    assert counted == chat.usage.prompt_tokens
    longer = claude.messages.count_tokens(model="oai", messages=[{"role": "user", "content": "word " * 200}])
    shorter = claude.messages.count_tokens(model="oai", messages=messages)
    assert longer.input_tokens > shorter.input_tokens > 0


def test_local_model_create_and_stream(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="local", max_tokens=6, messages=[{"role": "user", "content": "Tell a story."}])
    assert m.stop_reason == "max_tokens" and m.content[0].text and m.usage.output_tokens <= 6
    with claude.messages.stream(model="local", max_tokens=6, messages=[{"role": "user", "content": "Hi"}]) as s:
        text = "".join(s.text_stream)
    assert text == s.get_final_message().content[0].text and text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 10, "messages": []}, "messages"),
        ({"max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "role"),
        ({"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "document"),
        ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
          "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search_20250305"),
        ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "stop_sequences": list("abcde")},
         "stop_sequences"),
        ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}, "temperature"),
    ],
)  # fmt: skip
def test_bad_requests_are_400s_in_anthropics_shape(portico: str, body: dict, needle: str) -> None:
    r = httpx.post(f"{portico}/v1/messages", json={"model": "oai", **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert needle in r.json()["error"]["message"]


def test_sdk_errors_carry_anthropics_shape(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as ei:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert ei.value.body["type"] == "error" and ei.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="oai", max_tokens=0, messages=[{"role": "user", "content": "x"}])


# ---- keys ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with keyed_server(katan, tmp_path_factory.mktemp("messages-keys")) as server:
        yield server["url"]


def _key(url: str, **fields: object) -> str:
    return new_key(url, **fields)[1]


HI = [{"role": "user", "content": "hi"}]


def test_keys_by_x_api_key_or_bearer(keyed: str) -> None:
    key = _key(keyed)
    by_header = anthropic.Anthropic(base_url=keyed, api_key=key, max_retries=0)
    assert by_header.messages.create(model="oai", max_tokens=8, messages=HI).content[0].text
    by_bearer = anthropic.Anthropic(base_url=keyed, auth_token=key, max_retries=0)
    assert by_bearer.messages.create(model="oai", max_tokens=8, messages=HI).content[0].text
    with pytest.raises(anthropic.AuthenticationError) as ei:
        anthropic.Anthropic(base_url=keyed, api_key="pk-wrong", max_retries=0).messages.create(
            model="oai", max_tokens=8, messages=HI
        )
    assert ei.value.body["error"]["type"] == "authentication_error"
    r = httpx.post(keyed + "/v1/messages", json={"model": "oai", "max_tokens": 8, "messages": HI})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_rate_limit_is_a_429_rate_limit_error(keyed: str) -> None:
    sdk = anthropic.Anthropic(base_url=keyed, api_key=_key(keyed, rpm=1), max_retries=0)
    sdk.messages.create(model="oai", max_tokens=8, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as ei:
        sdk.messages.create(model="oai", max_tokens=8, messages=HI)
    assert ei.value.body["error"]["type"] == "rate_limit_error" and ei.value.response.headers["retry-after"]


def test_model_permission_is_a_403_permission_error(keyed: str) -> None:
    sdk = anthropic.Anthropic(base_url=keyed, api_key=_key(keyed, models=["other"]), max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as ei:
        sdk.messages.create(model="oai", max_tokens=8, messages=HI)
    assert ei.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        sdk.messages.count_tokens(model="oai", messages=HI)


def test_local_model_takes_text_blocks_and_refuses_images(claude: anthropic.Anthropic) -> None:
    blocks = [{"type": "text", "text": "Say hi"}, {"type": "text", "text": " politely."}]
    m = claude.messages.create(model="local", max_tokens=4, messages=[{"role": "user", "content": blocks}])
    assert m.content[0].text
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    with pytest.raises(anthropic.BadRequestError) as ei:
        claude.messages.create(model="local", max_tokens=4, messages=[{"role": "user", "content": [image]}])
    assert "text only" in ei.value.body["error"]["message"]
