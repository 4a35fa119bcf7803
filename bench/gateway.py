"""Gateway overhead: Portico vs the LiteLLM proxy vs a bare aiohttp passthrough (the ceiling), all in front of the same
nginx upstream that answers with a canned OpenAI chat.completion (POST /v1/chat/completions) or a canned SSE stream
(POST /stream/v1/chat/completions). So the numbers are each gateway's own cost.

Pinning: every system under test runs on CPU 0 with one worker; nginx (one worker), wrk (one thread) and this script
(the streaming client) share CPU 1. wrk runs c=4 and c=50 for BENCH_SECONDS (default 10) per system per round,
BENCH_ROUNDS rounds (default 3) with the system order rotated each round; the tables show medians over rounds. The
streaming case runs BENCH_STREAMS (default 200) sequential streams per system per round.

LiteLLM runs from its own venv, bench/.venv-litellm (`make bench-gateway` creates it), never the project's. Writes
bench/results/gateway.md, whose last line is a one-line summary. Portico runs with auth on and every request
under a virtual key with limits and a budget (created through its admin API after each start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import aiohttp
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.gateway_compare import baseline_lines, drop_baseline, workers_lines  # noqa: E402
from tests.support import VENV_BIN, free_port, running  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP_SECONDS = 3
STREAMS = int(os.environ.get("BENCH_STREAMS", "200"))
CONCURRENCIES = (4, 50)
LITELLM_BIN = ROOT / "bench" / ".venv-litellm" / "bin"
RESULTS = ROOT / "bench" / "results" / "gateway.md"
# A git revision to measure beside the current tree in the same run (e.g. the commit before a change that must not
# cost anything): checked out into a temporary worktree and served from the same venv with its own source.
BASELINE = os.environ.get("BENCH_BASELINE", "")
# BENCH_WORKERS=1 adds Portico with shared state on Redis at 1 and 2 workers, both free to use both CPUs (shared
# with nginx and wrk on a 2-core machine): the --workers scaling figure.
WORKERS = os.environ.get("BENCH_WORKERS") == "1"
REDIS_STATE = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15")
SUT_CPU, LOAD_CPU = "0", "1"  # systems under test / nginx, wrk and the streaming client

MODEL, STREAM_MODEL = "bench", "bench-stream"  # the names clients send
# What the upstream claims to be: a model with a known price, so LiteLLM's cost tracking takes its normal path
# (for an unknown model it runs a zero-cost diagnostic on every request instead).
UPSTREAM_MODEL = "gpt-4o-mini"
UPSTREAM_STREAM_PATH = "/stream/v1/chat/completions"  # nginx's canned SSE; /v1/chat/completions is the JSON one
ANSWER = "Hello from the canned upstream."
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": UPSTREAM_MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "logprobs": None,
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
})
REQUEST = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16})
STREAM_REQUEST = json.dumps({"model": STREAM_MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                             "max_tokens": 16, "stream": True})
STREAM_PIECES = ["Hello", " from", " the", " canned", " upstream", ",", " one", " small", " piece", " at", " a",
                 " time", ",", " as", " a", " model", " would", "."]


def sse_body() -> str:
    """A canned OpenAI stream: role chunk, one chunk per piece, finish chunk with usage, [DONE]."""

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                "model": UPSTREAM_MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in STREAM_PIECES]
    events.append(chunk({}, "stop", {"prompt_tokens": 12, "completion_tokens": len(STREAM_PIECES),
                                     "total_tokens": 12 + len(STREAM_PIECES)}))
    text = "".join(events) + "data: [DONE]\n\n"
    if len(text) >= 4000:
        raise ValueError("nginx caps one config string at 4 KiB: shorten the canned stream")
    return text


# --- the systems under test -------------------------------------------------------------------------------------


PORTICO_MASTER = "mk-bench-" + secrets.token_hex(24)


def portico_config(upstream_url: str, traces: bool = True) -> dict:
    """Portico as it would be deployed: auth on (master key), every request under a virtual key with RPM/TPM
    limits and a budget (checked and booked per request), cost accounting with a usage row per request (batched
    into SQLite), Prometheus metrics and tracing at its defaults (every request's span tree and content stored) —
    all on. ``traces=False`` samples tracing to 0 (the observability overhead, measured as a second row)."""

    def model(name: str, base_url: str) -> dict:
        deployment = {"provider": "openai", "model": UPSTREAM_MODEL, "base_url": base_url, "api_key": "unused",
                      "price": {"input": 0.15, "output": 0.60}}
        return {"name": name, "deployments": [deployment]}

    return {
        "logging": {"level": "WARNING"},
        "auth": {"master_key": PORTICO_MASTER},
        "tracing": {"sample_rate": 1.0 if traces else 0.0, "content": "full"},
        "models": [model(MODEL, f"{upstream_url}/v1"), model(STREAM_MODEL, f"{upstream_url}/stream/v1")],
    }


def _portico_yaml_shown(upstream: str) -> str:
    shown = yaml.safe_dump(portico_config(upstream), sort_keys=False)
    shown += "# the 'traces sampled to 0' row: tracing.sample_rate 0.0 (errors would still be kept)\n"
    return shown.replace(PORTICO_MASTER, "mk-bench-<random>").strip()


def portico_key(base: str) -> str:
    """A fresh virtual key per Portico start; limits high enough never to refuse the benchmark's load."""
    body = {"name": "bench", "rpm": 10_000_000, "tpm": 1_000_000_000, "budget_usd": 1_000_000.0,
            "budget_period": "month"}
    r = httpx.post(f"{base}/admin/keys", json=body, headers={"authorization": f"Bearer {PORTICO_MASTER}"}, timeout=30)
    r.raise_for_status()
    return r.json()["key"]


def litellm_config(upstream_url: str, master_key: str) -> dict:
    def model(name: str, api_base: str) -> dict:
        return {"model_name": name, "litellm_params": {"model": f"openai/{UPSTREAM_MODEL}", "api_base": api_base,
                                                       "api_key": "unused"}}

    return {
        "model_list": [model(MODEL, f"{upstream_url}/v1"), model(STREAM_MODEL, f"{upstream_url}/stream/v1")],
        "general_settings": {"master_key": master_key},  # no database_url: no DB
    }


# LiteLLM otherwise tries to download its model-price map from the internet at start-up; keep it on the packaged copy.
LITELLM_ENV = ["LITELLM_LOCAL_MODEL_COST_MAP=True", "LITELLM_LOG=WARNING", "LITELLM_DONT_SHOW_FEEDBACK_BOX=true",
               "JSON_LOGS=false"]


@dataclass
class System:
    name: str
    command: Callable[[int], list[str]]  # port -> argv, without the taskset prefix
    health: str  # path answering 200 when ready
    key: str | None = None  # bearer token the clients send
    setup: Callable[[str], str] | None = None  # after start: base URL -> the key clients send
    # Gateways pick the streaming upstream by model name; nginx and the path-transparent passthrough by path.
    stream_path: str = "/v1/chat/completions"
    cpus: str = SUT_CPU  # taskset CPU list
    runs: dict[int, list[WrkResult]] = field(default_factory=dict)
    streams: list[StreamResult] = field(default_factory=list)


def fresh_dir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    return path


def systems(tmp: Path, upstream: str) -> list[System]:
    portico_yaml = tmp / "portico.yaml"
    portico_yaml.write_text(yaml.safe_dump(portico_config(upstream), sort_keys=False))
    untraced_yaml = tmp / "portico-untraced.yaml"
    untraced_yaml.write_text(yaml.safe_dump(portico_config(upstream, traces=False), sort_keys=False))
    litellm_key = "sk-bench-" + secrets.token_hex(24)
    litellm_yaml = tmp / "litellm.yaml"
    litellm_yaml.write_text(yaml.safe_dump(litellm_config(upstream, litellm_key), sort_keys=False))

    def passthrough(port: int) -> list[str]:
        return [sys.executable, str(ROOT / "bench" / "passthrough.py"), "--port", str(port), "--upstream", upstream]

    def portico(port: int, config: Path = portico_yaml) -> list[str]:
        return ["env", "-C", str(fresh_dir(tmp, f"portico-{port}")), str(VENV_BIN / "portico"), "serve",
                "--config", str(config), "--port", str(port)]

    def litellm(port: int) -> list[str]:
        return ["env", *LITELLM_ENV, str(LITELLM_BIN / "litellm"), "--config", str(litellm_yaml),
                "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]

    out = [
        System("passthrough (aiohttp, ceiling)", passthrough, "/health", stream_path=UPSTREAM_STREAM_PATH),
        System("Portico (default: traces of every request, full content)", portico, "/readyz", setup=portico_key),
        System("Portico, traces sampled to 0", lambda port: portico(port, untraced_yaml), "/readyz",
               setup=portico_key),
        System("LiteLLM proxy", litellm, "/health/readiness", litellm_key),
    ]
    if WORKERS:
        redis_yaml = tmp / "portico-redis.yaml"
        redis_yaml.write_text(yaml.safe_dump({**portico_config(upstream), "state": REDIS_STATE}, sort_keys=False))

        def on_redis(workers: int) -> Callable[[int], list[str]]:
            return lambda port: [*portico(port, redis_yaml), "--workers", str(workers)]

        for n in (1, 2):
            out.append(System(f"Portico default, state on Redis, {n} worker{'s' if n > 1 else ''} (CPUs 0-1)",
                              on_redis(n), "/readyz", setup=portico_key, cpus="0,1"))
    if BASELINE:
        tree = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), BASELINE], check=True)
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip

        def baseline(port: int) -> list[str]:
            return ["env", "-C", str(fresh_dir(tmp, f"baseline-{port}")), f"PYTHONPATH={tree / 'src'}",
                    str(VENV_BIN / "python"), "-m", "portico", "serve", "--config", str(portico_yaml),
                    "--port", str(port)]

        out.append(System(f"Portico at {rev} (BENCH_BASELINE={BASELINE}), default config", baseline, "/readyz",
                          setup=portico_key))
    return out


