"""Bedrock Converse translation both ways, the ConverseStream translator, AWS event-stream decoding and the SigV4
signature of what is actually sent (checked with an independent implementation of the signing steps)."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson
import pytest

from portico.config.schema import BedrockDeployment
from portico.gateway.eventstream import eventstream_events
from portico.gateway.providers.bedrock import BedrockProvider
from portico.gateway.providers.bedrock.stream import BedrockStream
from portico.gateway.providers.bedrock.translate import chat_body, chat_completion
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest, UpstreamError
from tests.unit.test_anthropic_translate import WEATHER

TOOL = WEATHER


def _req(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", **kw})


def _dep(**kw) -> BedrockDeployment:
    base = {
        "provider": "bedrock",
        "region": "eu-west-1",
        "model": "anthropic.claude-3-haiku-20240307-v1:0",
        "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    }
    return BedrockDeployment.model_validate({**base, **kw})


# ---- request ------------------------------------------------------------------------------------------------


def test_request_system_turns_tools_and_inference() -> None:
    req = _req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[TOOL], tool_choice="required", max_tokens=50, temperature=1.5, top_p=0.9, stop=["END"],
    )  # fmt: skip
    body = chat_body(req)
    assert body["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
    ]
    # The tool result and the next user message merge into one user turn, the result first.
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}], "status": "success"}},
        {"text": "And tomorrow?"},
    ]
    assert body["inferenceConfig"] == {"maxTokens": 50, "temperature": 1.0, "topP": 0.9, "stopSequences": ["END"]}
    spec = body["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "get_weather" and spec["inputSchema"]["json"] == TOOL["function"]["parameters"]
    assert body["toolConfig"]["toolChoice"] == {"any": {}}


def test_request_tool_choice_named_and_none() -> None:
    named = _req(messages=[{"role": "user", "content": "x"}], tools=[TOOL],
                 tool_choice={"type": "function", "function": {"name": "get_weather"}})  # fmt: skip
    assert chat_body(named)["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    none = _req(messages=[{"role": "user", "content": "x"}], tools=[TOOL], tool_choice="none")
    assert "toolConfig" not in chat_body(none)
    with pytest.raises(InvalidRequest) as e:
        chat_body(_req(messages=[{"role": "user", "content": "x"}], tools=[TOOL],
                       tool_choice={"type": "function", "function": {"name": "nope"}}))  # fmt: skip
    assert e.value.param == "tool_choice"


def test_request_images_json_mode_and_rejections() -> None:
    req = _req(
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        ]}],
        response_format={"type": "json_object"},
    )  # fmt: skip
    body = chat_body(req)
    assert body["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBORw0K"}}}
    assert "JSON" in body["system"][0]["text"]
    with pytest.raises(InvalidRequest) as e:
        chat_body(_req(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]))  # fmt: skip
    assert e.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(InvalidRequest):
        chat_body(_req(messages=[{"role": "user", "content": "x"}], logprobs=True))
    with pytest.raises(InvalidRequest) as e:
        chat_body(_req(messages=[{"role": "assistant", "content": None, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]))  # fmt: skip
    assert e.value.param == "messages[0].tool_calls[0].function.arguments"


# ---- response -----------------------------------------------------------------------------------------------


def test_response_text_tools_and_usage() -> None:
    data = {
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "tu1", "name": "get_weather", "input": {"city": "Oslo"}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 19, "cacheReadInputTokens": 4},
    }  # fmt: skip
    out = chat_completion(data, "claude")
    choice = out["choices"][0]
    assert out["object"] == "chat.completion" and out["model"] == "claude"
    assert choice["message"]["content"] == "Checking."
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "tu1" and orjson.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert out["usage"]["prompt_tokens"] == 14 and out["usage"]["completion_tokens"] == 5
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    stopped = chat_completion({"output": {"message": {"content": [{"text": "a"}]}}, "stopReason": "max_tokens"}, "m")
    assert stopped["choices"][0]["finish_reason"] == "length"
    with pytest.raises(UpstreamError):
        chat_completion({"message": "no output"}, "m")


# ---- stream -------------------------------------------------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths + CRC), string headers, payload, message CRC."""
    h = b"".join(
        struct.pack("B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(h) + len(payload) + 4
    prelude = struct.pack(">II", total, len(h))
    head = prelude + struct.pack(">I", binascii.crc32(prelude)) + h + payload
    return head + struct.pack(">I", binascii.crc32(head))


def event(kind: str, body: dict) -> bytes:
    return frame({":message-type": "event", ":event-type": kind, ":content-type": "application/json"},
                 orjson.dumps(body))  # fmt: skip


STREAM = [
    event("messageStart", {"role": "assistant"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
    event("contentBlockStop", {"contentBlockIndex": 0}),
    event("contentBlockStart", {"contentBlockIndex": 1,
                                "start": {"toolUse": {"toolUseId": "tu9", "name": "get_weather"}}}),
    event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}}),
    event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Rome"}'}}}),
    event("contentBlockStop", {"contentBlockIndex": 1}),
    event("messageStop", {"stopReason": "tool_use"}),
    event("metadata", {"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {}}),
]  # fmt: skip


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _decode(data: bytes, size: int) -> list[tuple[str | None, bytes]]:
    return [e async for e in eventstream_events(_chunks(data, size))]


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
async def test_eventstream_decodes_whatever_the_chunking(size: int) -> None:
    events = await _decode(b"".join(STREAM), size)
    assert [e for e, _ in events] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "contentBlockStart",
        "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata",
    ]  # fmt: skip
    assert orjson.loads(events[1][1])["delta"]["text"] == "Hel"


async def test_eventstream_rejects_broken_frames() -> None:
    good = b"".join(STREAM[:2])
    corrupt = bytearray(good)
    corrupt[-6] ^= 0xFF  # a payload byte of the second message: its CRC no longer matches
    with pytest.raises(UpstreamError, match="broken event-stream frame"):
        await _decode(bytes(corrupt), 16)
    with pytest.raises(UpstreamError, match="inside a frame"):
        await _decode(good[:-3], 16)


async def test_stream_translation_text_tools_usage() -> None:
    translator = BedrockStream("claude")
    chunks = []
    for kind, data in await _decode(b"".join(STREAM), 33):
        chunks.extend(translator.feed(kind, data))
    chunks.extend(translator.finish())
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["id"] == "tu9" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city":"Rome"}'
    assert {tc["index"] for tc in calls} == {0}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 10
    assert len({c["id"] for c in chunks}) == 1


async def test_stream_exception_message_raises_with_status() -> None:
    data = frame({":message-type": "exception", ":exception-type": "throttlingException"},
                 b'{"message":"Too many requests"}')  # fmt: skip
    [(kind, payload)] = await _decode(data, 10)
    with pytest.raises(UpstreamError) as e:
        BedrockStream("m").feed(kind, payload)
    assert e.value.status == 429 and "Too many requests" in e.value.message


# ---- signing ------------------------------------------------------------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(method: str, path: str, headers: dict[str, str], body: bytes, secret: str,
                       region: str) -> str:  # fmt: skip
    """SigV4 from the AWS documentation's steps, independent of botocore: canonical request (path segments
    URI-encoded once more, signed headers sorted), string to sign, derived key, signature."""
    amz_date = headers["x-amz-date"]
    signed = sorted(k.lower() for k in headers if k.lower() != "authorization")
    canonical_headers = "".join(f"{k}:{headers[k].strip()}\n" for k in signed)
    canonical_path = "/".join(quote(seg, safe="~") for seg in path.split("/"))
    canonical = "\n".join([method, canonical_path, "", canonical_headers, ";".join(signed),
                           hashlib.sha256(body).hexdigest()])  # fmt: skip
    scope = f"{amz_date[:8]}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), amz_date[:8]), region), "bedrock"), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_request_is_signed_over_the_bytes_sent() -> None:
    dep = _dep(aws_session_token="session-tok", base_url="http://127.0.0.1:9")
    provider = BedrockProvider()
    up = provider.chat_request(_req(messages=[{"role": "user", "content": "hi"}]), dep, stream=True)
    # The model id's ':' stays percent-encoded on the wire.
    assert str(up.url) == "http://127.0.0.1:9/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    assert up.payload() == up.data == orjson.dumps(up.body)
    headers = {k.lower(): v for k, v in up.headers.items()}
    assert headers["x-amz-security-token"] == "session-tok"
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/bedrock/aws4_request" in auth
    signed_names = auth.split("SignedHeaders=")[1].split(",")[0]
    headers.setdefault("host", up.url.raw_authority)  # signed by botocore, sent by the HTTP client
    signed = {k: headers[k] for k in signed_names.split(";")}
    secret = dep.aws_secret_access_key.get_secret_value()
    sig = expected_signature("POST", up.url.raw_path, signed, up.payload(), secret, "eu-west-1")
    assert auth.endswith("Signature=" + sig)
    # A second request signs again (new date/body) with the signer built once.
    again = provider.chat_request(_req(messages=[{"role": "user", "content": "other"}]), dep, stream=False)
    assert again.headers["Authorization"] != up.headers["Authorization"]
    assert len(provider._signers) == 1


def test_api_key_sends_a_bearer_token_and_no_signature() -> None:
    dep = BedrockDeployment.model_validate({"provider": "bedrock", "region": "us-east-1", "model": "m",
                                            "api_key": "bedrock-key"})  # fmt: skip
    up = BedrockProvider().chat_request(_req(messages=[{"role": "user", "content": "hi"}]), dep, stream=False)
    assert up.headers["authorization"] == "Bearer bedrock-key"
    assert str(up.url) == "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse"


def test_credentials_from_the_environment_chain(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    dep = BedrockDeployment.model_validate({"provider": "bedrock", "region": "us-west-2", "model": "m"})
    up = BedrockProvider().chat_request(_req(messages=[{"role": "user", "content": "hi"}]), dep, stream=False)
    assert "Credential=AKIDENV/" in up.headers["Authorization"]


def test_credentials_from_a_profile(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    creds = tmp_path / "credentials"
    creds.write_text("[team]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s3cr3t\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    dep = BedrockDeployment.model_validate({"provider": "bedrock", "region": "us-west-2", "model": "m",
                                            "aws_profile": "team"})  # fmt: skip
    up = BedrockProvider().chat_request(_req(messages=[{"role": "user", "content": "hi"}]), dep, stream=False)
    assert "Credential=AKIDPROFILE/" in up.headers["Authorization"]


def test_config_rejects_half_given_keys() -> None:
    with pytest.raises(ValueError, match="both"):
        BedrockDeployment.model_validate({"provider": "bedrock", "region": "us-east-1", "aws_access_key_id": "A"})


# ---- over a real socket: the server checks the signature of what it received; binary frames stream back -----


async def test_backend_streams_binary_frames_signed_as_received() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from portico.gateway.backends import HttpBackend
    from portico.gateway.transport import HttpTransport

    seen: list[str] = []
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

    async def converse_stream(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = headers["authorization"]
        names = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        sig = expected_signature("POST", request.raw_path, {k: headers[k] for k in names}, body, secret, "eu-west-1")
        seen.append(request.raw_path)
        if not auth.endswith("Signature=" + sig):
            return web.json_response({"message": "signature mismatch"}, status=403)
        resp = web.StreamResponse(headers={"content-type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        data = b"".join(STREAM)
        for i in range(0, len(data), 50):  # frames split across writes
            await resp.write(data[i : i + 50])
        return resp

    app = web.Application()
    app.router.add_post("/model/{model}/converse-stream", converse_stream)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    transport = HttpTransport()
    base = f"http://127.0.0.1:{server.port}"
    transport.open([base])
    try:
        backend = HttpBackend(_dep(base_url=base), BedrockProvider(), transport)
        req = _req(messages=[{"role": "user", "content": "weather?"}], tools=[TOOL], stream=True)
        chunks = [c async for c in backend.stream(req)]
    finally:
        await transport.close()
        await server.close()
    assert seen == ["/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_credentials_resolve_at_start_off_the_loop_and_failures_surface(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from portico.gateway.backends import HttpBackend
    from portico.gateway.transport import HttpTransport

    provider = BedrockProvider()
    await HttpBackend(_dep(), provider, HttpTransport()).start()
    assert len(provider._signers) == 1  # built at start, not on the first request
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role lookup from a test
    bare = BedrockDeployment.model_validate({"provider": "bedrock", "region": "us-east-1", "model": "m"})
    with pytest.raises(UpstreamError) as e:
        await HttpBackend(bare, BedrockProvider(), HttpTransport()).start()
    assert e.value.code == "upstream_auth" and "no AWS credentials" in e.value.message
