"""What Portico writes to its log: one JSON line per request with its id, and never a secret."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest


def _lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _access_line(log: Path, request_id: str) -> dict:
    deadline = time.monotonic() + 5  # the writer thread flushes asynchronously
    while time.monotonic() < deadline:
        for rec in _lines(log):
            if rec.get("request_id") == request_id and rec.get("logger") == "portico.access":
                return rec
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def test_access_log_line_per_request(client: openai.OpenAI, portico_log: Path) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="oai", messages=[{"role": "user", "content": "log me"}], extra_headers={"x-request-id": "req-log-1"}
    )
    assert raw.headers["x-request-id"] == "req-log-1"
    rec = _access_line(portico_log, "req-log-1")
    assert rec["status"] == 200 and rec["model"] == "oai" and rec["deployment"] == "openai/echo"
    assert rec["path"] == "/v1/chat/completions" and rec["ms"] >= 0


def test_upstream_keys_never_reach_errors_or_logs(client: openai.OpenAI, portico_log: Path) -> None:
    # gemini sends its key as ?key=…; a connection failure must not echo the URL with the key.
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(
            model="gem-down", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": "req-log-2"}
        )
    assert ei.value.status_code == 503
    assert "sk-test" not in json.dumps(ei.value.body)
    _access_line(portico_log, "req-log-2")
    assert "sk-test" not in portico_log.read_text()
