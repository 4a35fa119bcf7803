"""Where a Portico request's CPU goes: py-spy samples `portico serve` (bench/gateway.py's default config: auth, a
virtual key with limits and a budget, usage rows, metrics, and tracing at its default — every request, full
content) while wrk drives non-streaming chat completions at c=50 against the canned nginx upstream.

Prints, and appends to PROFILE_OUT (default bench/results/gateway_profile.md) under PROFILE_LABEL, a text flame
summary: CPU share by package/module (self time), the top functions by self time, and the top functions by
inclusive time. py-spy runs on CPU 1 beside nginx and wrk; Portico alone on CPU 0, as in the benchmark.

    PROFILE_LABEL=before python bench/profile_gateway.py
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.gateway import (  # noqa: E402
    LOAD_CPU,
    SUT_CPU,
    check_completion,
    nginx_cmd,
    portico_config,
    portico_key,
    wrk,
    wrk_script,
)
from tests.support import VENV_BIN, free_port, running  # noqa: E402

SECONDS = int(os.environ.get("PROFILE_SECONDS", "15"))
CONNECTIONS = int(os.environ.get("PROFILE_CONNECTIONS", "50"))
LABEL = os.environ.get("PROFILE_LABEL", "profile")
OUT = Path(os.environ.get("PROFILE_OUT", ROOT / "bench" / "results" / "gateway_profile.md"))
TOP = 25
_THREAD_ID = re.compile(r"\s*\(0x[0-9a-f]+\)")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def where(path: str) -> str:
    """A frame's file as a short module-ish name: ``portico/server/chat.py``, ``starlette``, ``asyncio``…"""
    path = path.replace("\\", "/")
    if "/portico/" in path:
        return "portico/" + path.split("/portico/", 1)[1]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    m = re.search(r"/python3\.\d+/(.+)$", path)
    if m:
        return "stdlib/" + m.group(1).split("/", 1)[0].removesuffix(".py")
    return path


def parse(raw: str) -> tuple[int, collections.Counter, collections.Counter, collections.Counter, collections.Counter]:
    total = 0
    by_thread: collections.Counter = collections.Counter()  # py-spy's thread label → samples
    own: collections.Counter = collections.Counter()  # function → samples where it is the leaf
    incl: collections.Counter = collections.Counter()  # function → samples where it is anywhere on the stack
    by_module: collections.Counter = collections.Counter()  # leaf's module → samples
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = []
        parts = stack.split(";")
        thread = "?"
        while parts and parts[0].startswith(("thread ", "process ")):
            thread = parts.pop(0)
        for f in parts:
            m = _FRAME.match(f)
            frames.append((m.group("func"), where(m.group("file"))) if m else (f, "?"))
        frames = [f for f in frames if f[0] != "<module>" or len(frames) == 1]
        if not frames:
            continue
        total += n
        by_thread[_THREAD_ID.sub("", thread)] += n
        leaf = frames[-1]
        own[f"{leaf[0]} ({leaf[1]})"] += n
        by_module[leaf[1]] += n
        for name in {f"{fn} ({mod})" for fn, mod in frames}:
            incl[name] += n
    return total, own, incl, by_module, by_thread


def table(title: str, counts: collections.Counter, total: int) -> list[str]:
    lines = [f"{title}:", "", "| % | samples | frame |", "|---|---|---|"]
    lines += [f"| {100 * n / total:.1f} | {n} | `{name}` |" for name, n in counts.most_common(TOP)]
    return [*lines, ""]


def summary(raw: str, rps: float, load: str) -> str:
    total, own, incl, by_module, by_thread = parse(raw)
    if total == 0:
        raise RuntimeError("py-spy recorded no samples")
    head = [f"## {LABEL}", "",
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}; wrk c={CONNECTIONS} for {SECONDS} s: {rps:.0f} req/s under "
            f"py-spy (sampling slows the server: compare shares, not rates); load average {load}; {total} samples "
            "(py-spy leaves out idle threads; uvloop's own C code, I/O included, counts as `Runner.run`).", ""]
    return "\n".join([*head, *table("Samples by thread", by_thread, total),
                      *table("Self time by module (the leaf frame's file)", by_module, total),
                      *table("Top functions by self time", own, total),
                      *table("Top functions by inclusive time", incl, total)])


def main() -> None:
    pyspy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="profile-gateway-"))
    up_port, port = free_port(), free_port()
    upstream, base = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{port}"
    cfg = tmp / "portico.yaml"
    cfg.write_text(yaml.safe_dump(portico_config(upstream), sort_keys=False))
    serve = ["taskset", "-c", SUT_CPU, "env", "-C", str(tmp), str(VENV_BIN / "portico"), "serve", "--config",
             str(cfg), "--port", str(port)]
    raw_path = tmp / "raw.txt"
    with (running(nginx_cmd(tmp, up_port), f"{upstream}/health", tmp / "nginx.log"),
          running(serve, f"{base}/readyz", tmp / "portico.log", timeout=180) as proc):
        key = portico_key(base)
        url = f"{base}/v1/chat/completions"
        check_completion(url, key)
        lua = wrk_script(tmp, key)
        wrk(url, lua, CONNECTIONS, 3)  # warm-up
        spy = subprocess.Popen(["taskset", "-c", LOAD_CPU, pyspy, "record", "--pid", str(proc.pid), "--rate", "200",
                                "--duration", str(SECONDS), "--format", "raw", "--threads", "--nonblocking",
                                "-o", str(raw_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        result: dict[str, float] = {}
        t = threading.Thread(target=lambda: result.update(rps=wrk(url, lua, CONNECTIONS, SECONDS).rps))
        time.sleep(0.5)
        t.start()
        t.join()
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    text = summary(raw_path.read_text(), result["rps"], " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if os.environ.get("PROFILE_RAW"):  # keep py-spy's collapsed stacks (e.g. for a flame graph)
        shutil.copy(raw_path, os.environ["PROFILE_RAW"])
    shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    if not OUT.exists():
        OUT.write_text("# Where a Portico request's CPU goes (py-spy, bench/profile_gateway.py)\n\n" + __doc__.split(
            "\n\n")[0].replace("\n", " ") + "\n\n")
    with OUT.open("a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
