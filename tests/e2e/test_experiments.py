"""Experiments end to end: a real server splits an application's traffic between variant applications (sticky by
user), records the variant on each request, reports per-variant feedback with CIs, and a bandit moves traffic
toward the variant with better boolean feedback."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support import portico_server

MASTER = "sk-master-experiments"


@pytest.fixture(scope="module")
def server(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("experiments")
    oai = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "sk-test"}
    app = lambda name, text, version: {"name": name, "model": "oai", "version": version,  # noqa: E731
                                       "steps": [{"use": "system_prompt", "text": text}]}  # fmt: skip
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "storage": {"usage_flush_seconds": 0.2},
        "metrics": [{"name": "helpful", "type": "boolean"}, {"name": "score", "type": "float", "min": 0, "max": 5}],
        "models": [{"name": "oai", "deployments": [oai]}],
        "applications": [app("helper", "Be kind.", "1"), app("helper-b", "Be terse.", "2"),
                         app("bot", "A", "1"), app("bot-a", "A", "1"), app("bot-b", "B", "1")],
        "experiments": [
            {"name": "prompt-ab", "application": "helper", "sticky": "user",
             "variants": [{"name": "control", "application": "helper", "weight": 3},
                          {"name": "terse", "application": "helper-b", "weight": 1}]},
            {"name": "bandit", "application": "bot", "sticky": "none",
             "bandit": {"metric": "helpful", "refresh_seconds": 0.2, "min_share": 0.05},
             "variants": [{"name": "a", "application": "bot-a"}, {"name": "b", "application": "bot-b"}]},
        ],
    }  # fmt: skip
    with portico_server(cfg, tmp) as url:
        yield url


def _ask(client: httpx.Client, model: str, user: str | None = None) -> tuple[str, str]:
    body: dict = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if user:
        body["user"] = user
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"], r.headers["x-portico-variant"]


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"authorization": f"Bearer {MASTER}"}, timeout=30) as c:
        yield c


def test_split_is_sticky_by_user_and_follows_the_weights(client: httpx.Client) -> None:
    assert len({_ask(client, "helper", "u-sticky")[1] for _ in range(8)}) == 1
    seen = Counter(_ask(client, "helper", f"user-{i}")[1] for i in range(160))
    share = seen["prompt-ab:control"] / 160
    assert set(seen) == {"prompt-ab:control", "prompt-ab:terse"} and 0.62 < share < 0.88  # weight 3:1 → 0.75


def test_variant_is_recorded_on_the_request(client: httpx.Client) -> None:
    for i in range(40):
        rid, variant = _ask(client, "helper", f"rec-{i}")
        if variant == "prompt-ab:terse":
            break
    trace = client.get(f"/admin/requests/{rid}").json()
    assert trace["variant"] == "prompt-ab:terse" and trace["application"] == "helper-b" and trace["version"] == "2"
    assert any(m.get("content") == "Be terse." for m in trace["input"])  # the variant's pipeline ran


def test_per_variant_feedback_with_confidence_intervals(client: httpx.Client) -> None:
    given = Counter()
    for i in range(60):
        rid, variant = _ask(client, "helper", f"fb-{i}")
        good = variant.endswith("terse") or i % 2 == 0  # terse: always helpful; control: half the time
        assert (
            client.post("/v1/feedback", json={"request_id": rid, "metric": "helpful", "value": good}).status_code == 200
        )
        assert (
            client.post(
                "/v1/feedback", json={"request_id": rid, "metric": "score", "value": 4 if good else 1}
            ).status_code
            == 200
        )
        given[variant] += 1
    exp = next(e for e in client.get("/admin/experiments").json()["data"] if e["name"] == "prompt-ab")
    v = {x["name"]: x for x in exp["variants"]}
    assert (
        v["terse"]["metrics"]["helpful"]["mean"] == 1.0
        and v["terse"]["metrics"]["helpful"]["n"] == given["prompt-ab:terse"]
    )
    lo, hi = v["control"]["metrics"]["helpful"]["ci"]
    assert lo < v["control"]["metrics"]["helpful"]["mean"] < hi and hi - lo < 0.5
    assert v["control"]["requests"] >= given["prompt-ab:control"]
    kinds = {c["metric"]: c for c in exp["comparisons"]}
    assert kinds["helpful"]["diff"] > 0 and 0 <= kinds["helpful"]["p_value"] < 0.05
    assert "p_value" in kinds["score"]


def test_bandit_moves_traffic_to_the_better_variant(client: httpx.Client) -> None:
    for _ in range(40):
        rid, variant = _ask(client, "bot")
        good = variant == "bandit:b"
        client.post("/v1/feedback", json={"request_id": rid, "metric": "helpful", "value": good})
    deadline = time.monotonic() + 20
    while True:  # a request past refresh_seconds starts a background refresh; the next ones use its shares
        time.sleep(0.3)
        _ask(client, "bot")
        exp = next(e for e in client.get("/admin/experiments").json()["data"] if e["name"] == "bandit")
        shares = {x["name"]: x["share"] for x in exp["variants"]}
        if shares["b"] > 0.9 or time.monotonic() > deadline:
            break
    assert shares["b"] > 0.9 and shares["a"] >= 0.05  # the floor keeps exploring
    seen = Counter(_ask(client, "bot")[1] for _ in range(60))
    assert seen["bandit:b"] > 45