def nginx_cmd(tmp: Path, port: int) -> list[str]:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; keepalive_requests 1000000; keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{ default_type application/json; return 200 '{COMPLETION}'; }}
    location = /stream/v1/chat/completions {{ default_type text/event-stream; return 200 '{sse_body()}'; }}
    location = /health {{ return 200 'ok'; }}
  }}
}}""")
    return ["taskset", "-c", LOAD_CPU, shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)]


@contextlib.contextmanager
def serving(system: System, tmp: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / (re.sub(r"[^a-z0-9]+", "-", system.name.lower()).strip("-") + ".log")
    with running(["taskset", "-c", system.cpus, *system.command(port)], base + system.health, log, timeout=180):
        yield base


# --- load: wrk for plain completions, an aiohttp client for streams ----------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


def wrk_script(tmp: Path, key: str | None) -> Path:
    lua = tmp / f"post-{secrets.token_hex(4)}.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""
    lua.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n{auth}'
                   f"wrk.body = {json.dumps(REQUEST)}\n")
    return lua


def parse_wrk(out: str) -> WrkResult:
    problems = [line.strip() for line in out.splitlines() if re.search(r"Socket errors|Non-2xx", line)]
    if problems:
        raise RuntimeError("wrk saw failed requests: " + "; ".join(problems) + "\n" + out)

    def latency_ms(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not m:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{out}")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total or int(total.group(1)) == 0:
        raise RuntimeError(f"wrk made no requests:\n{out}")
    return WrkResult(float(rps.group(1)), latency_ms("50"), latency_ms("99"), int(total.group(1)))


def wrk(url: str, lua: Path, connections: int, seconds: int) -> WrkResult:
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "--latency", "-s", str(lua), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return parse_wrk(proc.stdout)


def headers(key: str | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}


def check_completion(url: str, key: str | None) -> None:
    """One request before the load: the system must really answer with the upstream's completion."""
    r = httpx.post(url, content=REQUEST, headers=headers(key), timeout=30)
    if r.status_code != 200 or r.json()["choices"][0]["message"]["content"] != ANSWER:
        raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:500]}")


