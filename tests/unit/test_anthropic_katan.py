"""AnthropicProvider against a real Anthropic-format server: llm-katan (echo backend) in a subprocess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from portico.config.schema import AnthropicDeployment
from portico.protocol.chat import ChatCompletionRequest
from tests.support import free_port, katan_cmd, running
from tests.unit.test_anthropic_translate import WEATHER, P, dep, req

# ---- against a real Anthropic-compatible server (llm-katan, echo backend) ---------------------------------

KEY = "katan-test-key"


@pytest.fixture(scope="module")
def katan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnthropicDeployment]:
    tmp, port = tmp_path_factory.mktemp("katan"), free_port()
    cmd = katan_cmd(port, tmp, "--validate-keys", "--api-keys", f"anthropic={KEY}")
    base = f"http://127.0.0.1:{port}"
    with running(cmd, base + "/health", tmp / "katan.log"):
        yield dep(base_url=base, api_key=KEY, model="claude-katan")


def send(d: AnthropicDeployment, r: ChatCompletionRequest) -> dict[str, Any]:
    up = P.chat_request(r, d, stream=False)
    resp = httpx.post(up.url, headers=up.headers, json=up.body, params=up.params, timeout=30)
    assert resp.status_code == 200, P.error_message(resp.status_code, resp.content)
    return P.chat_response(resp.json(), r, d)


def send_stream(d: AnthropicDeployment, r: ChatCompletionRequest) -> list[dict[str, Any]]:
    """POST with stream=True, split the SSE by hand and run every event through the translator."""
    up, tr = P.chat_request(r, d, stream=True), P.stream_translator(r, d)
    chunks: list[dict[str, Any]] = []
    event: str | None = None
    data: list[str] = []
    with httpx.stream("POST", up.url, headers=up.headers, json=up.body, params=up.params, timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                chunks += tr.feed(event, "\n".join(data).encode())
                event, data = None, []
    return chunks + tr.finish()


def chat(**kw: Any) -> ChatCompletionRequest:
    msgs = [
        {"role": "system", "content": "You echo."},
        {"role": "user", "content": "hello"},
        {"role": "user", "content": "katan"},
    ]
    return req(msgs, temperature=1.7, max_tokens=42, **kw)


def test_katan_text(katan: AnthropicDeployment) -> None:
    out = send(katan, chat())
    content = out["choices"][0]["message"]["content"]
    # System + one merged user turn; temperature clamped to Anthropic's range.
    assert "messages=2 max_tokens=42 temperature=1.0" in content and "User: hello\nkatan" in content
    assert out["choices"][0]["finish_reason"] == "stop" and out["id"].startswith("msg_")
    assert out["model"] == "claude-katan" and out["usage"]["prompt_tokens"] > 0


def test_katan_text_stream(katan: AnthropicDeployment) -> None:
    chunks = send_stream(katan, chat())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "User: hello\nkatan" in content
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1


def test_katan_tool_call(katan: AnthropicDeployment) -> None:
    out = send(katan, chat(tools=[WEATHER], tool_choice="auto"))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("toolu_")
    assert json.loads(call["function"]["arguments"]) == {"city": "test_city", "unit": "celsius"}


def test_katan_tool_call_stream_and_result_turn(katan: AnthropicDeployment) -> None:
    chunks = send_stream(katan, chat(tools=[WEATHER]))
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"].startswith("toolu_") and calls[0]["function"]["name"] == "get_weather"
    args = "".join(tc["function"]["arguments"] for tc in calls)
    assert json.loads(args) == {"city": "test_city", "unit": "celsius"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    # Send the call back with its result: the server accepts the tool_use / tool_result turns.
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": calls[0]["id"], "function": {"name": "get_weather", "arguments": args}}],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
    ]
    out = send(katan, req(msgs))
    assert "messages=3" in out["choices"][0]["message"]["content"]
    assert "User: sunny" in out["choices"][0]["message"]["content"]


def test_katan_rejects_wrong_key(katan: AnthropicDeployment) -> None:
    up = P.chat_request(req(), katan.model_copy(update={"api_key": None}), stream=False)
    resp = httpx.post(up.url, headers={**up.headers, "x-api-key": "wrong"}, json=up.body, timeout=30)
    assert resp.status_code == 401
    assert "invalid API key" in P.error_message(resp.status_code, resp.content)
