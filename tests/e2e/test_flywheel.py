"""The flywheel end to end: a real ``portico serve`` routing with a preference router that has it backwards
(chit-chat to the big model, maths to the small one), llm-katan as both upstream models, the openai SDK as the
client. Routed requests get boolean feedback through ``/v1/feedback`` (the model that answered was right or
wrong) and a few prompts get a pairwise judgement between the two models; ``portico router train
--from-feedback`` trains a candidate, the shadow gate promotes it, and the running server routes with the new
version within seconds; ``portico router rollback`` takes it back. A second application retrains by itself
(``retrain_every``) inside the server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from portico.routing import PairwiseRecord, TrainConfig, train
from portico.routing.local_embed import local_embed_fn
from portico.routing.store import save
from tests.support import VENV_BIN, portico_server

MASTER = "mk-" + "f" * 40


def hard(i: int) -> str:
    return f"Solve the equation {i + 3}x^2 - {2 * i + 1}x + {i} = 0 and prove that both roots are real numbers."


def easy(i: int) -> str:
    return f"Hi! Could you say hello to my friend number {i} in a friendly way?"


def backwards_router(root: Path, name: str) -> None:
    """v1: learned the opposite of the truth — the big model wins chit-chat, maths is a tie."""
    records = [PairwiseRecord(easy(i), "big", "small", "model_a") for i in range(30)]
    records += [PairwiseRecord(hard(i), "big", "small", "tie") for i in range(30)]
    save(train(records, local_embed_fn(), config=TrainConfig(k=10), strong="big", weak="small"), root, name)


@dataclass
class Setup:
    url: str
    config: Path
    routers: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def setup(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("flywheel")
    routers = tmp / "routers"
    backwards_router(routers, "demo")
    backwards_router(routers, "auto")
    up = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "sk"}
    step = {"use": "route_preference", "strong": "big", "weak": "small", "dir": str(routers), "threshold": 0.5,
            "reload_seconds": 0.2}  # fmt: skip
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "metrics": [{"name": "correct", "type": "boolean"}, {"name": "solved", "type": "boolean"}],
        "storage": {"usage_flush_seconds": 0.2},
        "models": [
            {"name": "big", "deployments": [{**up, "name": "big-dep"}]},
            {"name": "small", "deployments": [{**up, "name": "small-dep"}]},
            {"name": "emb", "type": "embedding", "deployments": [{"provider": "local"}]},
        ],
        "applications": [
            {"name": "routed", "model": "small", "steps": [{**step, "router": "demo", "feedback_metric": "correct"}]},
            {"name": "self-taught", "model": "small", "steps": [
                {**step, "router": "auto", "feedback_metric": "solved", "retrain_every": 100,
                 "retrain_check_seconds": 1, "retrain_holdout": 0.4}]},
        ],
    }  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with portico_server(cfg, tmp, timeout=120) as url:
        yield Setup(url, tmp / "portico.yaml", routers, env)


def ask(s: Setup, model: str, prompt: str) -> tuple[str, str]:
    """(deployment that answered, request id)."""
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=MASTER, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}])
    raw.parse()
    return raw.headers.get("x-portico-model", ""), raw.headers["x-request-id"]


def feedback(s: Setup, **body: object) -> None:
    r = httpx.post(s.url + "/v1/feedback", json=body, headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
    assert r.status_code == 200, r.text


def trace(s: Setup, rid: str) -> dict:
    for _ in range(100):
        r = httpx.get(f"{s.url}/admin/requests/{rid}", headers={"authorization": f"Bearer {MASTER}"}, timeout=10)
        if r.status_code == 200:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"no trace for {rid}")


def router_note(s: Setup, rid: str) -> dict:
    (root,) = trace(s, rid)["spans"]
    (span,) = [c for c in root["children"] if c["name"] == "route_preference"]
    p = "portico.route_preference."
    return {k[len(p) :]: v for k, v in span["attributes"].items() if k.startswith(p)}


def serve_and_judge(s: Setup, app: str, n: int, metric: str, backwards: bool = True) -> list[str]:
    """n hard and n easy prompts through ``app``; feedback: the big model is right on maths and wrong on chit-chat
    (it over-answers), the small one the other way round. Returns the request ids."""
    rids = []
    for i in range(n):
        for prompt, is_hard in ((hard(i), True), (easy(i), False)):
            dep, rid = ask(s, app, prompt)
            big = dep == "big-dep"
            assert big != is_hard or not backwards  # the backwards router: maths to small, chit-chat to big
            feedback(s, request_id=rid, metric=metric, value=big == is_hard)
            rids.append(rid)
    return rids


def judge_pairs(s: Setup, start: int, n: int, metric: str) -> None:
    """The same prompt asked of each model directly, judged pairwise: the big model wins maths, the small one
    chit-chat. (Labels of one routed model alone all agree here, since the backwards router sends each kind of
    prompt to one model; the pairwise ones are what the shadow gate can rank on.)"""
    for i in range(start, start + n):
        for prompt, big_wins in ((hard(i), True), (easy(i), False)):
            _, a = ask(s, "big", prompt)
            _, b = ask(s, "small", prompt)
            feedback(s, pair=[a, b], winner=a if big_wins else b, metric=metric)
    trace(s, b)  # the last request's trace is stored


def cli(s: Setup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "portico"), "router", *args, "-c", str(s.config)], env=s.env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def wait_for_version(s: Setup, app: str, prompt: str, version: int) -> tuple[str, dict]:
    deadline = time.monotonic() + 60
    while True:
        dep, rid = ask(s, app, prompt)
        note = router_note(s, rid)
        if note["router"].endswith(f"/v{version}") or time.monotonic() > deadline:
            return dep, note
        time.sleep(0.3)


def test_feedback_trains_gates_promotes_and_the_server_follows(setup: Setup) -> None:
    s = setup
    rids = serve_and_judge(s, "routed", 60, "correct")
    note = router_note(s, rids[0])
    assert note["router"] == "demo/v1" and note["router_pair"] == ["big", "small"]
    judge_pairs(s, 100, 20, "correct")

    done = cli(s, "train", "--from-feedback", "--name", "demo", "--holdout", "0.3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "120 boolean, 40 pairwise" in done.stdout and "promoted: v2 now serves" in done.stdout, done.stdout
    manifest = json.loads((s.routers / "demo" / "manifest.json").read_text())
    assert manifest["current"] == 2
    gate = manifest["gates"][-1]
    assert gate["candidate"] == 2 and gate["promoted"] and gate["gate"]["candidate_auc"] > gate["gate"]["serving_auc"]
    assert gate["gate"]["p_value"] < 0.05 and gate["gate"]["holdout"] >= 30

    # The running server picks the promoted version up without a restart: maths now goes to the big model.
    dep, note = wait_for_version(s, "routed", hard(500), 2)
    assert note["router"] == "demo/v2" and note["decision"] == "strong" and dep == "big-dep"
    dep, _ = ask(s, "routed", easy(500))
    assert dep == "small-dep"

    listed = cli(s, "versions", "--name", "demo")
    assert listed.returncode == 0 and "v2" in listed.stdout and "feedback" in listed.stdout, listed.stdout

    # Retraining on the same feedback: no better than what serves, so the gate keeps v2 (v3 is kept for the record).
    again = cli(s, "train", "--from-feedback", "--name", "demo", "--holdout", "0.3")
    assert again.returncode == 0 and "kept v2" in again.stdout, again.stdout
    assert json.loads((s.routers / "demo" / "manifest.json").read_text())["current"] == 2

    back = cli(s, "rollback", "--name", "demo")
    assert back.returncode == 0 and "v1 serves" in back.stdout, back.stdout
    dep, note = wait_for_version(s, "routed", hard(501), 1)
    assert note["router"] == "demo/v1" and dep == "small-dep"
    assert cli(s, "promote", "2", "--name", "demo").returncode == 0
    assert wait_for_version(s, "routed", hard(502), 2)[0] == "big-dep"


def test_bad_cli_input_fails_cleanly(setup: Setup) -> None:
    r = cli(setup, "promote", "9", "--name", "demo")
    assert r.returncode == 2 and "no version 9" in r.stderr
    r = cli(setup, "train", "--from-feedback", "--name", "absent", "--metric", "correct")
    assert r.returncode == 2 and "no trained router 'absent'" in r.stderr


def test_the_server_retrains_by_itself_every_n_labels(setup: Setup) -> None:
    s = setup
    # 40 pairwise labels, then routed requests with boolean labels: past 100 the server retrains in the background.
    judge_pairs(s, 200, 20, "solved")
    serve_and_judge(s, "self-taught", 40, "solved", backwards=False)
    path = s.routers / "auto" / "manifest.json"
    deadline = time.monotonic() + 240
    manifest: dict = {}
    while time.monotonic() < deadline:
        ask(s, "self-taught", easy(700))  # requests poke the schedule; the retrain runs in the background
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            manifest = json.loads(path.read_text())
            if manifest.get("current", 1) > 1:
                break
        time.sleep(1)
    assert manifest.get("current", 1) > 1, manifest
    assert manifest["flywheel"]["feedback_rows"] >= 100 and manifest["gates"][-1]["promoted"], manifest["gates"]
    version = manifest["current"]
    dep, note = wait_for_version(s, "self-taught", hard(600), version)
    assert note["router"] == f"auto/v{version}" and dep == "big-dep"