@dataclass
class StreamResult:
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    chunks_per_s: float
    streams_per_s: float
    chunks_per_stream: float


async def one_stream(session: aiohttp.ClientSession, url: str, key: str | None) -> tuple[float, int]:
    """Time to the first SSE event, and the number of content-bearing events; checks the relayed text."""
    start = time.perf_counter()
    first: float | None = None
    chunks, text = 0, []
    async with session.post(url, data=STREAM_REQUEST, headers=headers(key)) as r:
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}: {(await r.text())[:500]}")
        async for line in r.content:
            if not line.startswith(b"data:"):
                continue
            first = first or time.perf_counter() - start
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            choices = json.loads(payload).get("choices") or [{}]
            piece = choices[0].get("delta", {}).get("content")
            if piece:
                chunks += 1
                text.append(piece)
    if "".join(text) != "".join(STREAM_PIECES) or first is None:
        raise RuntimeError(f"{url} relayed {''.join(text)!r}, not the upstream's stream")
    return first, chunks


async def stream_load(url: str, key: str | None, count: int) -> StreamResult:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(5):  # warm-up: connections, caches
            await one_stream(session, url, key)
        start = time.perf_counter()
        results = [await one_stream(session, url, key) for _ in range(count)]
        elapsed = time.perf_counter() - start
    ttfbs = sorted(r[0] * 1000 for r in results)
    chunks = sum(r[1] for r in results)
    return StreamResult(statistics.median(ttfbs), ttfbs[min(len(ttfbs) - 1, int(len(ttfbs) * 0.99))],
                        chunks / elapsed, count / elapsed, chunks / count)


