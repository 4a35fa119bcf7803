"""``/openapi.json`` and ``/docs`` on the session's real ``portico serve``: the document is valid OpenAPI 3.1,
documents every served route, and every route's documented example — then a malformed body and unknown ids —
gets an answer whose status is documented and whose body matches the documented schema."""

from __future__ import annotations

import json
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from portico.config.loader import validate as validate_config
from portico.server.app import create_app
from portico.server.openapi import OPS, Example, Op, openapi_document
from tests.support import portico_server


@pytest.fixture(scope="module")
def spec(portico: str) -> dict[str, Any]:
    r = httpx.get(f"{portico}/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def test_document_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["openapi"] == "3.1.0"
    assert spec == orjson.loads(orjson.dumps(openapi_document()))
    err = spec["components"]["schemas"]["ErrorResponse"]
    assert err["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):  # Anthropic clients get Anthropic's error shape
        for status in ("400", "401", "404"):
            content = spec["paths"][path]["post"]["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/AnthropicError"}


def _served_routes() -> set[tuple[str, str]]:
    cfg = validate_config({"state_dir": tempfile.mkdtemp(prefix="portico-openapi-"), "models": [
        {"name": "m", "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]}]})  # fmt: skip
    out = set()
    for route in create_app(cfg).routes:
        if not isinstance(route, Route) or route.path.startswith("/ui"):
            continue  # the dashboard's static files are not an API
        path = route.path.replace(":path}", "}")
        out |= {(m, path) for m in route.methods or () if m != "HEAD"}
    return out


def test_every_served_route_is_documented() -> None:
    documented = {(op.method, op.path) for op in OPS}
    assert _served_routes() == documented


@cache
def _validator(ref: str, components_json: bytes) -> Draft202012Validator:
    # Refs point at #/components/schemas/…: validate against a root that carries the components.
    return Draft202012Validator({"$ref": ref, "components": orjson.loads(components_json)})


def check_answer(spec: dict[str, Any], op: Op, r: httpx.Response) -> None:
    """The status is one the document lists for this operation and the body matches its schema."""
    responses = spec["paths"][op.path][op.method.lower()]["responses"]
    assert str(r.status_code) in responses, f"{op.method} {op.path}: undocumented status {r.status_code}: {r.text}"
    content = responses[str(r.status_code)]["content"]
    media = r.headers["content-type"].split(";")[0]
    documented = {m.split(";")[0]: v for m, v in content.items()}
    assert media in documented, f"{op.method} {op.path}: undocumented content type {media}"
    if media != "application/json":
        return
    schema = documented[media]["schema"]
    if "$ref" in schema:
        errors = list(_validator(schema["$ref"], orjson.dumps(spec["components"])).iter_errors(r.json()))
        assert not errors, f"{op.method} {op.path} {r.status_code}: {errors[0].message} at {list(errors[0].path)}"


def _path(op: Op, params: dict[str, str]) -> str:
    path = op.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    return path


def test_examples_answer_as_documented(portico: str, spec: dict[str, Any]) -> None:
    captured: dict[str, str] = {}
    walked = 0
    with httpx.Client(base_url=portico, timeout=120) as http:
        for op in OPS:
            ex = op.example
            assert ex is not None, f"{op.method} {op.path} has no example"
            params = {**ex.path, **{k: v for k, v in captured.items() if k in ex.path}}
            body = orjson.dumps(ex.body) if ex.body is not None else None
            headers = {**ex.headers, **({"content-type": "application/json"} if body else {})}
            r = http.request(op.method, _path(op, params), params=ex.query, content=body, headers=headers)
            assert r.status_code == ex.status, f"{op.method} {op.path}: {r.status_code} {r.text[:300]}"
            check_answer(spec, op, r)
            for name, field in ex.capture.items():
                captured[name] = r.json()[field]
            walked += 1
    assert walked == len(OPS) and {"key_id", "handoff_id", "response_id"} <= captured.keys()


def test_bad_requests_answer_as_documented(portico: str, spec: dict[str, Any]) -> None:
    """An empty body where one is expected, and ids that do not exist: still documented statuses and shapes."""
    with httpx.Client(base_url=portico, timeout=60) as http:
        for op in OPS:
            ex = op.example or Example()
            params = dict.fromkeys(ex.path, "does-not-exist")
            body = b"{}" if op.request is not None else None
            # The example's headers (e.g. POST /mcp's Accept, without which it is a 406).
            headers = {**ex.headers, **({"content-type": "application/json"} if body else {})}
            r = http.request(op.method, _path(op, params), content=body, headers=headers)
            check_answer(spec, op, r)
            if r.status_code >= 400:
                assert r.json()["error"]["message"]


@pytest.mark.parametrize("path", [op.path for op in OPS if op.stream is not None])
def test_streamed_events_match_the_event_schema(portico: str, spec: dict[str, Any], path: str) -> None:
    op = next(o for o in OPS if o.path == path and o.stream is not None)
    media = spec["paths"][op.path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    validator = _validator(media["x-portico-event-schema"]["$ref"], orjson.dumps(spec["components"]))
    body = {**(op.example.body or {}), "stream": True}
    if op.stream_done:  # chat: ask for the usage chunk too
        body["stream_options"] = {"include_usage": True}
    events = []
    with httpx.stream("POST", f"{portico}{op.path}", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    if op.stream_done:
        assert events.pop() == "[DONE]"
    assert len(events) > 2 and "[DONE]" not in events
    for data in events:
        errors = list(validator.iter_errors(orjson.loads(data)))
        assert not errors, f"{errors[0].message} in {data}"


def test_docs_page_is_self_contained(portico: str) -> None:
    r = httpx.get(f"{portico}/docs", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert 'fetch("openapi.json")' in page
    # Nothing loaded from elsewhere: no external scripts, styles or fonts.
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page


def test_docs_page_renders_every_operation(portico: str, spec: dict[str, Any]) -> None:
    """The page's own script, run under Node with a minimal DOM (no browser on CI), renders one entry per
    operation under its tag, with the request fields and response schemas drawn from the document."""
    script = Path(__file__).resolve().parents[1] / "browser" / "docs_render.mjs"
    out = subprocess.run(["node", str(script), portico], capture_output=True, text=True, timeout=60, check=True)
    page = json.loads(out.stdout)
    assert not page["error"], page["error"]
    assert page["title"] == f"Portico {spec['info']['version']}"
    expected = {(op["operationId"], m.upper(), p) for p, item in spec["paths"].items() for m, op in item.items()}
    assert {(o["id"], o["method"], o["path"]) for o in page["ops"]} == expected
    assert page["headings"] == [t["name"] for t in spec["tags"]]
    chat = next(o["text"] for o in page["ops"] if o["id"] == "post_v1_chat_completions")
    for field in ("messages", "tool_choice", "ChatCompletionChunk", "finish_reason", "ErrorResponse", "429"):
        assert field in chat, field


def test_auth_failures_answer_as_documented(katan: str, tmp_path: Path) -> None:
    """With a master key: no key → 401, a key that is not the master key on an admin route → 403; each one a
    documented status with the error shape, and the routes documented as public stay open."""
    master = "sk-master-" + "o" * 30
    dep = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1"}
    cfg = {"state_dir": str(tmp_path / "state"), "auth": {"master_key": master},
           "models": [{"name": "oai", "deployments": [dep]}]}  # fmt: skip
    with portico_server(cfg, tmp_path) as url, httpx.Client(base_url=url, timeout=30) as http:
        spec = http.get("/openapi.json").json()
        created = http.post("/admin/keys", json={"name": "user"}, headers={"authorization": f"Bearer {master}"})
        user_key = created.json()["key"]
        for op in OPS:
            path = _path(op, dict.fromkeys(op.example.path if op.example else {}, "x"))
            anonymous = http.request(op.method, path)
            if op.auth == "none":
                assert anonymous.status_code not in (401, 403), f"{op.method} {op.path} is documented as public"
                continue
            assert anonymous.status_code == 401, f"{op.method} {op.path}: {anonymous.status_code}"
            check_answer(spec, op, anonymous)
            if op.auth == "admin":
                forbidden = http.request(op.method, path, headers={"authorization": f"Bearer {user_key}"})
                assert forbidden.status_code == 403
                check_answer(spec, op, forbidden)
