"""``tracing.content: redacted`` end to end: known PII planted in prompts, tool arguments and a tool's (retrieved)
text must not reach the trace store (the SQLite files, WAL included), the server's log or the OTLP export — only
placeholders. An application with a ``pii`` step keeps storing its own masked text, never the raw one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import VENV_BIN, free_port, running

NAME = "Johanna Lindqvist"
EMAIL = "johanna.lindqvist@example.org"
PHONE = "+1 415 555 0132"
CARD = "4111 1111 1111 1111"
PLANTED = (NAME, EMAIL, PHONE, CARD, "Lindqvist", "415 555", "4111")


class RawOtlp:
    """An OTLP/HTTP endpoint that keeps every request body as it arrived (protobuf bytes)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def redacted(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, RawOtlp]]:
    tmp = tmp_path_factory.mktemp("redaction")
    otlp = RawOtlp()
    dep = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "sk-test"}
    cfg = {
        "state_dir": str(tmp / "state"),
        "logging": {"level": "DEBUG"},  # every log line the server and its libraries write, access log included
        "tracing": {"content": "redacted", "otlp_endpoint": otlp.url},
        "cache": {"enabled": False},
        "models": [{"name": "oai", "deployments": [dep]}],
        "applications": [{"name": "masked", "model": "oai", "steps": [{"use": "pii", "ner": "none"}]}],
    }
    path = tmp / "portico.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(path), "--port", str(port)]
    try:
        with running(cmd, f"{url}/readyz", tmp / "portico.log", timeout=180):
            yield url, tmp, otlp
    finally:
        otlp.close()


def post(url: str, body: dict) -> str:
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def test_planted_pii_reaches_no_store_log_or_export(redacted: tuple[str, Path, RawOtlp]) -> None:
    url, tmp, otlp = redacted
    arguments = json.dumps({"to": EMAIL, "name": NAME})
    messages = [
        {"role": "user", "content": f"Hi, my name is {NAME}. Mail me at {EMAIL} or call {PHONE}; card {CARD}."},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "send", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"Retrieved record: {NAME}, phone {PHONE}, {EMAIL}"},
        {"role": "user", "content": f"Repeat my details: {NAME}, {EMAIL}"},
    ]  # fmt: skip
    plain = post(url, {"model": "oai", "messages": messages})
    masked_app = post(url, {"model": "masked", "messages": [{"role": "user", "content": f"Mail {EMAIL}, card {CARD}"}]})

    t = httpx.get(f"{url}/admin/requests/{plain}", timeout=60).json()  # flushes the writer first
    stored = json.dumps([t["input"], t["output"]])
    assert "[PERSON_1]" in stored and "[EMAIL_ADDRESS_1]" in stored and "[PHONE_NUMBER_1]" in stored
    assert "[CREDIT_CARD_1]" in stored and t["output"]  # the echoed answer is stored, redacted
    assert '\\"to\\": \\"[EMAIL_ADDRESS_1]\\"' in stored  # the tool call's arguments
    m = httpx.get(f"{url}/admin/requests/{masked_app}", timeout=60).json()
    assert "[EMAIL_ADDRESS_1]" in json.dumps(m["input"])  # the pii step's own masked text

    # Nothing raw anywhere Portico writes: every database file (WAL too), the log, the OTLP export.
    _wait(lambda: len(otlp.bodies) > 0)  # the OTLP batch processor exports within its schedule delay (5 s)
    files = {p: p.read_bytes() for p in (tmp / "state").rglob("*") if p.is_file()}
    assert any(p.name.startswith("portico.db") for p in files)
    files[tmp / "portico.log"] = (tmp / "portico.log").read_bytes()
    files[Path("otlp-export")] = b"".join(otlp.bodies)
    for path, data in files.items():
        for value in PLANTED:
            assert value.encode() not in data, f"{value!r} found in {path}"
    # Last: the search term itself reaches the debug log (the SQL parameters), not the store.
    assert httpx.get(f"{url}/admin/requests", params={"q": "Lindqvist"}, timeout=60).json()["data"] == []


def _wait(ok: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not ok() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ok()
