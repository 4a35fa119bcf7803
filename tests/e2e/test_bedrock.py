"""The OpenAI SDK against a real ``portico serve`` whose models are Bedrock deployments, with llm-katan serving
Bedrock's Converse API (it checks the SigV4 header: scheme, x-amz-date, service ``bedrock``, and with
``--validate-keys`` the access key id). One deployment has explicit keys, another takes them from the AWS
environment chain of the server process, a third sends a Bedrock API key as a bearer token."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import openai
import pytest

from tests.e2e.test_upstreams import WEATHER_TOOL
from tests.support import free_port, katan_cmd, portico_server, running

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def bedrock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("bedrock")
    port = free_port()
    cmd = katan_cmd(port, tmp, "--validate-keys", "--api-keys", "bedrock=AKIDPORTICO")
    cmd[cmd.index("--providers") + 1] = "bedrock"
    with running(cmd, f"http://127.0.0.1:{port}/health", tmp / "katan.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(bedrock_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    tmp = tmp_path_factory.mktemp("portico-bedrock")
    common = {"provider": "bedrock", "region": "eu-central-1", "model": MODEL_ID, "base_url": bedrock_url}
    cfg = {
        "state_dir": str(tmp / "state"),
        "models": [
            {"name": "claude-bedrock", "deployments": [
                {**common, "aws_access_key_id": "AKIDPORTICO", "aws_secret_access_key": "not-checked"}]},
            {"name": "bedrock-env", "deployments": [common]},
            {"name": "bedrock-apikey", "deployments": [{**common, "api_key": "AKIDPORTICO"}]},
        ],
    }  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": "AKIDPORTICO", "AWS_SECRET_ACCESS_KEY": "from-env", "AWS_SESSION_TOKEN": "tok",
           "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none")}  # fmt: skip
    with mock.patch.dict(os.environ, env), portico_server(cfg, tmp) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.mark.parametrize("model", ["claude-bedrock", "bedrock-env", "bedrock-apikey"])
def test_chat(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ping from the sdk"}],
        max_tokens=50,
        stop=["NEVER"],
    )
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert "ping from the sdk" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert raw.headers["x-portico-model"] == f"bedrock/{MODEL_ID}"


def test_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="claude-bedrock",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, ids = "", None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        usage = chunk.usage or usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "stream me please" in text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    assert len(ids) == 1


def test_tools_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="claude-bedrock",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    # The tool result goes back as a toolResult block; the conversation is accepted.
    second = client.chat.completions.create(
        model="claude-bedrock",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].message.tool_calls[0].id != call.id


def test_stream_without_tools_and_with_stop(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    chunks = list(client.chat.completions.create(model="bedrock-env", messages=messages, stream=True, stop=["zzz"]))
    assert "hello there" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_wrong_access_key_is_an_upstream_auth_error(bedrock_url: str, tmp_path: Path) -> None:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "models": [{"name": "bad", "deployments": [
            {"provider": "bedrock", "region": "eu-central-1", "model": MODEL_ID, "base_url": bedrock_url,
             "aws_access_key_id": "AKIDWRONG", "aws_secret_access_key": "x"}]}],
    }  # fmt: skip
    with portico_server(cfg, tmp_path) as url:
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as e:
            bad.chat.completions.create(model="bad", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    # the upstream echoed the access key it got: Portico passes the error on with its own credentials redacted
    assert "invalid API key" in e.value.message and "[redacted]" in e.value.message
    assert "AKIDWRONG" not in e.value.message
