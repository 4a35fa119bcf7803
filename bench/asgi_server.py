"""Choose the ASGI server by measurement: uvicorn (uvloop + httptools) vs granian, serving Portico's minimal
pipeline (OpenAI chat → OpenAI-compatible upstream). The upstream is nginx returning a canned completion, so the
numbers are Portico's own overhead. Processes are pinned: Portico on CPU 0, nginx and wrk on CPU 1.
Writes bench/results/asgi_server.md. Needs Debian's nginx-light and wrk (`make bench-asgi` installs them).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gateway import nginx_cmd  # the same canned nginx upstream as the gateway benchmark
from tests.support import VENV_BIN, free_port, running

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = 32

REQUEST = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16})


def wrk(url: str, tmp: Path) -> tuple[float, float, float]:
    lua = tmp / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = {json.dumps(REQUEST)}\n")
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency",
                          "-s", str(lua), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    if "Non-2xx" in out:
        raise RuntimeError("non-2xx responses during the run:\n" + out)

    def pct(p: str) -> float:
        m = re.search(rf"{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return rps, pct("50"), pct("99")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    up_port = free_port()
    cfg = tmp / "bench.yaml"
    cfg.write_text(f"models:\n  - name: bench\n    deployments: [{{provider: openai, model: bench, "
                   f"base_url: 'http://127.0.0.1:{up_port}/v1', api_key: x}}]\nlogging: {{level: WARNING}}\n")
    env_cfg = {**os.environ, "PORTICO_CONFIG": str(cfg)}
    servers = {
        "uvicorn (uvloop, httptools)": lambda p: [str(VENV_BIN / "uvicorn"), "--factory",
                                                  "portico.server.app:app_from_env", "--port", str(p),
                                                  "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                                                  "--log-level", "warning"],
        "granian (asgi, uvloop)": lambda p: [str(VENV_BIN / "granian"), "--interface", "asgi", "--factory",
                                             "--port", str(p), "--loop", "uvloop", "--log-level", "warning",
                                             "--no-ws", "portico.server.app:app_from_env"],
    }
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in servers}
    os.environ.update(env_cfg)
    with running(nginx_cmd(tmp, up_port), f"http://127.0.0.1:{up_port}/health", tmp / "nginx.log"):
        direct = [wrk(f"http://127.0.0.1:{up_port}/v1/chat/completions", tmp) for _ in range(ROUNDS)]
        for _ in range(ROUNDS):
            for name, cmd in servers.items():
                port = free_port()
                with running(["taskset", "-c", "0", *cmd(port)], f"http://127.0.0.1:{port}/readyz",
                             tmp / "server.log"):
                    wrk(f"http://127.0.0.1:{port}/v1/chat/completions", tmp)  # warm-up
                    results[name].append(wrk(f"http://127.0.0.1:{port}/v1/chat/completions", tmp))
    lines = ["# ASGI server for Portico: uvicorn vs granian", "",
             f"POST /v1/chat/completions through the minimal pipeline to an nginx canned upstream; wrk 1 thread, "
             f"{CONNECTIONS} connections, {SECONDS} s per run, {ROUNDS} alternating rounds (medians). Portico pinned "
             "to CPU 0; nginx and wrk share CPU 1.", "",
             "| server | req/s (median) | p50 ms | p99 ms | runs req/s |", "|---|---|---|---|---|"]
    for name, runs in results.items():
        lines.append(f"| {name} | {statistics.median(r[0] for r in runs):.0f} | "
                     f"{statistics.median(r[1] for r in runs):.2f} | {statistics.median(r[2] for r in runs):.2f} | "
                     + ", ".join(f"{r[0]:.0f}" for r in runs) + " |")
    lines.append(f"| (nginx upstream alone, for scale) | {statistics.median(r[0] for r in direct):.0f} | "
                 f"{statistics.median(r[1] for r in direct):.2f} | {statistics.median(r[2] for r in direct):.2f} | |")
    lines += ["", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}, {platform.platform()}, {time.strftime('%Y-%m-%d %H:%M')}", ""]
    out = Path(__file__).parent / "results" / "asgi_server.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
