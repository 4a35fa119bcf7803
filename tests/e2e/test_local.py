"""The real embedded models end to end: SmolLM2 through llama.cpp and all-MiniLM-L6-v2, via the OpenAI SDK."""

from __future__ import annotations

import base64
import json

import numpy as np
import openai
import pytest


def test_local_chat(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="local",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        seed=1,
    )
    resp = raw.parse()
    assert resp.choices[0].message.content.strip()
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 5
    assert raw.headers["x-portico-model"] == "local/SmolLM2-135M-Instruct"


def test_local_chat_is_deterministic_at_temperature_zero(client: openai.OpenAI) -> None:
    ask = dict(
        model="local", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0, seed=3
    )
    a = client.chat.completions.create(**ask).choices[0].message.content
    b = client.chat.completions.create(**ask).choices[0].message.content
    assert a == b


def test_local_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            finish = c.finish_reason or finish
    assert len(pieces) > 3  # streamed token by token, not one blob
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= len(pieces) - 1 and usage.prompt_tokens > 5


def test_local_stop_and_max_tokens(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens <= 5


def test_local_json_mode_returns_json(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Give a JSON object with a key 'city'."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0,
    )
    content = resp.choices[0].message.content
    if resp.choices[0].finish_reason == "stop":  # grammar-constrained: complete output must parse
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


def test_local_tool_call(client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    resp = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


def test_local_tool_choice_required(client: openai.OpenAI) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather for a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    time_tool = {"type": "function", "function": {"name": "get_time", "description": "Get the time in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    msgs = [{"role": "user", "content": "Hello there"}]  # nothing that asks for a tool: "required" must force one
    resp = client.chat.completions.create(model="local", messages=msgs, tools=[weather], tool_choice="required",
                                          max_tokens=60, temperature=0)  # fmt: skip
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    with pytest.raises(openai.BadRequestError) as ei:  # llama.cpp cannot force a choice among several: say so
        client.chat.completions.create(model="local", messages=msgs, tools=[weather, time_tool],
                                       tool_choice="required", max_tokens=60)  # fmt: skip
    assert ei.value.body["param"] == "tool_choice"


def test_local_logprobs_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert ei.value.body["param"] == "logprobs"


def test_local_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew 4%."]
    resp = client.embeddings.create(model="local-embed", input=texts, encoding_format="float")
    vecs = np.array([d.embedding for d in resp.data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]  # paraphrases are closer than unrelated text
    assert resp.usage.prompt_tokens > 10
    # The SDK asks for base64 by default and decodes it itself.
    b64 = client.embeddings.create(model="local-embed", input=texts)
    assert np.allclose(np.array([d.embedding for d in b64.data]), vecs, atol=1e-6)


def test_local_embeddings_dimensions_truncate_and_renormalise(client: openai.OpenAI) -> None:
    full = np.array(client.embeddings.create(model="local-embed", input="hello world").data[0].embedding)
    small = np.array(
        client.embeddings.create(model="local-embed", input="hello world", dimensions=64).data[0].embedding
    )
    assert small.shape == (64,)
    assert np.isclose(np.linalg.norm(small), 1.0, atol=1e-5)
    assert np.allclose(small, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)


def test_embeddings_through_an_openai_compatible_upstream(client: openai.OpenAI) -> None:
    """remote-embed reaches Portico's own /v1/embeddings over HTTP as an OpenAI-compatible upstream."""
    raw = client.embeddings.with_raw_response.create(model="remote-embed", input=["one", "two"], dimensions=32)
    resp = raw.parse()
    assert raw.headers["x-portico-model"] == "openai/local-embed"
    assert [len(d.embedding) for d in resp.data] == [32, 32]
    direct = client.embeddings.create(model="local-embed", input=["one", "two"], dimensions=32)
    assert np.allclose(resp.data[0].embedding, direct.data[0].embedding, atol=1e-6)


def test_embeddings_raw_base64_is_little_endian_float32(portico: str) -> None:
    import httpx

    r = httpx.post(f"{portico}/v1/embeddings", json={"model": "local-embed", "input": "x", "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (384,)


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"local", "local-embed", "oai", "claude", "gem", "helper"} <= ids
    assert client.models.retrieve("local").id == "local"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_wrong_model_type_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="local", input="x")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local-embed", messages=[{"role": "user", "content": "x"}])


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert ei.value.body["code"] == "model_not_found"


async def test_concurrent_local_requests_do_not_block_other_models(aclient: openai.AsyncOpenAI) -> None:
    """While the local model generates, requests to other models are answered (generation is off the loop)."""
    import asyncio

    long = asyncio.create_task(
        aclient.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Tell a long story."}], max_tokens=120, temperature=0
        )
    )
    await asyncio.sleep(0.3)
    quick = await aclient.chat.completions.create(model="oai", messages=[{"role": "user", "content": "quick"}])
    assert not long.done()  # the upstream answer came back while the local model was still generating
    assert "quick" in quick.choices[0].message.content
    await long
