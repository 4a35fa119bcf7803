"""Cacheability end to end: a real Portico in front of llm-katan. A time-sensitive question no rule matches is not
cached (the classifier says so, and the trace says why); a general one is; an application that turns the
classifier off caches both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from portico.cache.cacheability import compile_patterns
from tests.support import portico_server

MASTER = "mk-" + "q" * 40
AUTH = {"authorization": f"Bearer {MASTER}"}
TIME_SENSITIVE = "did the Warriors win"
GENERAL = "what is the chemical symbol for gold"


@pytest.fixture(scope="module")
def url(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("cacheability")
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                                  "api_key": "sk"}]}],
        "applications": [{"name": "rules-only", "model": "m", "steps": [{"use": "cache", "skip_classifier": False}]}],
    }  # fmt: skip
    with portico_server(cfg, tmp) as u:
        yield u


def ask(url: str, model: str, prompt: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r


def cache_note(url: str, request_id: str) -> dict:
    for _ in range(50):  # traces are written after the response
        r = httpx.get(f"{url}/admin/requests/{request_id}", headers=AUTH, timeout=10)
        if r.status_code == 200:
            (root,) = r.json()["spans"]
            (span,) = [s for s in root["children"] if s["name"] == "cache"]
            return span["attributes"]
        time.sleep(0.1)
    raise AssertionError(f"no trace for {request_id}")


def test_a_time_sensitive_question_no_rule_matches_is_not_cached(url: str) -> None:
    assert compile_patterns(None).search(TIME_SENSITIVE) is None  # only the classifier can catch it
    first, again = ask(url, "m", TIME_SENSITIVE), ask(url, "m", TIME_SENSITIVE)
    assert [first.headers["x-portico-cache"], again.headers["x-portico-cache"]] == ["bypass", "bypass"]
    note = cache_note(url, again.headers["x-request-id"])
    assert note["portico.cache.result"] == "bypass"
    assert note["portico.cache.reason"].startswith("classifier: user-specific or time-sensitive (p=")


def test_a_general_question_is_cached(url: str) -> None:
    first, again = ask(url, "m", GENERAL), ask(url, "m", GENERAL)
    assert [first.headers["x-portico-cache"], again.headers["x-portico-cache"]] == ["miss", "hit"]
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]


def test_an_application_can_turn_the_classifier_off(url: str) -> None:
    first, again = ask(url, "rules-only", TIME_SENSITIVE), ask(url, "rules-only", TIME_SENSITIVE)
    assert [first.headers["x-portico-cache"], again.headers["x-portico-cache"]] == ["miss", "hit"]
