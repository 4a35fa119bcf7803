"""The HTTP surface in process: OpenAI error shapes and statuses, request ids, model listing, health.

The config has only HTTP deployments pointing at a port nothing listens on, so no model ever loads.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from portico.config.loader import validate
from portico.server.app import create_app


def dead_base_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


DEAD = {"provider": "openai", "base_url": dead_base_url(), "api_key": "sk-x", "timeouts": {"connect": 2}}
USER = [{"role": "user", "content": "hi"}]


def make_app(*, wait_for_models: bool = False) -> Starlette:
    cfg = validate(
        {
            "state_dir": tempfile.mkdtemp(prefix="portico-test-"),
            "server": {"max_body_bytes": 2048},
            "models": [
                {"name": "chat-a", "deployments": [DEAD]},
                {"name": "emb", "type": "embedding", "deployments": [DEAD]},
            ],
            "applications": [
                {"name": "helper", "model": "chat-a", "steps": [{"use": "system_prompt", "text": "Be terse."}]}
            ],
        }
    )
    return create_app(cfg, wait_for_models=wait_for_models)


@pytest.fixture
def app() -> Starlette:
    return make_app()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portico.test") as c:
        yield c


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    """Assert the OpenAI error shape and status; return the inner ``error`` object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"]
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str)
    assert err["message"]
    return err


async def chat(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=body)


# ---- body parsing ------------------------------------------------------------------------------------------


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", content=b'{"model": "chat-a", ', headers={"content-type": "x"})
    err = error_of(r, 400)
    assert err["code"] == "invalid_json"
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("Request body is not valid JSON")


async def test_empty_body(client: httpx.AsyncClient) -> None:
    err = error_of(await client.post("/v1/chat/completions", content=b""), 400)
    assert err["code"] == "invalid_json"
    assert "empty" in err["message"]


async def test_json_array_body(client: httpx.AsyncClient) -> None:
    err = error_of(await client.post("/v1/chat/completions", json=[{"model": "chat-a", "messages": USER}]), 400)
    assert err["code"] == "invalid_json"
    assert err["message"] == "Request body must be a JSON object"


async def test_embeddings_json_scalar_body(client: httpx.AsyncClient) -> None:
    err = error_of(await client.post("/v1/embeddings", content=b'"text"'), 400)
    assert err["code"] == "invalid_json"


# ---- request validation -------------------------------------------------------------------------------------


async def test_missing_messages(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "chat-a"}), 400)
    assert err["param"] == "messages"
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_value"


async def test_empty_messages(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "chat-a", "messages": []}), 400)
    assert err["param"] == "messages"


async def test_bad_role(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "chat-a", "messages": [*USER, {"role": "robot", "content": "x"}]}), 400)
    assert err["param"] == "messages[1].role"
    assert "messages[1].role" in err["message"]


async def test_tool_message_without_tool_call_id(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "chat-a", "messages": [{"role": "tool", "content": "42"}]}), 400)
    assert err["param"] == "messages[0]"
    assert "tool_call_id" in err["message"]


async def test_temperature_out_of_range(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "chat-a", "messages": USER, "temperature": 3}), 400)
    assert err["param"] == "temperature"
    assert err["code"] == "invalid_value"


async def test_top_logprobs_without_logprobs(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "chat-a", "messages": USER, "top_logprobs": 2}), 400)
    assert "top_logprobs requires logprobs" in err["message"]
    assert err["param"] == "top_logprobs"


async def test_unknown_model(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "gpt-nope", "messages": USER}), 404)
    assert err["code"] == "model_not_found"
    assert err["param"] == "model"
    assert "'gpt-nope'" in err["message"]


async def test_chat_request_to_embedding_model(client: httpx.AsyncClient) -> None:
    err = error_of(await chat(client, {"model": "emb", "messages": USER}), 400)
    assert err["param"] == "model"
    assert err["code"] == "wrong_model_type"


