"""Reliability end to end: real llm-katan upstreams simulating failures, a real Portico process, the openai SDK.

llm-katan's ``/stats`` counts every request it received, failures included (it is fed by its dashboard
middleware, so these katans run with the dashboard on), which tells exactly which deployment Portico touched.
Portico's ``x-portico-attempts`` header says how many tries a request took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.support import VENV_BIN, free_port, katan_cmd, running

COOLDOWN = 2.0  # the breaker cooldown of the models that test it
FAST_RETRIES = {"max": 2, "backoff": 0.02, "backoff_max": 0.2}
MSG = [{"role": "user", "content": "hello"}]


def counted_katan_cmd(port: int, tmp: Path, *extra: str) -> list[str]:
    """``katan_cmd`` with the dashboard middleware on: it is what feeds ``/stats`` (every request, errors too)."""
    return [a for a in katan_cmd(port, tmp, *extra) if a != "--disable-dashboard"]


@dataclass
class Katans:
    good: str  # healthy fallback
    flaky: str  # 50% of requests fail with 500
    limited: str  # 429 after 3 requests
    broken: str  # 504 after 2 requests
    spread_a: str
    spread_b: str
    revived: str  # nothing listens here until a test starts a katan on it
    tmp: Path


@pytest.fixture(scope="module")
def katans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Katans]:
    tmp = tmp_path_factory.mktemp("rel-katans")
    specs = {
        "good": (),
        "flaky": ("--error-rate", "0.5"),
        "limited": ("--rate-limit-after", "3"),
        "broken": ("--timeout-after", "2"),
        # Slow enough that concurrent requests overlap, so in-flight counts matter.
        "spread_a": ("--latency-ms", "300", "--max-concurrent", "64"),
        "spread_b": ("--latency-ms", "300", "--max-concurrent", "64"),
    }
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name, extra in specs.items():
            port = free_port()
            cmd = counted_katan_cmd(port, tmp, *extra)
            stack.enter_context(running(cmd, f"http://127.0.0.1:{port}/health", tmp / f"{name}.log"))
            urls[name] = f"http://127.0.0.1:{port}"
        yield Katans(**urls, revived=f"http://127.0.0.1:{free_port()}", tmp=tmp)


def _dep(name: str, base: str, **extra: object) -> dict:
    key = {"api_key": "sk-test"}
    return {"provider": "openai", "model": "echo", "base_url": f"{base}/v1", **key, "name": name, **extra}


def reliability_config(k: Katans, state_dir: str) -> dict:
    breaker = {"failures": 2, "cooldown": COOLDOWN}
    return {
        "state_dir": state_dir,
        "models": [
            {"name": "good", "deployments": [_dep("good", k.good)]},
            {"name": "flaky", "deployments": [_dep("flaky", k.flaky)], "fallbacks": ["good"], "retries": FAST_RETRIES},
            {
                "name": "limited",
                "deployments": [_dep("limited", k.limited)],
                "fallbacks": ["good"],
                "retries": FAST_RETRIES,
                "circuit_breaker": {"failures": 1000},  # isolate retries from the breaker here
            },
            {
                "name": "brittle",
                "deployments": [_dep("broken", k.broken)],
                "fallbacks": ["good"],
                "retries": {"max": 0},
                "circuit_breaker": breaker,
            },
            {
                "name": "revivable",
                "deployments": [_dep("revived", k.revived, timeouts={"connect": 2})],
                "fallbacks": ["good"],
                "retries": {"max": 0},
                "circuit_breaker": breaker,
            },
            {
                "name": "spread-weighted",
                "deployments": [_dep("spread-a", k.spread_a), _dep("spread-b", k.spread_b)],
                "routing": {"strategy": "weighted"},
            },
            {
                "name": "spread-least",
                "deployments": [_dep("spread-a", k.spread_a), _dep("spread-b", k.spread_b)],
                "routing": {"strategy": "least_inflight"},
            },
        ],
    }


@pytest.fixture(scope="module")
def server(katans: Katans) -> Iterator[str]:
    tmp = katans.tmp
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = tmp / "portico.yaml"
    cfg.write_text(yaml.safe_dump(reliability_config(katans, str(tmp / "state"))))
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(cfg), "--port", str(port)]
    with running(cmd, f"{url}/readyz", tmp / "portico.log", timeout=60):
        yield url


@pytest.fixture
def sdk(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=30)


def seen(katan: str) -> int:
    """Requests this katan received (answered or failed)."""
    return httpx.get(f"{katan}/stats", timeout=5).json()["total"]


def ask(sdk: openai.OpenAI, model: str) -> tuple[str, int]:
    """One chat call: (deployment that answered, attempts it took)."""
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-portico-model"], int(raw.headers["x-portico-attempts"])


# ---- (a) a primary failing half the time, with a fallback --------------------------------------------------


def test_flaky_primary_every_request_succeeds(sdk: openai.OpenAI, katans: Katans) -> None:
    answers = [ask(sdk, "flaky") for _ in range(40)]  # each one answered (ask asserts it)
    attempts = sum(n for _, n in answers)
    assert attempts > 40  # failures happened and were absorbed by retries and the fallback
    # Every try but the fallback's single one went to the flaky katan, and it saw exactly those: nothing is
    # hidden. (Its breaker may open on five 500s in a row; later requests then go straight to the fallback.)
    by_fallback = sum(1 for dep, _ in answers if dep == "good")
    assert seen(katans.flaky) == attempts - by_fallback


def test_flaky_primary_streams_succeed(sdk: openai.OpenAI) -> None:
    for _ in range(10):
        chunks = list(sdk.chat.completions.create(model="flaky", messages=MSG, stream=True))
        assert "hello" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ---- (b) a primary that starts rate limiting ---------------------------------------------------------------


def test_rate_limited_primary_retries_then_falls_back(sdk: openai.OpenAI, katans: Katans) -> None:
    assert [ask(sdk, "limited") for _ in range(3)] == [("limited", 1)] * 3
    assert seen(katans.limited) == 3
    for i in range(3):
        # 429 three times (the first try and two retries with backoff), then the fallback answers.
        assert ask(sdk, "limited") == ("good", 4)
        assert seen(katans.limited) == 3 + 3 * (i + 1)


# ---- (c) a deployment that starts timing out: the breaker opens, then probes --------------------------------


def test_breaker_opens_skips_the_broken_deployment_and_probes_after_cooldown(
    sdk: openai.OpenAI, katans: Katans
) -> None:
    assert [ask(sdk, "brittle") for _ in range(2)] == [("broken", 1)] * 2
    # katan now answers 504: two failures (each answered by the fallback) open the breaker.
    assert [ask(sdk, "brittle") for _ in range(2)] == [("good", 2)] * 2
    assert seen(katans.broken) == 4
    assert [ask(sdk, "brittle") for _ in range(5)] == [("good", 1)] * 5  # straight to the fallback
    assert seen(katans.broken) == 4  # the broken deployment was not touched
    # After the cooldown, of many concurrent requests exactly one is let through as the half-open probe.
    time.sleep(COOLDOWN + 0.5)
    answers = asyncio.run(_concurrent(sdk.base_url, "brittle", 8))
    assert sorted(answers) == [("good", 1)] * 7 + [("good", 2)]
    assert seen(katans.broken) == 5
    assert ask(sdk, "brittle") == ("good", 1)  # the probe failed: open again, for a full cooldown


def test_breaker_closes_when_the_probe_succeeds(sdk: openai.OpenAI, katans: Katans) -> None:
    # Nothing listens at the deployment yet: connection errors open its breaker.
    assert [ask(sdk, "revivable") for _ in range(2)] == [("good", 2)] * 2
    assert ask(sdk, "revivable") == ("good", 1)
    port = int(katans.revived.rsplit(":", 1)[1])
    with running(counted_katan_cmd(port, katans.tmp), f"{katans.revived}/health", katans.tmp / "revived.log"):
        time.sleep(COOLDOWN + 0.5)
        assert ask(sdk, "revivable") == ("revived", 1)  # the probe succeeded: closed
        assert [ask(sdk, "revivable") for _ in range(3)] == [("revived", 1)] * 3
        assert seen(katans.revived) == 4


async def _concurrent(base_url: object, model: str, n: int) -> list[tuple[str, int]]:
    async with openai.AsyncOpenAI(base_url=str(base_url), api_key="x", max_retries=0, timeout=30) as client:

        async def one() -> tuple[str, int]:
            raw = await client.chat.completions.with_raw_response.create(model=model, messages=MSG)
            return raw.headers["x-portico-model"], int(raw.headers["x-portico-attempts"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


# ---- (d) load spreading ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "at_least"), [("spread-weighted", 5), ("spread-least", 12)])
def test_strategies_spread_load_over_both_deployments(
    sdk: openai.OpenAI, katans: Katans, model: str, at_least: int
) -> None:
    """40 concurrent requests. Weighted 1:1 splits them at random (fewer than 5 on one side: p < 1e-6);
    least_inflight sends each to the deployment with fewer calls in flight, so the split is close to even."""
    before = seen(katans.spread_a), seen(katans.spread_b)
    answers = asyncio.run(_concurrent(sdk.base_url, model, 40))
    got_a, got_b = seen(katans.spread_a) - before[0], seen(katans.spread_b) - before[1]
    assert got_a + got_b == 40
    assert min(got_a, got_b) >= at_least, (got_a, got_b)
    assert {dep for dep, _ in answers} == {"spread-a", "spread-b"}
    assert all(n == 1 for _, n in answers)