# --- one round ---------------------------------------------------------------------------------------------------


def measure(system: System, base: str, tmp: Path) -> None:
    url = f"{base}/v1/chat/completions"
    check_completion(url, system.key)
    lua = wrk_script(tmp, system.key)
    wrk(url, lua, max(CONCURRENCIES), WARMUP_SECONDS)
    for c in CONCURRENCIES:
        system.runs.setdefault(c, []).append(wrk(url, lua, c, SECONDS))
    system.streams.append(asyncio.run(stream_load(base + system.stream_path, system.key, STREAMS)))


def one_round(order: list[System], direct: System, upstream: str, tmp: Path) -> None:
    for system in order:
        t0 = time.monotonic()
        if system is direct:
            measure(system, upstream, tmp)
        else:
            with serving(system, tmp) as base:
                if system.setup is not None:
                    system.key = system.setup(base)
                measure(system, base, tmp)
        c = max(CONCURRENCIES)
        print(f"  {system.name}: {system.runs[c][-1].rps:.0f} req/s at c={c}, "
              f"{system.streams[-1].chunks_per_s:.0f} chunks/s ({time.monotonic() - t0:.0f} s)", flush=True)


# --- report ------------------------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def litellm_version() -> str:
    out = subprocess.run([str(LITELLM_BIN / "python"), "-c", "import importlib.metadata as m; "
                          "print(m.version('litellm'), m.version('uvicorn'), m.version('fastapi'))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return f"litellm {out[0]} (uvicorn {out[1]}, fastapi {out[2]})"


def git_state() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True)
    return head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> str:
    """Taken at the start: the source tree may change while the benchmark runs."""
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return (f"portico {metadata.version('portico')} (git {git_state()}; uvicorn {metadata.version('uvicorn')}), "
            f"{litellm_version()}, aiohttp {metadata.version('aiohttp')}, nginx {nginx_v}, wrk {wrk_v}")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent in user and system mode since boot."""
    user, nice, system = (int(x) for x in Path("/proc/stat").read_text().split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This script plus every process it started and reaped (nginx, wrk, the systems under test)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class RunInfo:
    versions: str = field(default_factory=versions)
    started: float = field(default_factory=time.monotonic)
    loads: list[str] = field(default_factory=lambda: [load()])  # at the start, then at each round's start
    busy_at_start: float = field(default_factory=busy_cpu_seconds)
    own_at_start: float = field(default_factory=own_cpu_seconds)

    def other_work(self) -> str:
        """How much CPU processes outside the benchmark used during it: the sign of a noisy run."""
        other = (busy_cpu_seconds() - self.busy_at_start) - (own_cpu_seconds() - self.own_at_start)
        capacity = (time.monotonic() - self.started) * (os.cpu_count() or 1)
        return f"about {max(other, 0):.0f} CPU-seconds, {max(other, 0) / capacity:.0%} of the machine's capacity"


def machine_lines(info: RunInfo) -> list[str]:
    return [
        "## Machine", "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; {platform.platform()}",
        f"- Python {platform.python_version()}; {info.versions}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; run took {(time.monotonic() - info.started) / 60:.1f} min",
        f"- Load average (1/5/15 min) before: {info.loads[0]}; at each round's start: "
        f"{' | '.join(info.loads[1:])}; after: {load()}. The machine is shared with other work. The benchmark "
        "itself keeps both cores busy while wrk runs (about 2), and 1-minute averages lag, so the round-start values "
        "include it; anything above about 2 is other work. Compare systems within one run.",
        f"- CPU used by other work during the run (machine total minus the benchmark's own processes): "
        f"{info.other_work()}.",
    ]


def wrk_table(all_systems: list[System], direct: System) -> list[str]:
    lo, hi = CONCURRENCIES
    base_p50 = med([r.p50_ms for r in direct.runs[lo]])
    lines = [f"| system | c={lo} req/s | c={lo} p50 ms | c={lo} p99 ms | added p50 ms at c={lo} | c={hi} req/s | "
             f"c={hi} p50 ms | c={hi} p99 ms | c={hi} req/s per round |", "|---|---|---|---|---|---|---|---|---|"]
    for s in all_systems:
        a, b = s.runs[lo], s.runs[hi]
        added = "—" if s is direct else f"{med([r.p50_ms for r in a]) - base_p50:.2f}"
        lines.append(f"| {s.name} | {med([r.rps for r in a]):.0f} | {med([r.p50_ms for r in a]):.2f} | "
                     f"{med([r.p99_ms for r in a]):.2f} | {added} | {med([r.rps for r in b]):.0f} | "
                     f"{med([r.p50_ms for r in b]):.2f} | {med([r.p99_ms for r in b]):.2f} | "
                     + ", ".join(f"{r.rps:.0f}" for r in b) + " |")
    return lines


def stream_table(all_systems: list[System]) -> list[str]:
    lines = ["| system | first event p50 ms | first event p99 ms | content chunks/s | streams/s | chunks per stream |",
             "|---|---|---|---|---|---|"]
    for s in all_systems:
        st = s.streams
        lines.append(f"| {s.name} | {med([r.ttfb_p50_ms for r in st]):.2f} | {med([r.ttfb_p99_ms for r in st]):.2f} | "
                     f"{med([r.chunks_per_s for r in st]):.0f} | {med([r.streams_per_s for r in st]):.1f} | "
                     f"{med([r.chunks_per_stream for r in st]):.0f} |")
    return lines


def configs_section() -> list[str]:
    upstream = "http://127.0.0.1:NGINX_PORT"
    litellm_cmd = "litellm --config litellm.yaml --host 127.0.0.1 --port P --num_workers 1"
    return [
        "## Configurations", "",
        "Portico (`portico serve --config portico.yaml --port P`, from `portico_config()` in bench/gateway.py):", "",
        "```yaml", _portico_yaml_shown(upstream), "```", "",
        f"LiteLLM (`{' '.join(LITELLM_ENV)} {litellm_cmd}`, from bench/.venv-litellm):", "",
        "```yaml", yaml.safe_dump(litellm_config(upstream, "sk-bench-<48 random hex digits>"), sort_keys=False).strip(),
        "```", "",
        "Clients send LiteLLM its master key; they send Portico a virtual key created after each start (RPM, TPM and "
        "a monthly budget set, so limits and budget are checked and booked on every request).",
    ]


def report(all_systems: list[System], direct: System, info: RunInfo, goal_lines: list[str]) -> str:
    lo = CONCURRENCIES[0]
    return "\n".join([
        "# Gateway overhead: Portico vs LiteLLM proxy vs a bare aiohttp passthrough", "",
        "Portico's headline row is its default config: tracing on for every request (sample_rate 1.0) with full "
        "content, as `make run` serves it; the row with traces sampled to 0 shows what tracing costs.", "",
        *goal_lines, "",
        "Every system forwards to the same nginx upstream answering a canned OpenAI chat.completion, so these numbers "
        "are the gateways' own cost. Each system under test runs one worker pinned to CPU 0; nginx (one worker), wrk "
        "(one thread) and the streaming client share CPU 1. Each is started fresh per round, warmed up "
        f"({WARMUP_SECONDS} s of wrk), then measured; {ROUNDS} rounds with the system order rotated, medians shown.",
        "",
        f"## Non-streaming: POST /v1/chat/completions (wrk, {SECONDS} s per run, c = connections)", "",
        *wrk_table(all_systems, direct), "",
        f"\"added p50 ms\" = the system's p50 at c={lo} minus nginx's own p50 at c={lo}. No run had a socket error or "
        "a non-2xx answer (the benchmark stops otherwise).", "",
        f"## Streaming: {len(STREAM_PIECES)} content chunks per stream ({STREAMS} sequential streams per round)", "",
        *stream_table(all_systems), "",
        "\"first event\" = request sent to the first SSE `data:` line received. nginx sends each canned stream at "
        "once, so chunks/s is the rate at which a gateway can parse and relay events, not a model's pace. Every "
        "stream's relayed text is checked against the upstream's.", "",
        *configs_section(), "",
        *machine_lines(info), "",
        "Re-run: `make bench-gateway` (BENCH_ROUNDS, BENCH_SECONDS, BENCH_STREAMS override rounds, seconds per wrk "
        "run and streams per round; BENCH_BASELINE=<git rev> adds that revision's Portico beside this tree's; "
        "BENCH_WORKERS=1 adds 1 vs 2 workers on Redis state).", "",
    ])


def goals(portico: System, passthrough: System, litellm: System, direct: System) -> list[str]:
    """Issue 30's goals for the default config, each with its number from this run."""
    lo, hi = CONCURRENCIES

    def rps(s: System, c: int) -> float:
        return med([r.rps for r in s.runs[c]])

    added = med([r.p50_ms for r in portico.runs[lo]]) - med([r.p50_ms for r in direct.runs[lo]])
    first = med([r.ttfb_p50_ms for r in portico.streams])
    chunks = med([r.chunks_per_s for r in portico.streams]) / med([r.chunks_per_s for r in passthrough.streams])
    rows = [
        (f"≥ 0.60x the passthrough's req/s at c={lo}", rps(portico, lo) / rps(passthrough, lo) >= 0.6,
         f"{rps(portico, lo) / rps(passthrough, lo):.2f}x"),
        (f"≥ 0.60x the passthrough's req/s at c={hi}", rps(portico, hi) / rps(passthrough, hi) >= 0.6,
         f"{rps(portico, hi) / rps(passthrough, hi):.2f}x"),
        (f"≥ 35x LiteLLM's req/s (c={hi})", rps(portico, hi) / rps(litellm, hi) >= 35,
         f"{rps(portico, hi) / rps(litellm, hi):.1f}x"),
        (f"added p50 ≤ 1.2 ms at c={lo}", added <= 1.2, f"{added:.2f} ms"),
        (f"p99 ≤ 2.5 ms at c={lo}", med([r.p99_ms for r in portico.runs[lo]]) <= 2.5,
         f"{med([r.p99_ms for r in portico.runs[lo]]):.2f} ms"),
        ("first streamed event ≤ 1.0 ms p50", first <= 1.0, f"{first:.2f} ms"),
        ("≥ 0.6x the passthrough's content chunks/s", chunks >= 0.6, f"{chunks:.2f}x"),
    ]
    return ["| goal (default config) | this run | met |", "|---|---|---|",
            *[f"| {goal} | {value} | {'yes' if ok else '**no**'} |" for goal, ok, value in rows]]


def summary(portico: System, passthrough: System, litellm: System, direct: System) -> str:
    lo, hi = CONCURRENCIES
    rps_p, rps_l = med([r.rps for r in portico.runs[hi]]), med([r.rps for r in litellm.runs[hi]])
    rps_t = med([r.rps for r in passthrough.runs[hi]])
    added = med([r.p50_ms for r in portico.runs[lo]]) - med([r.p50_ms for r in direct.runs[lo]])
    return (f"gateway rps_portico={rps_p:.0f} rps_litellm={rps_l:.0f} ratio={rps_p / rps_l:.2f} "
            f"rps_passthrough={rps_t:.0f} passthrough_ratio={rps_p / rps_t:.2f} p50_added_ms={added:.2f} "
            f"p99_ms={med([r.p99_ms for r in portico.runs[lo]]):.2f} "
            f"first_event_ms={med([r.ttfb_p50_ms for r in portico.streams]):.2f} traces=default")


def preflight() -> None:
    missing = [tool for tool in ("nginx", "wrk", "taskset") if not shutil.which(tool)]
    if not (LITELLM_BIN / "litellm").exists():
        missing.append(f"{LITELLM_BIN / 'litellm'} (run `make bench-gateway`)")
    if missing:
        raise SystemExit("missing: " + ", ".join(missing))


def main() -> None:
    preflight()
    info = RunInfo()
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this script is the streaming client; children re-pin with taskset
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    direct = System("nginx alone (no gateway)", lambda _: [], "/health", stream_path=UPSTREAM_STREAM_PATH)
    sut = systems(tmp, upstream)
    everything = [direct, *sut]
    with running(nginx_cmd(tmp, up_port), f"{upstream}/health", tmp / "nginx.log"):
        for i in range(ROUNDS):
            info.loads.append(load())
            print(f"round {i + 1}/{ROUNDS} (load average {info.loads[-1]})", flush=True)
            one_round(everything[i % len(everything):] + everything[:i % len(everything)], direct, upstream, tmp)
    # The results file ends with the one-line summary: Portico's default config vs the passthrough and LiteLLM.
    drop_baseline(tmp)
    text = report(everything, direct, info, goals(sut[1], sut[0], sut[3], direct)).rstrip("\n") + "\n\n"
    if WORKERS:
        text += "\n".join(workers_lines(sut[4], sut[5], CONCURRENCIES)) + "\n\n"
    if BASELINE:
        text += "\n".join(baseline_lines(sut[1], sut[-1], CONCURRENCIES)) + "\n\n"
    text += summary(sut[1], sut[0], sut[3], direct) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    shutil.rmtree(tmp, ignore_errors=True)  # Portico's SQLite (usage, traces) grows ~200 MB a run; kept on failure
    print(text, end="")


if __name__ == "__main__":
    main()
