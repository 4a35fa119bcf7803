"""Exact-cache hit latency end to end: a Portico process (pinned to one core) with an llm-katan upstream, and a
keep-alive HTTP client (pinned to the other) repeating one deterministic chat request that the cache answers."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import VENV_BIN, free_port, katan_cmd, running  # noqa: E402

N = 3000


def exact_hit_latency(n: int = N) -> dict:
    import os

    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})  # the client on core 0, Portico on core 1
    try:
        return _measure(n)
    finally:
        os.sched_setaffinity(0, old)


def _measure(n: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kport, pport = free_port(), free_port()
        katan = f"http://127.0.0.1:{kport}"
        cfg = {"state_dir": str(tmp / "state"), "logging": {"level": "WARNING"},
               "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "echo",
                                                         "base_url": f"{katan}/v1", "api_key": "sk"}]}]}  # fmt: skip
        (tmp / "p.yaml").write_text(yaml.safe_dump(cfg))
        portico = ["taskset", "-c", "1", str(VENV_BIN / "portico"), "serve", "--config", str(tmp / "p.yaml"),
                   "--port", str(pport)]  # fmt: skip
        with running(katan_cmd(kport, tmp), f"{katan}/health", tmp / "katan.log"), \
                running(portico, f"http://127.0.0.1:{pport}/readyz", tmp / "portico.log"):  # fmt: skip
            body = {"model": "m", "temperature": 0, "max_tokens": 64,
                    "messages": [{"role": "system", "content": "You are terse."},
                                 {"role": "user", "content": "What is the capital of France?"}]}  # fmt: skip
            url = f"http://127.0.0.1:{pport}/v1/chat/completions"
            times = []
            with httpx.Client(timeout=10) as client:
                first = client.post(url, json=body)
                assert first.headers["x-portico-cache"] == "miss", first.headers
                for _ in range(200):  # warm-up
                    client.post(url, json=body)
                for _ in range(n):
                    t0 = time.perf_counter()
                    r = client.post(url, json=body)
                    times.append((time.perf_counter() - t0) * 1000)
                    if r.headers.get("x-portico-cache") != "hit":
                        raise RuntimeError(f"expected a hit, got {r.headers.get('x-portico-cache')}")
    a = np.asarray(times)
    return {"n": n, "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


if __name__ == "__main__":
    print(exact_hit_latency())