async def test_embeddings_with_empty_input_list(client: httpx.AsyncClient) -> None:
    err = error_of(await client.post("/v1/embeddings", json={"model": "emb", "input": []}), 400)
    assert err["param"] == "input"
    assert "empty" in err["message"]


async def test_embeddings_unknown_model(client: httpx.AsyncClient) -> None:
    err = error_of(await client.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404)
    assert err["code"] == "model_not_found"


async def test_embeddings_request_to_chat_model(client: httpx.AsyncClient) -> None:
    err = error_of(await client.post("/v1/embeddings", json={"model": "chat-a", "input": "x"}), 400)
    assert err["code"] == "wrong_model_type"


# ---- routing ----------------------------------------------------------------------------------------------


async def test_get_on_chat_completions_is_405(client: httpx.AsyncClient) -> None:
    err = error_of(await client.get("/v1/chat/completions"), 405)
    assert err["code"] == "method_not_allowed"
    assert err["type"] == "invalid_request_error"


async def test_405_has_allow_header(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/chat/completions")
    assert r.status_code == 405
    assert "POST" in r.headers.get("allow", "")


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    err = error_of(await client.get("/v1/nothing-here"), 404)
    assert err["code"] == "unknown_url"
    assert "/v1/nothing-here" in err["message"]


# ---- body size limit -----------------------------------------------------------------------------------------


async def test_body_larger_than_limit_is_413(client: httpx.AsyncClient) -> None:
    body = {"model": "chat-a", "messages": [{"role": "user", "content": "x" * 3000}]}
    err = error_of(await chat(client, body), 413)
    assert err["code"] == "request_too_large"
    assert "2048" in err["message"]


async def test_chunked_body_larger_than_limit_is_413(client: httpx.AsyncClient) -> None:
    payload = orjson.dumps({"model": "chat-a", "messages": [{"role": "user", "content": "x" * 3000}]})

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 500):
            yield payload[i : i + 500]

    r = await client.post("/v1/chat/completions", content=chunks())
    err = error_of(r, 413)
    assert err["code"] == "request_too_large"


async def test_body_just_under_limit_is_parsed(client: httpx.AsyncClient) -> None:
    # Validation runs (so the size check passed): an unknown model is the error, not 413.
    body = {"model": "gpt-nope", "messages": [{"role": "user", "content": "x" * 1800}]}
    assert len(orjson.dumps(body)) < 2048
    error_of(await chat(client, body), 404)


# ---- request ids ------------------------------------------------------------------------------------------


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/healthz"),
        await client.get("/v1/models"),
        await client.get("/nope"),
        await client.get("/v1/chat/completions"),
        await chat(client, {"model": "chat-a"}),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(i is not None and len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in ids), ids
    assert len(set(ids)) == len(ids)


async def test_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    rid = "req_ABC-123.xyz:42"
    r = await client.get("/healthz", headers={"x-request-id": rid})
    assert r.headers["x-request-id"] == rid
    body = {"model": "nope", "messages": USER}
    r = await client.post("/v1/chat/completions", json=body, headers={"x-request-id": rid})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == rid


async def test_request_id_of_128_chars_is_kept(client: httpx.AsyncClient) -> None:
    rid = "a" * 128
    assert (await client.get("/healthz", headers={"x-request-id": rid})).headers["x-request-id"] == rid


@pytest.mark.parametrize("rid", ["a" * 129, "x" * 300, "has space", "tab\there", ""])
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, rid: str) -> None:
    r = await client.get("/healthz", headers={"x-request-id": rid})
    got = r.headers["x-request-id"]
    assert got != rid
    assert len(got) == 32
    assert all(c in "0123456789abcdef" for c in got)


async def test_response_has_exactly_one_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "abc"})
    assert r.headers.get_list("x-request-id") == ["abc"]


# ---- models and health ------------------------------------------------------------------------------------


