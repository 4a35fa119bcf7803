"""The dashboard in a real browser: Debian's headless chromium driven by playwright-core (tests/browser).

Portico runs with the master key on and llm-katan upstream; the openai SDK sends requests; the page must show
them without a reload, open each trace's waterfall with the prompt and answer, and draw the usage charts.
Screenshots land in the test's tmp dir (``PORTICO_SCREENSHOTS`` copies them elsewhere, e.g. ``docs/``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import free_port, portico_server

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
MASTER = "sk-master-ui-test"


@pytest.fixture(scope="module")
def server(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("ui")
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "tracing": {"content": "full"},
        "models": [
            {"name": "oai", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                             "api_key": "sk-test"}]},
            {"name": "down", "retries": {"max": 0},
             "deployments": [{"provider": "openai", "model": "x", "base_url": f"{dead}/v1", "api_key": "sk-test"}]},
        ],
        "metrics": [{"name": "helpful", "type": "boolean"}],
        "applications": [{"name": "desk", "model": "oai", "steps": [{"branch": [
            {"when": 'request.metadata.tier == "gold"', "steps": [{"use": "system_prompt", "text": "Gold desk."}]},
            {"else": [{"use": "system_prompt", "text": "Standard desk."}]}]}]}],
    }  # fmt: skip
    with portico_server(cfg, tmp) as url:
        yield url


def test_static_assets_are_served_without_the_key_but_data_is_not(server: str) -> None:
    r = httpx.get(f"{server}/ui", follow_redirects=False, timeout=10)
    assert r.status_code == 308 and r.headers["location"] == "/ui/"
    page = httpx.get(f"{server}/ui/", timeout=10)
    assert page.status_code == 200 and "app.js" in page.text and '<script src="http' not in page.text
    assert httpx.get(f"{server}/ui/app.js", timeout=10).status_code == 200
    assert httpx.get(f"{server}/admin/stats", timeout=10).status_code == 401
    assert httpx.get(f"{server}/admin/requests", timeout=10).status_code == 401


def _readline(proc: subprocess.Popen) -> dict:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the browser script ended early:\n{err[-3000:]}")
    msg = json.loads(line)
    assert "error" not in msg, msg["error"]
    return msg


def test_dashboard_shows_requests_traces_and_charts(server: str, tmp_path: Path) -> None:
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir() or not Path(CHROMIUM).exists():
        pytest.fail("browser test prerequisites missing: run `make test` (npm ci in tests/browser, apt chromium)")
    proc = subprocess.Popen(
        ["node", str(BROWSER_DIR / "dashboard.mjs"), server, MASTER, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=BROWSER_DIR,
    )  # fmt: skip
    try:
        assert _readline(proc) == {"ready": True}
        client = openai.OpenAI(base_url=server + "/v1", api_key=MASTER, max_retries=0, timeout=30)
        with pytest.raises(openai.APIError):
            client.chat.completions.create(model="down", messages=[{"role": "user", "content": "x"}])
        failed = httpx.get(f"{server}/admin/requests", params={"model": "down", "limit": 1},
                           headers={"authorization": f"Bearer {MASTER}"}, timeout=10).json()["data"][0]  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(failed["request_id"] + "\n")
        proc.stdin.flush()
        assert _readline(proc)["spans"][0] == "chat down"

        # a branch: the trace page lists the path (the arm taken, its condition and value) and marks its span
        raw = client.chat.completions.with_raw_response.create(
            model="desk", metadata={"tier": "gold"}, messages=[{"role": "user", "content": "hello"}]
        )
        proc.stdin.write(raw.headers["x-request-id"] + "\n")
        proc.stdin.flush()
        seen = _readline(proc)
        assert "steps[0].when[0]" in seen["spans"]
        assert seen["path"] == ['steps[0].when[0] request.metadata.tier == "gold" → true']
        assert seen["graph"] == [["branch steps[0]", True], ['when request.metadata.tier == "gold"', True],
                                 ["system_prompt", True], ["else", False], ["system_prompt", False],
                                 ["generate", True]]  # fmt: skip
        proc.stdin.write("app:desk\n")  # the application view: its pipeline, before any request is opened
        proc.stdin.flush()
        nodes = ["branch steps[0]", 'when request.metadata.tier == "gold"', "system_prompt", "else", "system_prompt"]
        assert _readline(proc) == {"app": "desk", "nodes": [*nodes, "generate"]}

        raw = client.chat.completions.with_raw_response.create(
            model="oai", messages=[{"role": "user", "content": "describe the harbour at dawn"}]
        )
        answer = raw.parse().choices[0].message.content
        rid = raw.headers["x-request-id"]
        proc.stdin.write(rid + "\n")
        proc.stdin.flush()
        seen = _readline(proc)
        assert seen["id"] == rid
        assert seen["spans"][0] == "chat oai" and "generate" in seen["spans"]
        assert any(s.startswith("chat openai/") for s in seen["spans"])  # the provider attempt under generate
        assert "gen_ai.request.model" in seen["attributes"] and "oai" in seen["attributes"]
        assert any("describe the harbour at dawn" in p for p in seen["prompt"])
        assert answer and answer[:40] in seen["output"]
        proc.stdin.close()  # the last trace opened is the one the screenshot shows

        done = _readline(proc)
        assert done["bars"] >= 2 and "requests" in done["totals"] and done["consoleErrors"] == []
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for name in ("ui-requests.png", "ui-usage.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        if os.environ.get("PORTICO_SCREENSHOTS"):
            shutil.copy(tmp_path / name, Path(os.environ["PORTICO_SCREENSHOTS"]) / name)


def test_applications_tab_lists_draws_and_links(server: str, tmp_path: Path) -> None:
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir() or not Path(CHROMIUM).exists():
        pytest.fail("browser test prerequisites missing: run `make test` (npm ci in tests/browser, apt chromium)")
    auth = {"authorization": f"Bearer {MASTER}"}
    before = httpx.get(f"{server}/admin/stats", params={"group_by": "application"}, headers=auth, timeout=10).json()
    sent = next((g["requests"] for g in before["groups"] if g["name"] == "desk"), 0)
    client = openai.OpenAI(base_url=server + "/v1", api_key=MASTER, max_retries=0, timeout=30)
    ids = []
    for tier in ("gold", "silver", "gold"):
        raw = client.chat.completions.with_raw_response.create(
            model="desk", metadata={"tier": tier}, messages=[{"role": "user", "content": f"hello from {tier}"}])
        ids.append(raw.headers["x-request-id"])
    for rid, value in zip(ids, (True, False, True), strict=True):
        r = httpx.post(f"{server}/v1/feedback", json={"request_id": rid, "metric": "helpful", "value": value},
                       headers=auth, timeout=10)  # fmt: skip
        assert r.status_code in (200, 201), r.text
    listed = httpx.get(f"{server}/admin/applications", headers=auth, timeout=10).json()
    assert [(a["name"], a["model"], a["version"], a["steps"]) for a in listed["data"]] == [("desk", "oai", "1", 3)]
    assert httpx.get(f"{server}/admin/applications", timeout=10).status_code == 401

    proc = subprocess.run(["node", str(BROWSER_DIR / "applications.mjs"), server, MASTER, str(tmp_path), "desk"],
                          capture_output=True, text=True, cwd=BROWSER_DIR, timeout=120)  # fmt: skip
    seen = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"error": proc.stderr[-3000:]}
    assert "error" not in seen, seen["error"]
    name, model, version, steps, experiment, requests, errors, _cost, feedback = seen["cells"]
    assert (name, model, version, steps, experiment) == ("desk", "oai", "1", "3", "\u2013")  # no experiment
    assert int(requests) == sent + 3 and errors == "0"
    assert feedback == f"helpful {2 / 3:.2f} (n=3)"
    assert seen["nodes"] == ["branch steps[0]", 'when request.metadata.tier == "gold"', "system_prompt", "else",
                             "system_prompt", "generate"]  # fmt: skip
    # model: the name the client asked for, as in usage rows
    assert seen["feedback"] == [["helpful", "1", "desk", "3", f"{2 / 3:.3f}"]]
    assert seen["requestsVisible"] and seen["consoleErrors"] == []
    assert (tmp_path / "ui-applications.png").stat().st_size > 10_000


def test_stats_api_validates_its_query(server: str) -> None:
    auth = {"authorization": f"Bearer {MASTER}"}
    ok = httpx.get(f"{server}/admin/stats", params={"group_by": "key"}, headers=auth, timeout=10)
    assert ok.status_code == 200 and ok.json()["object"] == "stats" and ok.json()["bucket_seconds"] == 900
    bad = [({"group_by": "colour"}, "group_by"), ({"bucket": "x"}, "bucket"), ({"bucket": "1"}, "bucket"),
           ({"since": "2026-01-02", "until": "2026-01-01"}, "since")]  # fmt: skip
    for params, param in bad:
        r = httpx.get(f"{server}/admin/stats", params=params, headers=auth, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (params, r.text)
