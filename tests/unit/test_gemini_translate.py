"""Gemini translation: hand-written request/response dicts, stream sequences, and a real llm-katan server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from portico.config.schema import GeminiDeployment
from portico.gateway.providers.base import UpstreamRequest
from portico.gateway.providers.gemini import GeminiProvider
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.errors import InvalidRequest, UpstreamError
from tests.support import free_port, katan_cmd, running

P = GeminiProvider()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def gem(**kw: Any) -> GeminiDeployment:
    return GeminiDeployment.model_validate({"provider": "gemini", "model": "gemini-2.0-flash", "api_key": "gkey", **kw})


def vertex(**kw: Any) -> GeminiDeployment:
    base = {"provider": "vertex", "model": "gemini-2.0-flash", "api_key": "tok", "project": "proj"}
    return GeminiDeployment.model_validate({**base, "base_url": "https://vertex.example", **kw})


def req(messages: list[dict[str, Any]] | None = None, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "public", "messages": messages or [{"role": "user", "content": "hi"}], **kw}
    )


def body(messages: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return P.chat_request(req(messages, **kw), gem(), stream=False).body


def invalid_param(messages: list[dict[str, Any]], **kw: Any) -> str | None:
    with pytest.raises(InvalidRequest) as exc:
        body(messages, **kw)
    return exc.value.param


def call(name: str, args: str, id: str = "c1") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": args}}


# ---- URLs and auth ---------------------------------------------------------------------------------------


def test_google_ai_urls_and_headers() -> None:
    up = P.chat_request(req(), gem(headers={"x-extra": "1"}), stream=False)
    assert up.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    assert up.headers == {"content-type": "application/json", "x-extra": "1"}
    assert up.params == {"key": "gkey"}
    up = P.chat_request(req(), gem(api_version="v1", base_url="http://h/"), stream=True)
    assert up.url == "http://h/v1/models/gemini-2.0-flash:streamGenerateContent"
    assert up.params == {"alt": "sse", "key": "gkey"}


def test_vertex_urls_and_bearer_token() -> None:
    up = P.chat_request(req(), vertex(location="europe-west4"), stream=True)
    base = "https://vertex.example/v1/projects/proj/locations/europe-west4/publishers/google/models/gemini-2.0-flash"
    assert (up.url, up.params) == (base + ":streamGenerateContent", {"alt": "sse"})
    assert up.headers["authorization"] == "Bearer tok" and "x-goog-api-key" not in up.headers
    default = GeminiDeployment(provider="vertex", model="m", api_key="t", project="p")
    assert P.chat_request(req(), default, stream=False).url.startswith("https://us-central1-aiplatform.googleapis.com/")


# ---- messages --------------------------------------------------------------------------------------------


def test_roles_system_instruction_and_merging() -> None:
    b = body([
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "no emoji"}]},
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "d"},
    ])  # fmt: skip
    assert b["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "no emoji"}]}
    assert b["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
        {"role": "user", "parts": [{"text": "d"}]},
    ]
    assert "tools" not in b and "generationConfig" not in b


def test_image_parts() -> None:
    def image(url: str) -> dict[str, Any]:
        content = [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}]
        return body([{"role": "user", "content": content}])["contents"][0]["parts"][1]

    assert image("data:image/png;base64,iVBO") == {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    assert image("https://x.io/cat.png?s=1") == {
        "fileData": {"mimeType": "image/png", "fileUri": "https://x.io/cat.png?s=1"}
    }
    assert image("http://x.io/cat")["fileData"]["mimeType"] == "image/jpeg"
    for bad in ("ftp://x.io/a.png", "data:image/png,rawbytes"):
        msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bad}}]}]
        assert invalid_param(msg) == "messages[0].content[0].image_url.url"
    assert invalid_param([{"role": "user", "content": [{"type": "file", "file": {}}]}]) == "messages[0].content[0]"


def test_tool_calls_and_results() -> None:
    b = body([
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            call("get_weather", '{"city": "Paris"}', "c1"), call("get_time", "", "c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ])  # fmt: skip
    assert b["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    assert b["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
        ],
    }


def test_gemini3_replayed_calls_get_the_skip_signature() -> None:
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("f", "{}"), call("g", "{}")]}]
    parts = P.chat_request(req(msgs), gem(model="gemini-3-pro-preview"), stream=False).body["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == ["skip_thought_signature_validator", None]


@pytest.mark.parametrize("args", ["{not json", "[1, 2]"])
def test_bad_tool_arguments_name_the_field(args: str) -> None:
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("f", "{}"), call("g", args)]}]
    assert invalid_param(msgs) == "messages[1].tool_calls[1].function.arguments"


def test_tool_result_without_matching_call() -> None:
    msgs = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]
    assert invalid_param(msgs) == "messages[1].tool_call_id"


# ---- tools, tool_choice, generationConfig ----------------------------------------------------------------


def test_tool_declarations_strip_unsupported_schema_keys() -> None:
    params = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "where": {"$ref": "#/$defs/Place"},
            "when": {"type": ["string", "null"], "format": "date-time"},
            "link": {"type": "string", "format": "uri"},
            "additionalProperties": {"type": "boolean"},  # a property that happens to have this name
        },
        "$defs": {"Place": {"type": "object", "additionalProperties": False, "properties": {"city": {"const": "X"}}}},
    }
    tools = [
        {"type": "function", "function": {"name": "plan", "parameters": params, "strict": True}},
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
    ]
    decls = body(tools=tools)["tools"][0]["functionDeclarations"]
    assert decls[0]["parameters"] == {
        "type": "object",
        "properties": {
            "where": {"type": "object", "properties": {"city": {"enum": ["X"]}}},
            "when": {"type": "string", "format": "date-time", "nullable": True},
            "link": {"type": "string"},
            "additionalProperties": {"type": "boolean"},
        },
    }
    assert decls[1] == {"name": "ping"}  # Gemini rejects OBJECT schemas with no properties
    assert body(tools=[WEATHER])["tools"][0]["functionDeclarations"][0]["description"] == "Weather for a city"


def test_recursive_schema_reference_is_rejected() -> None:
    params = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    tools = [{"type": "function", "function": {"name": "f", "parameters": params}}]
    assert invalid_param([{"role": "user", "content": "x"}], tools=tools) == "tools[0].function.parameters"


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    assert body(tools=[WEATHER], tool_choice=choice)["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config() -> None:
    b = body(
        max_completion_tokens=100, temperature=0.3, top_p=0.9, stop="END", seed=7, n=2,
        presence_penalty=0.5, frequency_penalty=-0.5, logprobs=True, top_logprobs=3,
    )  # fmt: skip
    assert b["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"], "seed": 7,
        "candidateCount": 2, "presencePenalty": 0.5, "frequencyPenalty": -0.5, "responseLogprobs": True, "logprobs": 3,
    }  # fmt: skip
    assert body(max_tokens=5)["generationConfig"] == {"maxOutputTokens": 5}
    assert invalid_param([{"role": "user", "content": "x"}], logit_bias={"1": 2}) == "logit_bias"


def test_response_format() -> None:
    assert body(response_format={"type": "json_object"})["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert body(response_format=fmt)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    }


# ---- non-streaming responses -----------------------------------------------------------------------------


def candidate(parts: list[dict[str, Any]], finish: str | None = "STOP", index: int = 0) -> dict[str, Any]:
    c: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        c["finishReason"] = finish
    return c


def test_text_response_and_usage() -> None:
    data = {
        "candidates": [candidate([{"text": "thinking…", "thought": True}, {"text": "Hel"}, {"text": "lo"}])],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 4,
                          "cachedContentTokenCount": 6, "totalTokenCount": 17},
        "modelVersion": "gemini-2.0-flash-001",
        "responseId": "resp-1",
    }  # fmt: skip
    out = P.chat_response(data, req(), gem())
    assert (out["id"], out["object"], out["model"]) == ("resp-1", "chat.completion", "gemini-2.0-flash-001")
    assert out["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop", "logprobs": None}
    ]
    assert out["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 6}, "completion_tokens_details": {"reasoning_tokens": 4},
    }  # fmt: skip


def test_function_call_response() -> None:
    parts = [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": 2}}}]
    out = P.chat_response({"candidates": [candidate(parts)]}, req(), gem())
    choice = out["choices"][0]
    assert out["model"] == "gemini-2.0-flash" and out["id"].startswith("chatcmpl-")
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (tc,) = choice["message"]["tool_calls"]
    assert tc["id"].startswith("call_") and tc["type"] == "function"
    assert tc["function"] == {"name": "get_weather", "arguments": '{"city":"Paris","days":2}'}
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
     ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop")],
)  # fmt: skip
def test_finish_reasons(reason: str, expected: str) -> None:
    out = P.chat_response({"candidates": [candidate([{"text": "x"}], reason)]}, req(), gem())
    assert out["choices"][0]["finish_reason"] == expected


def test_several_candidates_keep_their_index() -> None:
    data = {"candidates": [candidate([{"text": "a"}], index=0), candidate([{"text": "b"}], "MAX_TOKENS", index=1)]}
    choices = P.chat_response(data, req(n=2), gem())["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_blocked_prompt_and_bad_answers() -> None:
    data = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    out = P.chat_response(data, req(), gem())
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    assert out["usage"]["prompt_tokens"] == 4
    with pytest.raises(UpstreamError):
        P.chat_response({"usageMetadata": {}}, req(), gem())
    with pytest.raises(UpstreamError, match="quota"):
        P.chat_response({"error": {"code": 429, "message": "quota"}}, req(), gem())


def test_logprobs_response() -> None:
    c = candidate([{"text": "Hi"}])
    c["logprobsResult"] = {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "Yo", "logProbability": -2.5}]}
        ],
    }
    lp = P.chat_response({"candidates": [c]}, req(logprobs=True, top_logprobs=2), gem())["choices"][0]["logprobs"]
    assert lp["content"][0]["token"] == "Hi" and lp["content"][0]["bytes"] == [72, 105]
    assert [t["token"] for t in lp["content"][0]["top_logprobs"]] == ["Hi", "Yo"]


def test_error_message() -> None:
    assert P.error_message(400, b'{"error": {"code": 400, "message": "API key not valid"}}') == "API key not valid"
    assert P.error_message(429, b'[{"error": {"code": 429, "message": "Resource exhausted"}}]') == "Resource exhausted"
    assert P.error_message(502, b"Bad gateway") == "Bad gateway"


# ---- streaming -------------------------------------------------------------------------------------------


def feed_all(payloads: list[dict[str, Any]], request: ChatCompletionRequest | None = None) -> list[dict[str, Any]]:
    tr = P.stream_translator(request or req(), gem())
    chunks = [c for p in payloads for c in tr.feed(None, orjson.dumps(p))]
    return chunks + tr.finish()


def test_stream_text() -> None:
    chunks = feed_all([
        {"candidates": [candidate([{"text": "Hel"}], None)], "responseId": "r1"},
        {"candidates": [candidate([{"text": "lo"}], None)]},
        {"candidates": [candidate([{"text": "!"}], "STOP")], "modelVersion": "late-model",
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}},
    ])  # fmt: skip
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {"content": "!"}, {}, None,
    ]  # fmt: skip
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, None, "stop"]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("r1", chunks[0]["created"], "gemini-2.0-flash", "chat.completion.chunk")
    }
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert all("usage" not in c for c in chunks[:-1])


def test_stream_function_calls() -> None:
    chunks = feed_all([
        {"candidates": [candidate([{"functionCall": {"name": "a", "args": {"x": 1}}}], None)]},
        {"candidates": [candidate([{"functionCall": {"name": "b", "args": {}}}], "STOP")]},
    ])  # fmt: skip
    calls = [t for c in chunks if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(t["index"], t["type"], t["function"]) for t in calls] == [
        (0, "function", {"name": "a", "arguments": '{"x":1}'}),
        (1, "function", {"name": "b", "arguments": "{}"}),
    ]
    assert all(t["id"].startswith("call_") for t in calls) and calls[0]["id"] != calls[1]["id"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_blocked_error_and_empty() -> None:
    chunks = feed_all([{"promptFeedback": {"blockReason": "OTHER"}}])
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "content_filter"]
    tr = P.stream_translator(req(), gem())
    assert tr.feed(None, b"") == []
    with pytest.raises(UpstreamError, match="overloaded"):
        tr.feed(None, b'{"error": {"code": 503, "message": "The model is overloaded"}}')
    # finish() always yields exactly one usage chunk, even for an empty stream.
    (last,) = P.stream_translator(req(), gem()).finish()
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 0


# ---- embeddings ------------------------------------------------------------------------------------------


def emb(**kw: Any) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate({"model": "public", "input": ["a", "b"], **kw})


def test_embeddings_requests() -> None:
    dep = gem(model="text-embedding-004")
    up = P.embeddings_request(emb(dimensions=8), dep)
    assert up.url == "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:batchEmbedContents"
    assert up.body["requests"][1] == {
        "model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8
    }  # fmt: skip
    up = P.embeddings_request(emb(dimensions=8), vertex(model="text-embedding-005"))
    assert up.url.endswith("/publishers/google/models/text-embedding-005:predict")
    assert up.body == {"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 8}}
    assert "parameters" not in P.embeddings_request(emb(), vertex()).body
    with pytest.raises(InvalidRequest) as exc:
        P.embeddings_request(emb(input=[1, 2, 3]), dep)
    assert exc.value.param == "input"


def test_embeddings_responses() -> None:
    out = P.embeddings_response({"embeddings": [{"values": [1.0, 0.0]}, {"values": [0.0, 1.0]}]}, emb(), gem())
    assert [d["embedding"] for d in out["data"]] == [[1.0, 0.0], [0.0, 1.0]]
    assert out["model"] == "gemini-2.0-flash" and out["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    preds = {"predictions": [{"embeddings": {"values": [3.0, 4.0], "statistics": {"token_count": 2}}},
                             {"embeddings": {"values": [0.0, 2.0], "statistics": {"token_count": 5.0}}}]}  # fmt: skip
    out = P.embeddings_response(preds, emb(dimensions=2, encoding_format="base64"), vertex())
    assert out["usage"]["prompt_tokens"] == 7
    first = np.frombuffer(base64.b64decode(out["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(first, [0.6, 0.8])  # truncated Gemini vectors are re-normalised
    with pytest.raises(UpstreamError):
        P.embeddings_response({"embeddings": [{}]}, emb(), gem())


# ---- the real llm-katan server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def katan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp, port = tmp_path_factory.mktemp("katan"), free_port()
    url = f"http://127.0.0.1:{port}"
    with running(katan_cmd(port, tmp), url + "/health", tmp / "katan.log"):
        yield url


def katan_dep(provider: str, url: str) -> GeminiDeployment:
    return gem(base_url=url) if provider == "gemini" else vertex(base_url=url)


def send(up: UpstreamRequest) -> httpx.Response:
    return httpx.post(up.url, headers=up.headers, params=up.params, content=orjson.dumps(up.body), timeout=30)


def sse_payloads(resp: httpx.Response) -> list[bytes]:
    if not resp.headers["content-type"].startswith("text/event-stream"):
        # llm-katan answers tool requests with one plain JSON body even when asked to stream.
        return [resp.content]
    return [line[5:].strip().encode() for line in resp.text.splitlines() if line.startswith("data:")]


def run(url: str, provider: str, stream: bool, request: ChatCompletionRequest) -> list[dict[str, Any]] | dict:
    dep = katan_dep(provider, url)
    resp = send(P.chat_request(request, dep, stream=stream))
    assert resp.status_code == 200, resp.text
    if not stream:
        return P.chat_response(resp.json(), request, dep)
    tr = P.stream_translator(request, dep)
    return [c for payload in sse_payloads(resp) for c in tr.feed(None, payload)] + tr.finish()


CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.mark.parametrize("provider", ["gemini", "vertex"])
def test_katan_text(katan: str, provider: str) -> None:
    out = run(katan, provider, False, req(CHAT, max_tokens=40, temperature=0.2))
    assert isinstance(out, dict)
    (choice,) = out["choices"]
    text = choice["message"]["content"]
    # The echo backend reports what it received: system + user turns, the generationConfig values, the text.
    assert "messages=2 max_tokens=40 temperature=0.2" in text and text.endswith("User: hello there")
    assert choice["finish_reason"] == "stop" and out["model"] == "echo"
    assert out["usage"]["prompt_tokens"] == 4 and out["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("provider", ["gemini", "vertex"])
def test_katan_stream(katan: str, provider: str) -> None:
    chunks = run(katan, provider, True, req(CHAT, max_tokens=40))
    assert isinstance(chunks, list) and len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "messages=2 max_tokens=40" in text and text.endswith("User: hello there")
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "stop"
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 4


@pytest.mark.parametrize("provider", ["gemini", "vertex"])
@pytest.mark.parametrize("stream", [False, True])
def test_katan_function_call(katan: str, provider: str, stream: bool) -> None:
    out = run(katan, provider, stream, req([{"role": "user", "content": "weather?"}], tools=[WEATHER]))
    if stream:
        assert isinstance(out, list)
        calls = [t for c in out if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls", [])]
        finish = [c["choices"][0]["finish_reason"] for c in out if c["choices"] and c["choices"][0]["finish_reason"]]
    else:
        assert isinstance(out, dict)
        calls, finish = out["choices"][0]["message"]["tool_calls"], [out["choices"][0]["finish_reason"]]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    # llm-katan fills arguments from the declared parameters, so this also checks the schema arrived intact.
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"city": "test_city"}
    assert finish == ["tool_calls"]


def test_katan_accepts_tool_history(katan: str) -> None:
    history = [
        *CHAT,
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", '{"city": "Paris"}')]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
        {"role": "user", "content": "thanks"},
    ]
    out = run(katan, "vertex", False, req(history))
    assert isinstance(out, dict)
    # system + user + model(functionCall) + user(functionResponse merged with "thanks")
    assert "messages=4" in out["choices"][0]["message"]["content"]


def test_katan_error_body(katan: str) -> None:
    up = P.chat_request(req(), katan_dep("vertex", katan), stream=False)
    up.headers.pop("authorization")
    resp = send(up)
    assert resp.status_code == 401
    assert P.error_message(resp.status_code, resp.content) == "missing Authorization header or ?key= query parameter"