async def test_list_models_includes_models_and_applications(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["portico_type"]) for m in body["data"]] == [
        ("chat-a", "model", "chat"),
        ("emb", "model", "embedding"),
        ("helper", "model", "application"),
    ]
    assert all(m["owned_by"] == "portico" for m in body["data"])


@pytest.mark.parametrize(("model_id", "kind"), [("chat-a", "chat"), ("emb", "embedding"), ("helper", "application")])
async def test_get_model(client: httpx.AsyncClient, model_id: str, kind: str) -> None:
    r = await client.get(f"/v1/models/{model_id}")
    assert r.status_code == 200
    body = r.json()
    assert (body["id"], body["object"], body["portico_type"]) == (model_id, "model", kind)


async def test_get_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    err = error_of(await client.get("/v1/models/gpt-nope"), 404)
    assert err["code"] == "model_not_found"
    assert err["param"] == "model"


async def test_get_model_with_slash_in_id_is_404(client: httpx.AsyncClient) -> None:
    err = error_of(await client.get("/v1/models/org/chat-a"), 404)
    assert err["code"] == "model_not_found"


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


# ---- with the lifespan: the upstream is unreachable ------------------------------------------------------


@pytest.fixture
async def started() -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose lifespan ran to completion (HTTP pools open), shut down afterwards."""
    app = make_app(wait_for_models=True)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_unreachable_upstream_is_503(started: httpx.AsyncClient) -> None:
    r = await chat(started, {"model": "chat-a", "messages": USER})
    err = error_of(r, 503)
    assert err["code"] == "upstream_unreachable"
    assert err["type"] == "upstream_error"
    assert "openai/chat-a" in err["message"]


async def test_unreachable_upstream_stream_is_503_before_first_byte(started: httpx.AsyncClient) -> None:
    r = await chat(started, {"model": "helper", "messages": USER, "stream": True})
    err = error_of(r, 503)
    assert err["code"] == "upstream_unreachable"


async def test_unreachable_embeddings_upstream_is_503(started: httpx.AsyncClient) -> None:
    r = await started.post("/v1/embeddings", json={"model": "emb", "input": "x"})
    err = error_of(r, 503)
    assert err["code"] == "upstream_unreachable"


async def test_unhandled_error_is_500_in_openai_shape(client: httpx.AsyncClient) -> None:
    # Without the lifespan the HTTP pools were never opened: a bug-shaped failure, not a PorticoError.
    r = await client.post(
        "/v1/chat/completions", json={"model": "chat-a", "messages": USER}, headers={"x-request-id": "trace-1"}
    )
    err = error_of(r, 500)
    assert err["type"] == "server_error"
    assert "x-request-id" in err["message"]
    assert r.headers["x-request-id"] == "trace-1"


async def test_model_list_needs_a_key_when_auth_is_on_and_shows_only_what_the_key_may_use() -> None:
    cfg = validate({"state_dir": tempfile.mkdtemp(prefix="portico-test-"), "auth": {"master_key": "mk-models-test"},
                    "models": [{"name": "chat-a", "deployments": [DEAD]}, {"name": "chat-b", "deployments": [DEAD]}]})
    app = create_app(cfg)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/v1/models/chat-a")).status_code == 401
        master = {"authorization": "Bearer mk-models-test"}
        everything = await c.get("/v1/models", headers=master)
        assert {m["id"] for m in everything.json()["data"]} == {"chat-a", "chat-b"}
        created = await c.post("/admin/keys", json={"name": "team", "models": ["chat-b"]}, headers=master)
        key = {"authorization": f"Bearer {created.json()['key']}"}
        assert [m["id"] for m in (await c.get("/v1/models", headers=key)).json()["data"]] == ["chat-b"]
        assert (await c.get("/v1/models/chat-a", headers=key)).status_code == 404
        assert (await c.get("/v1/models/chat-b", headers=key)).status_code == 200
