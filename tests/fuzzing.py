"""Fuzzing a real ``portico serve`` with schemathesis, shared by tests/e2e/test_fuzz.py (a bounded run in
``make test``) and bench/fuzz.py (a longer one).

The server gets a config that makes every documented route reachable: a chat model and an embedding model on a
scripted upstream (answers any conversation; ``/v1/embeddings`` returns hashed vectors), an application, a metric
for feedback, a SQLite SQL source, a master key and one virtual key. schemathesis reads the server's own
``/openapi.json`` and runs its examples, coverage and fuzzing phases with the response conformance checks; the
server's log is then scanned for tracebacks and errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests.scripted_upstream import ScriptedUpstream, Turn
from tests.support import VENV_BIN, portico_server

MASTER = "sk-master-fuzz-" + "f" * 24

# Every check that judges one response against the document, plus the server-error one. Left out: the checks
# that judge input validation beyond the document (negative_data_rejection, positive_data_acceptance: the server
# may accept more than the schema says, e.g. extra fields OpenAI SDKs send) and the stateful resource checks.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


async def _embeddings(request: web.Request) -> web.Response:
    """OpenAI-shaped embeddings: 16 floats hashed from each input, so equal texts get equal vectors."""
    body = await request.json()
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    data = []
    for i, t in enumerate(texts):
        digest = hashlib.sha256(str(t).encode()).digest()
        data.append({"object": "embedding", "index": i, "embedding": [(b - 128) / 128 for b in digest[:16]]})
    usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
    return web.json_response({"object": "list", "data": data, "model": "hashed", "usage": usage})


def upstream() -> ScriptedUpstream:
    return ScriptedUpstream(lambda body: Turn.say("Hello from the fuzz upstream."),
                            routes=[web.post("/v1/embeddings", _embeddings)])  # fmt: skip


def _sql_db(tmp: Path) -> str:
    path = tmp / "fuzz.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT OR IGNORE INTO items VALUES (1, 'one'), (2, 'two')")
        db.commit()
    return f"sqlite:///{path}"


def fuzz_config(upstream_url: str, tmp: Path, *, auth: bool = True) -> dict[str, Any]:
    dep = {"provider": "openai", "model": "scripted", "base_url": f"{upstream_url}/v1", "api_key": "x",
           "timeouts": {"connect": 2, "first_byte": 10, "total": 30}}  # fmt: skip
    return {
        "state_dir": str(tmp / "state"),
        "logging": {"level": "INFO"},
        "auth": {"master_key": MASTER if auth else None},
        "models": [
            {"name": "oai", "deployments": [dep]},
            {"name": "embed", "type": "embedding", "deployments": [{**dep, "model": "hashed"}]},
        ],
        "applications": [{"name": "helper", "model": "oai", "steps": [{"use": "system_prompt", "text": "Be terse."}]}],
        "metrics": [{"name": "helpful", "type": "boolean"}],
        "sql_sources": [{"name": "shop", "url": _sql_db(tmp), "tables": ["items"], "max_rows": 5}],
    }


@dataclass
class FuzzServer:
    url: str
    log: Path
    user_key: str

    def auth(self, who: str) -> dict[str, str]:
        """Headers of a caller: ``master`` (the master key), ``user`` (a virtual key) or ``anonymous``."""
        token = {"master": MASTER, "user": self.user_key}.get(who)
        return {"authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def fuzz_server(tmp: Path, *, auth: bool = True) -> Iterator[FuzzServer]:
    """The scripted upstream and a real ``portico serve`` with the fuzz config (with a master key unless ``auth``
    is false: then every route is open on loopback), one virtual key created."""
    up = upstream()
    with up.in_thread(), portico_server(fuzz_config(up.url, tmp, auth=auth), tmp, log="portico.log") as url:
        r = httpx.post(f"{url}/admin/keys", json={"name": "fuzz-user"}, headers={"authorization": f"Bearer {MASTER}"})
        r.raise_for_status()
        yield FuzzServer(url, tmp / "portico.log", r.json()["key"])


@dataclass
class FuzzResult:
    label: str
    generated: int
    failures: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    seconds: float
    output: str = field(repr=False)

    def details(self, limit: int = 6000) -> str:
        """schemathesis' own account of the failures (with a curl line for each), for an assertion message."""
        start = self.output.find("FAILURES")
        return self.output[start if start >= 0 else 0 :][:limit]

    def count(self, *titles: str) -> int:
        """Failing test cases whose failure title contains any of ``titles`` (all of them when none given)."""
        return sum(f["count"] for f in self.failures if not titles or any(t in f["title"] for t in titles))

    @property
    def server_errors(self) -> int:
        return sum(f["count"] for f in self.failures if f["type"] == "ServerError")

    @property
    def spec_violations(self) -> int:
        """Failures of the conformance checks: every check run but the server-error one judges the document."""
        return sum(f["count"] for f in self.failures if f["type"] != "ServerError")


def run_schemathesis(
    url: str,
    label: str,
    out: Path,
    *,
    headers: dict[str, str] | None = None,
    max_examples: int = 5,
    phases: str = "examples,coverage,fuzzing",
    seed: int = 28,
    workers: int = 2,
    extra: tuple[str, ...] = (),
) -> FuzzResult:
    """One ``st run`` over every documented operation; its JSON report is read back."""
    report = out / f"schemathesis-{label}.json"
    cmd = [str(VENV_BIN / "st"), "run", f"{url}/openapi.json", "--checks", ",".join(CHECKS),
           "--max-examples", str(max_examples), "--phases", phases, "--seed", str(seed),
           "--workers", str(workers), "--request-timeout", "30", "--generation-database", "none",
           "--no-color", "--report", "json", "--report-json-path", str(report),
           "--warnings", "off", *extra]  # fmt: skip
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    t0 = time.monotonic()
    # In ``out``: schemathesis keeps a cache of crashes in ./.schemathesis.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=out)
    seconds = time.monotonic() - t0
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                           f"{proc.stderr[-4000:]}")  # fmt: skip
    doc = json.loads(report.read_text())
    return FuzzResult(label, doc["test_cases"]["generated"], doc["failures"], doc["errors"], seconds,
                      proc.stdout + proc.stderr)  # fmt: skip


_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\"exc\":")


def log_problems(log: Path, start: int = 0) -> list[str]:
    """Lines of the server's log (from byte ``start`` on) that carry a traceback or an error-level record."""
    out = []
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        if _TRACEBACK.search(line) or '"level":"error"' in line or '"level":"critical"' in line:
            out.append(line[:2000])
    return out
