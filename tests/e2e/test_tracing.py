"""Request traces end to end: a real Portico process with llm-katan upstreams, the openai SDK as the client, the
admin request browser, and an OTLP/HTTP receiver started inside the test."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import VENV_BIN, free_port, running


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint: keeps every decoded span (name → attributes)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict, bytes, bytes]] = []  # name, attributes, span id, parent span id
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            receiver.spans.append((sp.name, _attrs(sp.attributes), sp.span_id, sp.parent_span_id))
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attrs(kvs) -> dict:  # type: ignore[no-untyped-def]
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = list(x.string_value for x in v.array_value.values) if kind == "array_value" else getattr(v, kind)
    return out


def _config(katan: str, tmp: Path, tracing: dict) -> Path:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    key = {"api_key": "sk-test"}
    cfg = {
        "state_dir": str(tmp / "state"),
        "tracing": tracing,
        "models": [
            {"name": "oai", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", **key}]},
            {"name": "flaky", "retries": {"max": 0}, "fallbacks": ["oai"],
             "deployments": [{"provider": "openai", "model": "x", "base_url": f"{dead}/v1", **key}]},
            {"name": "down", "retries": {"max": 0},
             "deployments": [{"provider": "openai", "model": "x", "base_url": f"{dead}/v1", **key}]},
        ],
    }  # fmt: skip
    path = tmp / "portico.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def _portico(cfg: Path, tmp: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(cfg), "--port", str(port)]
    with running(cmd, f"{url}/readyz", tmp / "portico.log"):
        yield url


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def server(katan: str, otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("tracing")
    cfg = _config(katan, tmp, {"content": "full", "otlp_endpoint": otlp.url})
    old = os.environ.get("OTEL_BSP_SCHEDULE_DELAY")
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # export within 0.2 s instead of 5 s (read by the child)
    try:
        with _portico(cfg, tmp) as url:
            yield url
    finally:
        if old is None:
            os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
        else:
            os.environ["OTEL_BSP_SCHEDULE_DELAY"] = old


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=30)


def chat(url: str, model: str, prompt: str) -> str:
    raw = sdk(url).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.parse().choices[0].message.content
    return raw.headers["x-request-id"]


def detail(url: str, request_id: str) -> dict:
    r = httpx.get(f"{url}/admin/requests/{request_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def spans_named(node: dict, prefix: str) -> list[dict]:
    found = [node] if node["name"].startswith(prefix) else []
    for c in node["children"]:
        found += spans_named(c, prefix)
    return found


def test_chat_request_is_listed_with_its_span_tree(server: str) -> None:
    rid = chat(server, "oai", "describe a lighthouse")
    listed = httpx.get(f"{server}/admin/requests", params={"model": "oai"}, timeout=30).json()
    assert listed["object"] == "list" and rid in [r["request_id"] for r in listed["data"]]
    t = detail(server, rid)
    assert t["status"] == 200 and t["model"] == "oai" and t["prompt_tokens"] > 0
    assert t["input"] == [{"role": "user", "content": "describe a lighthouse"}] and t["output"]
    (root,) = t["spans"]
    assert root["name"] == "chat oai" and root["status"] == "ok"
    a = root["attributes"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "oai" and a["gen_ai.response.model"]
    assert a["gen_ai.usage.input_tokens"] == t["prompt_tokens"] and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] and a["portico.request_id"] == rid
    (gen,) = [c for c in root["children"] if c["name"] == "generate"]
    assert [c["name"] for c in root["children"]] == ["cache", "generate", "cache_write"]
    assert gen["name"] == "generate"
    (attempt,) = gen["children"]
    assert (
        attempt["attributes"]["portico.deployment"] == "openai/echo" and attempt["attributes"]["portico.status"] == 200
    )


def test_fallback_shows_two_attempts(server: str) -> None:
    rid = chat(server, "flaky", "hello fallback")
    (root,) = detail(server, rid)["spans"]
    attempts = spans_named(root, "chat openai/")
    assert [s["attributes"]["portico.deployment"] for s in attempts] == ["openai/x", "openai/echo"]
    assert [s["status"] for s in attempts] == ["error", "ok"]
    assert attempts[0]["attributes"]["error.type"]


def test_q_finds_a_request_by_a_word_of_its_prompt(server: str) -> None:
    rid = chat(server, "oai", "the quokka smiles")
    chat(server, "oai", "something else entirely")
    found = httpx.get(f"{server}/admin/requests", params={"q": "quokka"}, timeout=30).json()["data"]
    assert [r["request_id"] for r in found] == [rid]


def test_unknown_request_is_404_in_openai_shape(server: str) -> None:
    r = httpx.get(f"{server}/admin/requests/no-such-id", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"


def test_failed_request_is_traced_as_an_error(server: str) -> None:
    with pytest.raises(openai.APIError):
        sdk(server).chat.completions.create(model="down", messages=[{"role": "user", "content": "x"}])
    data = httpx.get(f"{server}/admin/requests", params={"model": "down", "limit": 1}, timeout=30).json()["data"]
    assert data and data[0]["status"] >= 500
    (root,) = detail(server, data[0]["request_id"])["spans"]
    assert root["status"] == "error" and spans_named(root, "chat openai/x")[0]["status"] == "error"


def test_otlp_export_reaches_the_receiver(server: str, otlp: OtlpReceiver) -> None:
    rid = chat(server, "oai", "export me")
    deadline = time.monotonic() + 20
    root = None
    while time.monotonic() < deadline and root is None:
        root = next((s for s in otlp.spans if s[0] == "chat oai" and s[1].get("portico.request_id") == rid), None)
        time.sleep(0.2)
    assert root is not None, [s[0] for s in otlp.spans]
    _, attrs, root_id, parent = root
    assert not parent and attrs["gen_ai.system"] == "openai" and attrs["gen_ai.usage.input_tokens"] > 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gen = [s for s in otlp.spans if s[0] == "generate" and s[3] == root_id]
        if gen:
            break
        time.sleep(0.2)
    assert gen
    attempts = [s for s in otlp.spans if s[3] == gen[0][2]]
    assert attempts and attempts[0][0] == "chat openai/echo"
    assert attempts[0][1]["portico.deployment"] == "openai/echo" and attempts[0][1]["portico.status"] == 200


def test_content_none_stores_no_input_or_output(katan: str, tmp_path: Path) -> None:
    with _portico(_config(katan, tmp_path, {"content": "none"}), tmp_path) as url:
        rid = chat(url, "oai", "keep this private")
        t = detail(url, rid)
        assert t["input"] is None and t["output"] is None and t["spans"]
        assert httpx.get(f"{url}/admin/requests", params={"q": "private"}, timeout=30).json()["data"] == []


def test_stream_is_traced_when_it_ends(server: str) -> None:
    body = {"model": "oai", "stream": True, "messages": [{"role": "user", "content": "stream a pelican"}]}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        assert "[DONE]" in "".join(r.iter_text())
    t = detail(server, rid)
    assert t["status"] == 200 and t["input"] and t["output"] is None  # the gateway keeps no stream text
    (root,) = t["spans"]
    assert spans_named(root, "chat openai/echo")
