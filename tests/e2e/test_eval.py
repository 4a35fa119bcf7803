"""Eval runs end to end: the real ``portico eval`` CLI over llm-katan (and the local model), results in the
database a running server reads (``/admin/evals``), the report files, gates' exit codes, resume after an
interruption, datasets built from traces with feedback, and the dashboard's run comparison in Chromium.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.e2e.test_ui import BROWSER_DIR, CHROMIUM
from tests.support import VENV_BIN, portico_server

MASTER = "sk-master-eval-test"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
ITEMS = [
    {"id": "math", "input": "What is 2+2? answer 4", "expected": 4, "tags": ["math"]},
    # llm-katan echoes the prompt: "[[4]]" reaches the echo judge's reply, which the pointwise judge parses.
    {"id": "capital", "input": "Name the capital of France: Paris [[4]]", "expected": "Paris"},
    {"id": "tool", "input": "weather in Oslo", "tools": TOOLS,
     "expected_tools": [{"name": "get_weather", "arguments": {"city": "test_city"}}],
     "metadata": {"expected_steps": 1}},
]  # fmt: skip


@pytest.fixture(scope="module")
def env(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("eval")
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "metrics": [{"name": "helpful", "type": "boolean"}, {"name": "fix", "type": "demonstration"}],
        "storage": {"usage_flush_seconds": 0.2},
        "models": [
            {"name": "oai", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                             "api_key": "sk-test", "price": {"input": 1.0, "output": 2.0}}]},
            {"name": "local", "deployments": [{"provider": "local", "n_ctx": 2048}]},
            {"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]},
        ],
        "applications": [{"name": "helper", "model": "oai", "version": "3",
                          "steps": [{"use": "system_prompt", "text": "Be terse."}]}],
    }  # fmt: skip
    (tmp / "data.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    with portico_server(cfg, tmp, timeout=180) as url:
        yield {"url": url, "tmp": tmp, "config": tmp / "portico.yaml"}


def _admin(env: dict, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, env["url"] + path, headers={"authorization": f"Bearer {MASTER}"}, timeout=60, **kw)


def _eval(env: dict, spec: dict, *args: str) -> subprocess.CompletedProcess:
    path = env["tmp"] / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [str(VENV_BIN / "portico"), "eval", "run", str(path), "--config", str(env["config"]), "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=env["tmp"])


def _run(env: dict, name: str) -> dict:
    runs = _admin(env, "GET", "/admin/evals", params={"name": name}).json()["data"]
    return _admin(env, "GET", f"/admin/evals/{runs[0]['run_id']}").json()


EVERY_SCORER = {
    "name": "every-scorer",
    "dataset": "data.jsonl",
    "repeats": 2,
    "concurrency": 3,
    "variants": [
        {"name": "plain", "model": "oai"},
        {"name": "app", "model": "helper"},
        {"name": "app-v4", "model": "helper", "version": "4", "system_prompt": "Answer in one word."},
        {"name": "bare", "model": "helper", "steps": []},  # the application without its steps
    ],
    "scorers": [
        {"type": "contains"}, {"type": "equals"}, {"type": "regex", "pattern": "messages=1"},
        {"type": "numeric", "tolerance": 0.01}, {"type": "json_schema", "schema": {"type": "object"}},
        {"type": "embedding_similarity", "threshold": 0.2}, {"type": "tool_called"}, {"type": "tool_arguments"},
        {"type": "steps"}, {"type": "hit_at_k", "k": 3}, {"type": "ndcg_at_k"}, {"type": "citation_coverage"},
        {"type": "llm_judge", "model": "oai", "rubric": "Is it right?"},
    ],
    "pairwise": [{"model": "oai", "variants": ["plain", "app"]}],
    "gates": [{"scorer": "contains", "variant": "plain", "min": 0.5},
              {"scorer": "regex", "variant": "app", "min": 0.5}],
}  # fmt: skip


def test_every_scorer_over_katan_with_report_and_failing_gate(env: dict) -> None:
    p = _eval(env, EVERY_SCORER)
    assert p.returncode == 1, p.stderr  # the regex gate fails: the application adds a system message
    assert "gate failed: regex on app" in p.stderr
    run = _run(env, "every-scorer")
    assert run["status"] == "done" and len(run["results"]) == 3 * 4 * 2
    v = run["summary"]["variants"]
    mean = {name: {s: x.get("mean") for s, x in st["scorers"].items()} for name, st in v.items()}
    assert mean["plain"]["contains"] == 1.0 and mean["plain"]["regex"] == pytest.approx(2 / 3)
    assert mean["app"]["regex"] == 0.0 and mean["app-v4"]["regex"] == 0.0  # two messages: prompt override applied
    assert mean["bare"]["regex"] == pytest.approx(2 / 3)  # steps: [] dropped the system prompt
    assert mean["plain"]["numeric"] == 1.0 and mean["plain"]["json_schema"] == 0.0
    assert mean["plain"]["tool_called"] == mean["plain"]["tool_arguments"] == mean["plain"]["steps"] == 1.0
    assert 0.2 < mean["plain"]["embedding_similarity"] < 1.0
    assert v["plain"]["scorers"]["hit_at_k"] == {"n": 0}  # no item has gold ids: not applicable
    assert mean["plain"]["llm_judge"] == 0.75  # the echo judge's reply carries the item's [[4]]
    assert v["plain"]["scorers"]["llm_judge"]["n"] == 1  # other items: no rating, recorded as not scored
    judged = next(r for r in run["results"] if r["item_id"] == "math" and r["variant"] == "plain")
    assert "no rating" in judged["details"]["llm_judge"]["error"]
    assert v["plain"]["cost_usd"]["mean"] > 0 and v["plain"]["latency_ms"]["p50"] > 0
    assert v["plain"]["scorers"]["contains"]["pass_at_k"] == 1.0 and v["plain"]["scorers"]["contains"]["flaky"] == 0
    pair = run["summary"]["pairwise"][0]
    assert pair["n"] == 3 and pair["ties"] == 3  # echo judges contradict themselves once positions swap
    assert {c["b"] for c in run["summary"]["comparisons"]} == {"app", "app-v4", "bare"}
    gates = {g["scorer"]: g["status"] for g in run["summary"]["gates"]}
    assert gates == {"contains": "pass", "regex": "fail"}
    report = env["tmp"] / "state" / "evals" / run["run_id"] / "report.html"
    html = report.read_text()
    assert "<svg" in html and "app-v4" in html and "Paired comparisons" in html and "Latency" in html
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    md = (report.parent / "report.md").read_text()
    assert "| plain |" in md and "gate FAIL" in md and "pass@2" in md


def test_regression_gate_against_the_previous_run(env: dict) -> None:
    spec = {"name": "regress", "dataset": "data.jsonl", "variants": [{"name": "x", "model": "oai"}],
            "scorers": [{"type": "regex", "pattern": "messages=1"}],
            "gates": [{"scorer": "regex", "variant": "x", "baseline": "previous", "max_drop": 0.1}]}  # fmt: skip
    first = _eval(env, spec)
    assert first.returncode == 0, first.stderr  # no previous run: nothing to regress from
    worse = {**spec, "variants": [{"name": "x", "model": "helper"}]}  # adds a system message: regex fails
    second = _eval(env, worse)
    assert second.returncode == 1 and "dropped below baseline" in second.stderr
    recovered = _eval(env, spec)
    assert recovered.returncode == 0, recovered.stderr  # compared with the previous (worse) run: no drop
    gate = _run(env, "regress")["summary"]["gates"][0]
    assert gate["baseline_value"] == 0.0 and gate["value"] == pytest.approx(2 / 3) and gate["status"] == "pass"


def test_resume_after_interruption(env: dict) -> None:
    spec = {"name": "resume", "dataset": "data.jsonl", "repeats": 2, "concurrency": 1,
            "variants": [{"name": "a", "model": "oai"}, {"name": "b", "model": "helper"}],
            "scorers": [{"type": "contains"}]}  # fmt: skip
    stopped = _eval(env, spec, "--stop-after", "5")
    assert stopped.returncode == 3 and "run again to resume" in stopped.stderr
    partial = _run(env, "resume")
    assert partial["status"] == "running" and len(partial["results"]) == 5
    resumed = _eval(env, spec)
    assert resumed.returncode == 0, resumed.stderr
    assert "(resumed, 7 cells run)" in resumed.stderr  # 12 cells: 5 from the interrupted run, 7 now
    done = _run(env, "resume")
    assert done["run_id"] == partial["run_id"] and done["status"] == "done" and len(done["results"]) == 12
    fresh = _eval(env, spec)  # a finished run is not reopened: a new one starts
    assert "(started, 12 cells run)" in fresh.stderr


def test_local_model_as_variant_and_judge(env: dict) -> None:
    (env["tmp"] / "one.jsonl").write_text(json.dumps({"id": "sky", "input": "What colour is the sky?",
                                                      "expected": "blue"}) + "\n")  # fmt: skip
    spec = {"name": "local", "dataset": "one.jsonl",
            "variants": [{"name": "small", "model": "local", "params": {"max_tokens": 12, "temperature": 0}}],
            "scorers": [{"type": "contains"}, {"type": "embedding_similarity"},
                        {"type": "llm_judge", "model": "local", "max_tokens": 16}]}  # fmt: skip
    p = _eval(env, spec)
    assert p.returncode == 0, p.stderr
    r = _run(env, "local")["results"][0]
    assert r["error"] is None and r["output"]["text"] and r["tokens"] > 0 and r["latency_ms"] > 0
    assert 0.0 <= r["scores"]["embedding_similarity"] <= 1.0
    # A 135M model rarely follows the judge's format: either a rating or the reply kept beside "no rating".
    judge = r["details"]["llm_judge"]
    assert judge["reply"] and (r["scores"]["llm_judge"] is not None or "no rating" in judge["error"])


def test_eval_against_a_running_server(env: dict) -> None:
    spec = {"name": "remote", "dataset": "data.jsonl", "concurrency": 2,
            "variants": [{"name": "plain", "model": "oai"}, {"name": "app", "model": "helper"}],
            "scorers": [{"type": "regex", "pattern": "messages=1"}, {"type": "embedding_similarity"},
                        {"type": "tool_called"}]}  # fmt: skip
    p = _eval(env, spec, "--url", env["url"], "--api-key", MASTER, "--master-key", MASTER)
    assert p.returncode == 0, p.stderr
    run = _run(env, "remote")
    mean = {v: {s: x.get("mean") for s, x in st["scorers"].items()} for v, st in run["summary"]["variants"].items()}
    assert mean["plain"]["regex"] == pytest.approx(2 / 3) and mean["app"]["regex"] == 0.0
    assert mean["plain"]["tool_called"] == 1.0 and 0 < mean["plain"]["embedding_similarity"] < 1
    cell = run["results"][0]
    assert cell["cost_usd"] > 0 and cell["output"]["request_id"]  # the server's request id and its traced cost
    assert _admin(env, "GET", f"/admin/requests/{cell['output']['request_id']}").status_code == 200
    overrides = {**spec, "name": "remote2", "variants": [{"name": "v", "model": "helper", "system_prompt": "x"}]}
    p = _eval(env, overrides, "--url", env["url"], "--api-key", MASTER)
    assert p.returncode == 2 and "in-process run" in p.stderr


def test_bad_specs_exit_2(env: dict) -> None:
    p = _eval(env, {"name": "bad", "dataset": "data.jsonl", "variants": [{"name": "x", "model": "nope"}]})
    assert p.returncode == 2 and "variant 'x'" in p.stderr
    p = _eval(env, {"name": "bad2", "dataset": "data.jsonl", "variants": [{"name": "x", "model": "oai"}],
                    "gates": [{"scorer": "contains", "variant": "x", "min": 1}]})  # fmt: skip
    assert p.returncode == 2 and "unknown scorer" in p.stderr


def test_dataset_from_traces_with_feedback(env: dict) -> None:
    r = _admin(env, "POST", "/admin/keys", json={"name": "ds"})
    key = r.json()["key"]
    client = openai.OpenAI(base_url=env["url"] + "/v1", api_key=key, max_retries=0, timeout=30)
    ids = []
    for q in ("first question", "second question", "third question"):
        raw = client.chat.completions.with_raw_response.create(
            model="helper", messages=[{"role": "user", "content": q}]
        )
        raw.parse()
        ids.append(raw.headers["x-request-id"])
    fb = [{"request_id": ids[0], "metric": "helpful", "value": True},
          {"request_id": ids[1], "metric": "fix", "value": "The corrected answer."}]  # fmt: skip
    for body in fb:
        assert httpx.post(env["url"] + "/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"},
                          timeout=30).status_code == 200  # fmt: skip
    out = env["tmp"] / "prod.jsonl"
    cmd = [str(VENV_BIN / "portico"), "eval", "dataset", "from-traces", "--url", env["url"], "--master-key", MASTER,
           "--app", "helper", "--since", "1h", "--with-feedback", "--out", str(out), "--name", "prod"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "registered as prod v1" in p.stderr
    items = {i["id"]: i for i in map(json.loads, out.read_text().splitlines())}
    assert set(items) == {ids[0], ids[1]}  # the unjudged request is left out
    assert items[ids[0]]["messages"] == [{"role": "user", "content": "first question"}]  # app's system prompt dropped
    assert "first question" in items[ids[0]]["expected"] and "helpful:true" in items[ids[0]]["tags"]
    assert items[ids[1]]["expected"] == "The corrected answer."
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "registered as prod v1" in again.stderr  # same content, same version
    direct = out.with_name("direct.jsonl")
    cmd2 = [str(VENV_BIN / "portico"), "eval", "dataset", "from-traces", "--config", str(env["config"]),
            "--app", "helper", "--with-feedback", "--out", str(direct)]  # fmt: skip
    assert subprocess.run(cmd2, capture_output=True, text=True, timeout=120).returncode == 0
    assert len(direct.read_text().splitlines()) == 2
    datasets = _admin(env, "GET", "/admin/datasets").json()["data"]
    assert any(d["name"] == "prod" and d["version"] == 1 and d["items"] == 2 for d in datasets)
    # The registered version is usable as an eval dataset by name.
    spec = {"name": "from-db", "dataset": {"name": "prod"}, "variants": [{"name": "x", "model": "helper"}],
            "scorers": [{"type": "embedding_similarity"}]}  # fmt: skip
    assert _eval(env, spec).returncode == 0
    assert _run(env, "from-db")["summary"]["dataset"]["version"] == 1


def test_admin_evals_api(env: dict) -> None:
    assert httpx.get(env["url"] + "/admin/evals", timeout=10).status_code == 401
    assert _admin(env, "GET", "/admin/evals/nope").status_code == 404
    assert _admin(env, "GET", "/admin/evals", params={"limit": "x"}).json()["error"]["param"] == "limit"


def test_dashboard_compares_two_runs(env: dict, tmp_path: Path) -> None:
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir() or not Path(CHROMIUM).exists():
        pytest.fail("browser test prerequisites missing: run `make test` (npm ci in tests/browser, apt chromium)")
    spec = {"name": "compare", "dataset": "data.jsonl", "variants": [{"name": "x", "model": "oai"}],
            "scorers": [{"type": "regex", "pattern": "messages=1"}]}  # fmt: skip
    assert _eval(env, spec).returncode == 0
    assert _eval(env, {**spec, "variants": [{"name": "x", "model": "helper"}]}).returncode == 0
    runs = [r["run_id"] for r in _admin(env, "GET", "/admin/evals", params={"name": "compare"}).json()["data"]]
    # A request with feedback, for the trace page's feedback section.
    body = {"model": "helper", "messages": [{"role": "user", "content": "judge me"}], "user": "u-9",
            "metadata": {"session_id": "conv-42"}}  # fmt: skip
    rid = _admin(env, "POST", "/v1/chat/completions", json=body).headers["x-request-id"]
    for metric, value in (("helpful", False), ("fix", "A better answer.")):
        assert _admin(
            env, "POST", "/v1/feedback", json={"request_id": rid, "metric": metric, "value": value}
        ).is_success
    p = subprocess.run(["node", str(BROWSER_DIR / "evals.mjs"), env["url"], MASTER, str(tmp_path), runs[1], runs[0],
                        rid], capture_output=True, text=True, timeout=120, cwd=BROWSER_DIR)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert seen["consoleErrors"] == []
    assert any(f.startswith("helpful\tboolean\tfalse") for f in seen["feedback"]), seen["feedback"]
    assert any("A better answer." in f for f in seen["feedback"])
    assert "session conv-42" in seen["conversation"] and "user u-9" in seen["conversation"]
    # math and capital got worse (the application adds a system message); the tool item has no text to match.
    worse = {(r["item"], r["variant"], r["delta"]) for r in seen["rows"]}
    assert ("math", "x", "-1.000") in worse and ("capital", "x", "-1.000") in worse
    assert any("messages=2" in r["b"] for r in seen["rows"])  # the answers themselves, side by side
    assert seen["summary"] == [["x", "regex", "0.667", "0.000", "-0.667"]]
    assert (tmp_path / "ui-evals.png").stat().st_size > 10_000 and (
        tmp_path / "ui-feedback.png"
    ).stat().st_size > 10_000
    if os.environ.get("PORTICO_SCREENSHOTS"):
        import shutil

        for name in ("ui-evals.png", "ui-feedback.png"):
            shutil.copy(tmp_path / name, Path(os.environ["PORTICO_SCREENSHOTS"]) / name)
