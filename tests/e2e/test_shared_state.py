"""Distributed mode: two Portico processes sharing Redis (limits, revocation) and one database (keys, usage),
against the real Redis on 127.0.0.1:6379 (``make test`` starts it if it is down)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
import yaml

from tests.support import VENV_BIN, free_port, running

MASTER = "mk-" + "s" * 40
REDIS_DB = 13


@pytest.fixture(scope="module")
def pair(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    r.ping()  # fail loudly: make test guarantees Redis
    r.flushdb()
    tmp = tmp_path_factory.mktemp("shared")
    cfg = {
        "state_dir": str(tmp / "state"),
        "state": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "auth": {"master_key": MASTER},
        "models": [
            {
                "name": "m",
                "deployments": [
                    {
                        "provider": "openai",
                        "model": "echo",
                        "base_url": f"{katan}/v1",
                        "api_key": "sk",
                        "price": {"input": 1000.0, "output": 2000.0},
                    }
                ],
            }
        ],
    }
    path = tmp / "portico.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    cmds = [[str(VENV_BIN / "portico"), "serve", "--config", str(path), "--port", str(p)] for p in ports]
    with running(cmds[0], f"{urls[0]}/readyz", tmp / "a.log"), running(cmds[1], f"{urls[1]}/readyz", tmp / "b.log"):
        yield urls
    r.flushdb()


def _key(url: str, **fields) -> tuple[str, str]:
    r = httpx.post(url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"},
                   json={"name": f"k-{uuid.uuid4().hex[:6]}", **fields})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def _chat(url: str, key: str) -> int:
    r = httpx.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)  # fmt: skip
    return r.status_code


def test_rpm_limit_is_shared_by_both_processes(pair: list[str]) -> None:
    _, key = _key(pair[0], rpm=6)
    codes = [_chat(url, key) for url in itertools.islice(itertools.cycle(pair), 14)]
    assert codes.count(200) == 6 and codes.count(429) == 8


def test_key_created_on_one_process_works_on_the_other(pair: list[str]) -> None:
    _, key = _key(pair[0])
    assert _chat(pair[1], key) == 200


def test_revocation_on_one_process_applies_on_the_other_at_once(pair: list[str]) -> None:
    key_id, key = _key(pair[0])
    assert _chat(pair[1], key) == 200  # process B has the key cached now
    r = httpx.delete(pair[0] + f"/admin/keys/{key_id}", headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200
    assert _chat(pair[1], key) == 401


def test_budget_is_shared(pair: list[str]) -> None:
    # One echo call costs ~0.02 USD at this price: two calls (one on each process) spend the budget, and
    # both processes then refuse the key.
    _, key = _key(pair[0], budget_usd=0.03, budget_period="month")
    assert [_chat(u, key) for u in pair] == [200, 200]
    assert [_chat(u, key) for u in pair] == [429, 429]
