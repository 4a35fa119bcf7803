"""The scale-out topology, short: nginx → 2 Portico replicas (``--workers 2`` each) → one Redis, one PostgreSQL,
llm-katan upstreams; wrk as the load (``make test`` installs Debian's nginx-light and wrk when missing).
``make bench-scale`` runs the long version with faults and a soak."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.topology import Topology


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    t = Topology(2)
    try:
        t.start()
        yield t
    finally:
        t.close()


def _chat(url: str, key: str, text: str) -> httpx.Response:
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30)


def test_load_through_nginx_reaches_both_replicas_and_every_answer_is_recorded(topo: Topology) -> None:
    key = topo.key(name="load")
    res = topo.wrk(key, 3, connections=8)
    assert res.total > 20 and res.statuses == {200: res.total}, res.raw
    served = {upstream for _, _, _, upstream in topo.access_log()}
    assert {f"127.0.0.1:{r.port}" for r in topo.replicas} <= served
    deadline = time.monotonic() + 10
    while True:  # batched writers: at most a flush interval behind
        stored = {r["request_id"] for r in topo.usage_rows()}
        if set(res.ok_ids) <= stored or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert set(res.ok_ids) <= stored
    # one store: each replica's /admin/stats counts both replicas' requests
    for r in topo.replicas:
        stats = topo.admin("GET", "/admin/stats", r.url, params={"group_by": "key"}).json()
        (group,) = [g for g in stats["groups"] if g["name"] == "load"]
        assert group["requests"] >= len(res.ok_ids)


def test_key_from_one_replica_works_on_the_other_at_once(topo: Topology) -> None:
    a, b = topo.replicas
    key = topo.key(a.url)
    assert _chat(b.url, key, "new key").status_code == 200


def test_rate_limit_and_exact_cache_are_shared(topo: Topology) -> None:
    a, b = topo.replicas
    key = topo.key(rpm=10)
    codes = [_chat((a, b)[i % 2].url, key, f"limit {i}").status_code for i in range(16)]
    assert codes.count(200) == 10 and codes.count(429) == 6, codes
    key = topo.key()
    first, second = _chat(a.url, key, "shared cache"), _chat(b.url, key, "shared cache")
    assert first.headers["x-portico-cache"] == "miss" and second.headers["x-portico-cache"] == "hit"
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]


def test_sdk_through_nginx_streams(topo: Topology) -> None:
    client = openai.OpenAI(base_url=f"{topo.url}/v1", api_key=topo.key(), max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c d"}],
                                                 stream=True))  # fmt: skip
    assert chunks and chunks[-1].choices[0].finish_reason is not None


def test_restart_with_sigterm_under_load_fails_nothing_and_loses_no_row(topo: Topology) -> None:
    """A deploy: SIGTERM to one replica's supervisor (as an orchestrator sends it) while wrk runs through nginx,
    then start it again. New connections go to the other replica; those in flight finish."""
    key = topo.key(name="restart")
    victim = topo.replicas[0]
    h = topo.wrk_start(key, 3600, connections=8)
    time.sleep(2)
    assert victim.sigterm_and_wait() == 0
    victim.start()
    time.sleep(2)
    res = topo.wrk_stop(h, interrupt=True)
    assert res.total > 50 and res.failed == 0 and set(res.statuses) == {200}, res.statuses
    deadline = time.monotonic() + 15
    while True:
        missing = set(res.ok_ids) - {r["request_id"] for r in topo.usage_rows()}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing
