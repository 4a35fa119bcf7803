"""schemathesis against a real ``portico serve``'s own ``/openapi.json``: every documented operation, as the master
key, a virtual key and an anonymous caller, and once more on a server without auth (every route open). Goal and
assertion: no 5xx, no response that breaks the document (status, content type, headers, body schema, SSE events),
no traceback or error in the server's log. A bounded example count keeps this to a minute or two; bench/fuzz.py
runs the same with more examples. The tests after the runs pin the bugs the fuzzer found."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fuzzing import MASTER, FuzzServer, fuzz_server, log_problems, run_schemathesis

# (who calls, phases, examples per operation): the master key and the open server get every phase; the others
# mostly meet the auth gate, so a few fuzzed examples per operation cover them.
RUNS = {
    "master": ("examples,coverage,fuzzing", 3),
    "user": ("examples,fuzzing", 3),
    "anonymous": ("examples,fuzzing", 3),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    with fuzz_server(tmp_path_factory.mktemp("fuzz")) as s:
        yield s


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    with fuzz_server(tmp_path_factory.mktemp("fuzz-open"), auth=False) as s:
        yield s


def _fuzz(s: FuzzServer, who: str, out: Path, phases: str, examples: int) -> None:
    start = s.log.stat().st_size
    r = run_schemathesis(s.url, who, out, headers=s.auth(who), max_examples=examples, phases=phases)
    assert r.generated >= 50 * examples, r.output[-3000:]  # every operation got its examples
    assert not r.errors, f"{r.errors}\n{r.output[-3000:]}"
    assert not r.failures, f"{who}: {r.count()} failing test cases\n{r.details()}"
    problems = log_problems(s.log, start)
    assert not problems, f"{len(problems)} tracebacks/errors in the server log, first:\n{problems[0][:3000]}"


@pytest.mark.parametrize("who", list(RUNS))
def test_fuzz_with_auth(server: FuzzServer, who: str, tmp_path: Path) -> None:
    _fuzz(server, who, tmp_path, *RUNS[who])


def test_fuzz_without_auth(open_server: FuzzServer, tmp_path: Path) -> None:
    _fuzz(open_server, "anonymous", tmp_path, "examples,coverage,fuzzing", 3)


# ---- what the fuzzer found ---------------------------------------------------------------------------------------


def test_key_update_with_null_name_is_a_400(server: FuzzServer) -> None:
    """Was a 500: ``name: null`` reached the database's NOT NULL constraint. Other fields' null means "no limit"."""
    admin = {"authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
        key_id = http.post("/admin/keys", json={"name": "fuzz-null"}).json()["id"]
        r = http.patch(f"/admin/keys/{key_id}", json={"name": None, "rpm": None, "tools": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "name"
        r = http.patch(f"/admin/keys/{key_id}", json={"rpm": None, "tools": []})
        assert r.status_code == 200 and r.json()["name"] == "fuzz-null"


def test_sse_events_are_documented_per_event(server: FuzzServer) -> None:
    """The document described a stream as one string; tools read a stream's schema per event (OpenAPI 3.2's
    itemSchema), so each event's ``data`` is JSON of the event type (or ``[DONE]`` on chat)."""
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    data = chat["schema"]["properties"]["data"]
    assert chat["schema"]["required"] == ["data"] and data["if"] == {"const": "[DONE]"}
    assert {"$ref": "#/components/schemas/ChatCompletionChunk"} in data["else"]["contentSchema"]["anyOf"]
    msgs = spec["paths"]["/v1/messages"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    event = msgs["schema"]["properties"]["data"]["contentSchema"]
    assert event == {"$ref": "#/components/schemas/AnthropicStreamEvent"}
