"""The long fuzz run: schemathesis over a real ``portico serve``'s ``/openapi.json`` with many more examples per
operation than ``make test``'s run (tests/e2e/test_fuzz.py), as the master key, a virtual key and an anonymous
caller against a server with a master key, and anonymously against one without (every route open).

Counts every generated test case, the 5xx answers, the responses that break the document (status, content type,
headers, body schema, SSE events) and the tracebacks/errors in the servers' logs, and writes
bench/results/fuzz.md, whose last line ``make bench-scale`` reads:

    fuzz examples=… fuzz_5xx=… spec_violations=… tracebacks=…

Run: ``python bench/fuzz.py`` (FUZZ_EXAMPLES overrides the examples per operation, default 50). Run it under
``flock /tmp/portico-bench.lock`` so two benchmarks never share the machine.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzzing import FuzzResult, FuzzServer, fuzz_server, log_problems, run_schemathesis  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fuzz.md"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
ALL = "examples,coverage,fuzzing,stateful"


def _runs(s: FuzzServer, out: Path, whos: list[str], seed: int) -> list[tuple[str, FuzzResult, int]]:
    done = []
    for who in whos:
        start = s.log.stat().st_size
        r = run_schemathesis(s.url, who, out, headers=s.auth(who), max_examples=EXAMPLES, phases=ALL, seed=seed)
        tracebacks = len(log_problems(s.log, start))
        print(f"{r.label}: {r.generated} cases, {r.count()} failing, {tracebacks} log problems, {r.seconds:.0f} s",
              flush=True)  # fmt: skip
        if r.failures:
            print(r.details(), flush=True)
        done.append((who, r, tracebacks))
    return done


def main() -> None:
    seed = int(time.time()) % 100_000  # a new seed per run: the long run explores, make test's run is fixed
    rows = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="portico-fuzz-") as tmp:
        base = Path(tmp)
        (base / "auth").mkdir()
        (base / "open").mkdir()
        with fuzz_server(base / "auth") as s:
            rows += [("master key on", *r) for r in _runs(s, base / "auth", ["master", "user", "anonymous"], seed)]
        with fuzz_server(base / "open", auth=False) as s:
            rows += [("master key off", *r) for r in _runs(s, base / "open", ["anonymous"], seed)]
    total = time.monotonic() - t0
    examples = sum(r.generated for _, _, r, _ in rows)
    server_errors = sum(r.server_errors for _, _, r, _ in rows)
    spec = sum(r.spec_violations for _, _, r, _ in rows)
    tracebacks = sum(t for *_, t in rows)
    errors = sum(sum(e["count"] for e in r.errors) for _, _, r, _ in rows)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())  # fmt: skip
    lines = [
        "# Fuzzing: schemathesis over /openapi.json",
        "",
        f"schemathesis phases {ALL.replace(',', ', ')}; up to {EXAMPLES} examples per operation and phase; "
        f"seed {seed}; checks: not_a_server_error and the response conformance checks (status code, content type, "
        "headers, body schema, SSE events). Every documented operation (50), against a real `portico serve` on a "
        "scripted upstream (tests/fuzzing.py). Log problems: tracebacks or error records in the server's log.",
        "",
        "| server | caller | test cases | failing cases | 5xx | spec violations | run errors | log problems | s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server, who, r, tb in rows:
        errs = sum(e["count"] for e in r.errors)
        lines.append(f"| {server} | {who} | {r.generated} | {r.count()} | {r.server_errors} | "
                     f"{r.spec_violations} | {errs} | {tb} | {r.seconds:.0f} |")  # fmt: skip
    failures = [f"- {who}: {f['code']} {f['title']} x{f['count']} on {', '.join(f['operations'])}"
                for _, who, r, _ in rows for f in r.failures]  # fmt: skip
    run_errors = [f"- {who}: {e['title']} x{e['count']}" for _, who, r, _ in rows for e in r.errors]
    lines += ["", "Failures:" if failures else "No failures.", *failures, ""]
    if run_errors:
        lines += ["Run errors (schemathesis could not complete the case):", *run_errors, ""]
    lines += [
        f"- Machine: {cpu}; {os.cpu_count()} cores; {platform.platform()}; Python {platform.python_version()}",
        f"- Wall time {total:.0f} s; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; run errors (schemathesis "
        f"could not complete a case, e.g. a timeout): {errors}",
        "",
        "Re-run: `python bench/fuzz.py` (FUZZ_EXAMPLES sets the examples per operation).",
        "",
        f"fuzz examples={examples} fuzz_5xx={server_errors} spec_violations={spec} tracebacks={tracebacks}",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
