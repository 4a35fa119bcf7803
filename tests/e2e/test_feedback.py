"""Feedback end to end: a real ``portico serve`` with the master key, two virtual keys and llm-katan upstream.

Covers the configured metric types, ownership (another key's request is a 404 like an unknown one; the master key
may judge anything), idempotency by feedback_id, pairwise judgements, and where feedback shows up: the trace,
``/admin/stats`` and ``/metrics``. Sessions come from the OpenAI SDK's ``metadata`` / ``user``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import portico_server

MASTER = "sk-master-feedback-test"
METRICS = [
    {"name": "helpful", "type": "boolean"},
    {"name": "score", "type": "float", "min": 0, "max": 5},
    {"name": "label", "type": "category", "categories": ["good", "off_topic", "wrong"]},
    {"name": "note", "type": "comment"},
    {"name": "fix", "type": "demonstration"},
]


@pytest.fixture(scope="module")
def server(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("feedback")
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "metrics": METRICS,
        "storage": {"usage_flush_seconds": 0.2},
        "models": [{"name": "oai", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                                     "api_key": "sk-test"}]}],
        "applications": [{"name": "helper", "model": "oai", "version": "7",
                          "steps": [{"use": "system_prompt", "text": "Be terse."}]}],
    }  # fmt: skip
    with portico_server(cfg, tmp) as url:
        yield url


def _admin(url: str, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, url + path, headers={"authorization": f"Bearer {MASTER}"}, timeout=30, **kw)


@pytest.fixture(scope="module")
def keys(server: str) -> dict[str, str]:
    out = {}
    for name in ("alice", "bob"):
        r = _admin(server, "POST", "/admin/keys", json={"name": f"fb-{name}"})
        assert r.status_code == 201, r.text
        out[name] = r.json()["key"]
    return out


def _ask(url: str, key: str, text: str, **extra: object) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="helper", messages=[{"role": "user", "content": text}], **extra
    )
    raw.parse()
    return raw.headers["x-request-id"]


def _fb(url: str, key: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_every_metric_type_is_stored_and_shown_on_the_trace(server: str, keys: dict[str, str]) -> None:
    rid = _ask(server, keys["alice"], "what is the capital of France?", user="u-17",
               metadata={"session_id": "conv-1"})  # fmt: skip
    values = {"helpful": True, "score": 4.5, "label": "good", "note": "short and right",
              "fix": {"role": "assistant", "content": "Paris."}}  # fmt: skip
    for metric, value in values.items():
        r = _fb(server, keys["alice"], request_id=rid, metric=metric, value=value)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "feedback" and body["request_id"] == rid and body["duplicate"] is False
        assert body["application"] == "helper" and body["version"] == "7" and body["key_name"] == "fb-alice"
        assert body["session"] == "conv-1" and body["user"] == "u-17"
    trace = _admin(server, "GET", f"/admin/requests/{rid}").json()
    assert trace["session"] == "conv-1" and trace["user"] == "u-17" and trace["version"] == "7"
    got = {f["metric"]: f["value"] for f in trace["feedback"]}
    assert got == {**values, "fix": {"role": "assistant", "content": "Paris."}}


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"metric": "helpful", "value": "yes"}, "value", 400),
        ({"metric": "helpful", "value": 1}, "value", 400),
        ({"metric": "score", "value": 7}, "value", 400),
        ({"metric": "score", "value": True}, "value", 400),
        ({"metric": "label", "value": "great"}, "value", 400),
        ({"metric": "note", "value": ""}, "value", 400),
        ({"metric": "fix", "value": {"role": "assistant"}}, "value", 400),
        ({"metric": "helpful"}, "value", 400),
        ({"metric": "stars", "value": 3}, "metric", 400),
        ({"metric": "helpful", "value": True, "colour": "red"}, "colour", 400),
    ],
)
def test_wrong_values_are_400_naming_the_param(server: str, keys: dict[str, str], body: dict, param: str,
                                               status: int) -> None:  # fmt: skip
    rid = _ask(server, keys["alice"], "validate me")
    r = _fb(server, keys["alice"], request_id=rid, **body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err


def test_only_the_requesting_key_or_the_master_key_may_judge(server: str, keys: dict[str, str]) -> None:
    rid = _ask(server, keys["alice"], "whose request is this?")
    theirs = _fb(server, keys["bob"], request_id=rid, metric="helpful", value=False)
    unknown = _fb(server, keys["bob"], request_id="no-such-request", metric="helpful", value=False)
    assert theirs.status_code == unknown.status_code == 404
    # The same answer for "exists but not yours" and "does not exist": nothing to probe.
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "request_not_found"
    assert _fb(server, "sk-not-a-key", request_id=rid, metric="helpful", value=True).status_code == 401
    assert _fb(server, MASTER, request_id=rid, metric="helpful", value=True).status_code == 200
    assert _fb(server, keys["alice"], request_id=rid, metric="helpful", value=True).status_code == 200


def test_feedback_id_makes_a_submission_idempotent(server: str, keys: dict[str, str]) -> None:
    rid = _ask(server, keys["alice"], "idempotent?")
    first = _fb(server, keys["alice"], request_id=rid, metric="score", value=3, feedback_id="fb-idem-1")
    again = _fb(server, keys["alice"], request_id=rid, metric="score", value=3, feedback_id="fb-idem-1")
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"] == "fb-idem-1"
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    clash = _fb(server, keys["alice"], request_id=rid, metric="score", value=1, feedback_id="fb-idem-1")
    assert clash.status_code == 409 and clash.json()["error"]["param"] == "feedback_id"
    trace = _admin(server, "GET", f"/admin/requests/{rid}").json()
    assert [f["value"] for f in trace["feedback"] if f["metric"] == "score"] == [3]


def test_pairwise_judgements(server: str, keys: dict[str, str]) -> None:
    a = _ask(server, keys["alice"], "pair one")
    b = _ask(server, keys["alice"], "pair two")
    r = _fb(server, keys["alice"], metric="helpful", pair=[a, b], winner=b)
    assert r.status_code == 200 and r.json()["winner"] == b and r.json()["pair"] == [a, b]
    assert _fb(server, keys["alice"], metric="helpful", pair=[a, b], winner="tie").status_code == 200
    assert _fb(server, keys["alice"], metric="helpful", pair=[a, b], winner="c").json()["error"]["param"] == "winner"
    assert _fb(server, keys["alice"], metric="helpful", pair=[a, a], winner=a).status_code == 400
    assert _fb(server, keys["alice"], metric="note", pair=[a, b], winner=a).json()["error"]["param"] == "metric"
    c = _ask(server, keys["bob"], "bob's")
    assert _fb(server, keys["alice"], metric="helpful", pair=[a, c], winner=a).status_code == 404
    both = _fb(server, keys["alice"], metric="helpful", request_id=a, pair=[a, b], winner=a)
    assert both.status_code == 400
    # The second request's trace lists the judgement too.
    second = _admin(server, "GET", f"/admin/requests/{b}").json()
    assert {f["winner"] for f in second["feedback"] if f["kind"] == "pairwise"} == {b, "tie"}


def test_feedback_is_aggregated_in_stats_and_metrics(server: str, keys: dict[str, str]) -> None:
    for value in (True, True, False):
        rid = _ask(server, keys["bob"], f"aggregate {value}")
        assert _fb(server, keys["bob"], request_id=rid, metric="helpful", value=value).status_code == 200
        assert _fb(server, keys["bob"], request_id=rid, metric="label", value="wrong").status_code == 200
    stats = _admin(server, "GET", "/admin/stats").json()["feedback"]
    helpful = next(s for s in stats if s["metric"] == "helpful" and s["kind"] == "boolean")
    assert helpful["application"] == "helper" and helpful["version"] == "7" and helpful["model"] == "helper"
    assert helpful["count"] >= 3 and 0 < helpful["mean"] < 1
    label = next(s for s in stats if s["metric"] == "label")
    assert label["categories"]["wrong"] >= 3
    pairs = [s for s in stats if s["kind"] == "pairwise"]
    assert pairs and sum(s.get("wins", 0) for s in pairs) == sum(s.get("losses", 0) for s in pairs)
    text = _admin(server, "GET", "/metrics").text
    assert 'portico_feedback_total{application="helper",metric="helpful",model="helper",value="false",version="7"}' \
        in text  # fmt: skip
    assert 'portico_feedback_value_sum_total{application="helper",metric="score",model="helper",version="7"}' in text
    assert 'value="win"' in text and 'value="loss"' in text
