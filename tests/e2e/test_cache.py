"""The exact cache end to end: two Portico processes sharing one real Redis cache, llm-katan upstream, the
openai SDK as the client. llm-katan's echo answer carries the time of the call, so a replayed answer is told
apart from a fresh one by its text."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis

from tests.support import portico_server

MASTER = "mk-" + "c" * 40
REDIS_DB = 12


@pytest.fixture(scope="module")
def pair(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    r.ping()  # fail loudly: make test guarantees Redis
    r.flushdb()
    tmp = tmp_path_factory.mktemp("cache")
    cfg = {
        "state_dir": str(tmp / "state"),
        "state": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "auth": {"master_key": MASTER},
        "cache": {"backend": "redis", "ttl_seconds": 60},
        "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                                  "api_key": "sk", "price": {"input": 1.0, "output": 2.0}}]},
                   {"name": "emb", "type": "embedding", "deployments": [{"provider": "local"}]}],
        "applications": [{"name": "faq", "model": "m", "steps": [{"use": "semantic_cache", "min_similarity": 0.9}]},
                         # the semantic cache shared through Redis (the global state's server by default)
                         {"name": "faq-shared", "model": "m",
                          "steps": [{"use": "semantic_cache", "min_similarity": 0.9, "store": "redis"}]}],
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(portico_server(cfg, tmp, log=f"portico{i}.log")) for i in range(2)]
    r.flushdb()


def sdk(url: str, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def ask(url: str, prompt: str, key: str = MASTER, **kw: object) -> tuple[str, str, str]:
    raw = sdk(url, key).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": prompt}], temperature=0, **kw
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-portico-cache"], raw.headers["x-request-id"]


def new_key(url: str, name: str) -> str:
    r = httpx.post(f"{url}/admin/keys", json={"name": name}, headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_repeat_is_a_hit_on_either_worker(pair: list[str]) -> None:
    a, b = pair
    first, h1, _ = ask(a, "name three rivers")
    time.sleep(1.1)  # a fresh echo would now carry a different time
    again, h2, rid = ask(b, "name three rivers")  # the other process, through Redis
    assert (h1, h2) == ("miss", "hit") and again == first
    trace = httpx.get(f"{b}/admin/requests/{rid}", headers={"authorization": f"Bearer {MASTER}"}).json()
    (root,) = trace["spans"]
    (cache,) = [s for s in root["children"] if s["name"] == "cache"]
    assert cache["attributes"]["portico.cache.result"] == "hit"
    assert trace["cost_usd"] == 0 and "generate" not in [s["name"] for s in root["children"]]


def test_no_answer_crosses_keys(pair: list[str]) -> None:
    a, _ = pair
    alice, bob = new_key(a, "alice"), new_key(a, "bob")
    ta, ha, _ = ask(a, "what is our refund policy", alice)
    time.sleep(1.1)
    tb, hb, _ = ask(a, "what is our refund policy", bob)
    assert (ha, hb) == ("miss", "miss") and ta != tb
    assert ask(a, "what is our refund policy", alice)[:2] == (ta, "hit")


def test_a_cached_answer_replays_as_a_stream(pair: list[str]) -> None:
    a, _ = pair
    text, _, _ = ask(a, "spell a long word")
    with sdk(a).chat.completions.with_streaming_response.create(
        model="m", messages=[{"role": "user", "content": "spell a long word"}], temperature=0, stream=True
    ) as resp:
        assert resp.headers["x-portico-cache"] == "hit"
        streamed = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert streamed == text


def test_no_store_and_sampled_requests_bypass(pair: list[str]) -> None:
    a, _ = pair
    ask(a, "count to three")
    _, h, _ = ask(a, "count to three", extra_headers={"Cache-Control": "no-store"})
    assert h == "bypass"
    raw = sdk(a).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "count to three"}], temperature=0.8
    )
    assert raw.headers["x-portico-cache"] == "bypass"


def test_metrics_count_lookups(pair: list[str]) -> None:
    a, _ = pair
    ask(a, "metrics please")
    ask(a, "metrics please")
    body = httpx.get(f"{a}/metrics", headers={"authorization": f"Bearer {MASTER}"}).text
    hits = [ln for ln in body.splitlines() if ln.startswith('portico_cache_lookups_total{cache="exact",result="hit"}')]
    assert hits and float(hits[0].split()[-1]) >= 1


def test_bad_cache_extension_is_a_400(pair: list[str]) -> None:
    a, _ = pair
    with pytest.raises(openai.BadRequestError) as e:
        ask(a, "x", extra_body={"portico": {"cache": {"mode": "forever"}}})
    assert e.value.body["param"] == "portico.cache.mode"  # type: ignore[index]


def test_semantic_cache_hits_a_paraphrase_and_misses_a_different_question(pair: list[str]) -> None:
    a, _ = pair

    def faq(q: str) -> tuple[str, str]:
        raw = sdk(a).chat.completions.with_raw_response.create(
            model="faq", messages=[{"role": "user", "content": q}], temperature=0
        )
        return raw.parse().choices[0].message.content or "", raw.headers["x-portico-cache"]

    first, h1 = faq("How many legs does a spider have?")
    time.sleep(1.1)
    para, h2 = faq("How many legs do spiders have?")
    other, h3 = faq("How many eyes does a spider have?")
    assert (h1, h2, h3) == ("miss", "semantic-hit", "miss")
    assert para == first and other != first


def test_shared_semantic_cache_answers_a_paraphrase_on_the_other_worker(pair: list[str]) -> None:
    """store: redis — the answer one worker stored is a semantic hit on the other; another key never gets it."""
    a, b = pair

    def faq(url: str, q: str, key: str = MASTER) -> tuple[str, str]:
        raw = sdk(url, key).chat.completions.with_raw_response.create(
            model="faq-shared", messages=[{"role": "user", "content": q}], temperature=0
        )
        return raw.parse().choices[0].message.content or "", raw.headers["x-portico-cache"]

    first, h1 = faq(a, "What is the boiling point of water at sea level?")
    time.sleep(1.1)
    para, h2 = faq(b, "At sea level, what's the boiling point of water?")
    assert (h1, h2) == ("miss", "semantic-hit") and para == first
    other, h3 = faq(b, "At sea level, what's the boiling point of water?", new_key(a, "carol"))
    assert h3 == "miss" and other != first
