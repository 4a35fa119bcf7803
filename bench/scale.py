"""Scale-out and reliability under load: nginx → 2 Portico replicas (``--workers 2`` each) → one Redis, one PostgreSQL
(both private, on their own ports, so this run may kill them), llm-katan upstreams; wrk as the load generator.

Phases: throughput through 1 vs 2 replicas; RPM/TPM limits and a budget enforced across replicas; exact and
semantic cache hits and new keys shared between replicas; one store and one /admin/stats; faults under load
(SIGKILL of a replica, a rolling restart with SIGTERM, Redis down 10 s, PostgreSQL down 10 s, an upstream
brown-out); a soak (RSS, open files and p99 over time).

Env: SCALE_SECONDS (load per phase, default 20), SCALE_SOAK_SECONDS (default 1800), SCALE_CONNECTIONS (16),
SCALE_SEMANTIC=0 skips the semantic cache (it loads the local embedder in every worker).
Writes bench/results/scale.md; its last line is the summary.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.topology import MASTER, Topology, WrkResult  # noqa: E402

SECONDS = float(os.environ.get("SCALE_SECONDS", "20"))
SOAK = float(os.environ.get("SCALE_SOAK_SECONDS", "1800"))
CONN = int(os.environ.get("SCALE_CONNECTIONS", "16"))
SEMANTIC = os.environ.get("SCALE_SEMANTIC", "1") != "0"
OUT = ROOT / "bench" / "results" / "scale.md"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {MASTER}"}, timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def chat(url: str, key: str, text: str, model: str = "m") -> httpx.Response:
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30)


def lost(topo: Topology, res: WrkResult, wait: float = 15.0) -> int:
    """Answered (200) requests whose usage row is not in the database, after waiting for the writers."""
    deadline = time.monotonic() + wait
    want = set(res.ok_ids)
    while True:
        missing = want - {r["request_id"] for r in topo.usage_rows()}
        if not missing or time.monotonic() > deadline:
            return len(missing)
        time.sleep(0.5)


def row(name: str, res: WrkResult, note: str = "") -> str:
    codes = ", ".join(f"{s}: {n}" for s, n in sorted(res.statuses.items()))
    return (f"| {name} | {res.total} | {res.rps:.0f} | {res.p50_ms:.1f} | {res.p99_ms:.1f} | {codes} | "
            f"{res.socket_errors} | {note} |")  # fmt: skip


# --- phases -------------------------------------------------------------------------------------------------------


def scaling(topo: Topology, out: dict) -> list[str]:
    key = topo.key(name="scaling")
    topo.wrk(key, 3, connections=CONN)  # warm-up: connections, JIT-free paths, caches of the key
    # Alternated, twice each: the machine's other work drifts, and both configurations should see the same drift.
    ones, twos = [], []
    for _ in range(2):
        ones.append(topo.wrk(key, SECONDS / 2, url=topo.url_one, connections=CONN))
        twos.append(topo.wrk(key, SECONDS / 2, connections=CONN))
    one_rps, two_rps = sum(r.rps for r in ones) / 2, sum(r.rps for r in twos) / 2
    out["scaling"] = two_rps / one_rps if one_rps else float("nan")
    log(f"scaling: 1 replica {one_rps:.0f} rps, 2 replicas {two_rps:.0f} rps")
    out["load_rows"] = [row(f"1 replica (nginx → replica0), round {i + 1}", r) for i, r in enumerate(ones)]
    out["load_rows"] += [row(f"2 replicas (nginx → both), round {i + 1}", r) for i, r in enumerate(twos)]
    return []


def limits(topo: Topology, out: dict) -> list[str]:
    secs = min(SECONDS, 30.0)  # inside one 60 s window: everything admitted counts against the limit
    rpm = 600
    res = topo.wrk(topo.key(name="rpm", rpm=rpm), secs, connections=CONN)
    admitted = res.statuses.get(200, 0)
    rpm_over = max(0, admitted - rpm) / rpm * 100
    tpm = 30_000
    res_t = topo.wrk(topo.key(name="tpm", tpm=tpm), secs, connections=CONN)
    time.sleep(1.5)
    rows = topo.usage_rows("WHERE key_name = 'tpm' AND status = 200")
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    tpm_over = max(0, tokens - tpm) / tpm * 100
    budget = 0.01
    res_b = topo.wrk(topo.key(name="budget", budget_usd=budget, budget_period="total"), secs, connections=CONN)
    time.sleep(1.5)
    brows = topo.usage_rows("WHERE key_name = 'budget' AND status = 200")
    spent = sum(r["cost_usd"] for r in brows)
    per_req = spent / len(brows) if brows else float("nan")
    excess_req = max(0.0, spent - budget) / per_req if brows else float("nan")
    out["overadmit_pct"] = max(rpm_over, tpm_over)
    log(f"limits: rpm {admitted}/{rpm}, tpm {tokens}/{tpm}, budget {spent:.6f}/{budget} "
        f"({excess_req:.1f} requests over)")
    out["load_rows"] += [row("rpm 600 key", res), row("tpm 30k key", res_t),
                         row("budget 0.01 USD key", res_b)]  # fmt: skip
    return [
        "## Limits and budgets across both replicas",
        "",
        "| limit | limit value | admitted | over-admission |",
        "|---|---|---|---|",
        f"| requests per minute | {rpm} | {admitted} answered (of {res.total} sent) | {rpm_over:.2f}% |",
        f"| tokens per minute | {tpm} | {tokens} tokens in {len(rows)} answered requests | {tpm_over:.2f}% |",
        f"| budget (total) | {budget} USD | {spent:.6f} USD in {len(brows)} answered requests | "
        f"{excess_req:.1f} requests' worth (in flight: up to {CONN}) |",
        "",
        f"Each run lasts {secs:.0f} s (inside one 60 s window) with {CONN} connections through nginx, so both replicas "
        "(4 workers) admit concurrently against the same Redis counters. A request reserves its estimated prompt "
        "tokens (~4 characters a token) plus its max_tokens at admission, corrected with the real count afterwards. A "
        "budget is checked at admission, so requests admitted before the spend crossed it may finish.",
        "",
    ]


def sharing(topo: Topology, out: dict) -> list[str]:
    a, b = topo.replicas
    key = topo.key(name="sharing")
    exact = 0
    for i in range(20):
        chat(a.url, key, f"shared exact {i}")
        exact += chat(b.url, key, f"shared exact {i}").headers.get("x-portico-cache") == "hit"
    semantic = "skipped (SCALE_SEMANTIC=0)"
    pairs = [("How do I reset my password?", "How can I reset my password?"),
             ("What is the capital of France?", "What's the capital of France?"),
             ("How do I cancel my subscription?", "How can I cancel my subscription?"),
             ("Where can I download the invoice?", "Where do I download the invoice?"),
             ("What are your opening hours?", "What are your opening times?")]  # fmt: skip
    sem_hits = 0
    if SEMANTIC:
        for q1, q2 in pairs:
            chat(a.url, key, q1, model="faq")
            time.sleep(0.2)
            sem_hits += chat(b.url, key, q2, model="faq").headers.get("x-portico-cache") == "semantic-hit"
        semantic = f"{sem_hits}/{len(pairs)}"
    keys_ok = 0
    delays = []
    for _ in range(10):
        k = topo.key(a.url)
        t = time.perf_counter()
        keys_ok += chat(b.url, k, "new key").status_code == 200
        delays.append((time.perf_counter() - t) * 1000)
    time.sleep(1.5)
    totals = []
    for r in topo.replicas:
        stats = topo.admin("GET", "/admin/stats", r.url, params={"group_by": "key"}).json()
        totals.append(stats["totals"]["requests"])
    upstreams = {u for _, _, _, u in topo.access_log()}
    both = all(f"127.0.0.1:{r.port}" in upstreams for r in topo.replicas)
    out["sharing"] = (exact, semantic, keys_ok)
    log(f"sharing: exact {exact}/20, semantic {semantic}, keys {keys_ok}/10, stats totals {totals}")
    return [
        "## Shared state across replicas",
        "",
        "| check | result |",
        "|---|---|",
        f"| exact cache: stored via replica0, asked on replica1 | {exact}/20 hits |",
        f"| semantic cache (store: redis): question via replica0, paraphrase on replica1 | {semantic} semantic hits |",
        f"| key created on replica0, first request on replica1 | {keys_ok}/10 answered 200 "
        f"(max {max(delays):.0f} ms) |",
        f"| /admin/stats asked on each replica (requests in the last 24 h) | {totals} (same store: equal) |",
        f"| nginx sent load to both replicas, rows of both in one usage table | {both} |",
        "",
    ]


def kill(topo: Topology, out: dict) -> list[str]:
    victim = topo.replicas[0]
    key = topo.key(name="kill")
    h = topo.wrk_start(key, SECONDS, connections=CONN)
    time.sleep(SECONDS * 0.4)
    t_kill = time.time()
    victim.kill()
    t_dead = time.time()  # SIGKILL to the group, until the supervisor is reaped
    res = topo.wrk_stop(h)
    port = f"127.0.0.1:{victim.port}"
    # sent to the victim before it was gone, not finished when the kill began
    inflight = sum(1 for s, e, _, u in topo.access_log() if u == port and s <= t_dead and e >= t_kill)
    failed_there = sum(1 for s, e, st, u in topo.access_log() if u == port and st >= 500 and e >= t_kill)
    out["kill_failed_on_victim"] = failed_there
    victim.start()  # the new processes insert what the killed ones left in the spool
    lost_rows = lost(topo, res)
    out.update(kill_failed=res.failed, kill_inflight=inflight, kill_lost=lost_rows)
    out["load_rows"].append(row("SIGKILL of replica0 at 40%", res, f"in flight on it: {inflight}"))
    log(f"kill: failed {res.failed} ({failed_there} 5xx from the victim per nginx), in flight {inflight}, "
        f"lost rows {lost_rows}, statuses {res.statuses}, socket errors {res.socket_errors}")
    return []


def rolling(topo: Topology, out: dict) -> list[str]:
    key = topo.key(name="rolling")
    h = topo.wrk_start(key, 3600, connections=CONN)
    time.sleep(3)
    downtime = []
    for r in topo.replicas:
        t = time.time()
        code = r.sigterm_and_wait()
        r.start()
        downtime.append((time.time() - t, code))
        time.sleep(2)
    res = topo.wrk_stop(h, interrupt=True)
    lost_rows = lost(topo, res)
    out.update(sigterm_failed=res.failed, sigterm_lost=lost_rows)
    out["load_rows"].append(row("rolling restart (SIGTERM each replica, start it again)", res,
                                "replica down " + ", ".join(f"{d:.0f} s (exit {c})" for d, c in downtime)))
    log(f"rolling: failed {res.failed}, lost rows {lost_rows}, statuses {res.statuses}")
    return []


def redis_outage(topo: Topology, out: dict) -> list[str]:
    key = topo.key(name="redis-outage", rpm=10_000_000)
    h = topo.wrk_start(key, 3600, connections=CONN)
    time.sleep(3)
    topo.redis.kill()
    time.sleep(10)
    topo.redis.start()
    time.sleep(3)
    res = topo.wrk_stop(h, interrupt=True)
    k2 = topo.key(name="after-redis", rpm=2)
    after = [chat(topo.url, k2, "after redis").status_code for _ in range(3)]
    k3 = topo.key(name="after-redis-cache")
    cache = [chat(topo.url, k3, "after redis").headers.get("x-portico-cache") for _ in range(2)]
    fivexx = sum(n for s, n in res.statuses.items() if s >= 500)
    out["redis_outage_5xx"] = fivexx
    out["load_rows"].append(row("Redis killed for 10 s (state_outage: open)", res,
                                f"after: rpm 2 key {after}, cache {cache}"))  # fmt: skip
    log(f"redis outage: 5xx {fivexx}, statuses {res.statuses}, after {after} {cache}")
    return []


def pg_outage(topo: Topology, out: dict) -> list[str]:
    key = topo.key(name="pg-outage")
    dropped0 = sum(metric(r.url, "portico_usage_dropped_total") for r in topo.replicas)
    h = topo.wrk_start(key, 3600, connections=CONN)
    time.sleep(3)
    topo.pg.stop()
    time.sleep(10)
    topo.pg.start()
    time.sleep(3)
    res = topo.wrk_stop(h, interrupt=True)
    lost_rows = lost(topo, res, wait=30)
    dropped = sum(metric(r.url, "portico_usage_dropped_total") for r in topo.replicas) - dropped0
    out.update(pg_outage_lost=lost_rows, pg_dropped=dropped)
    out["load_rows"].append(row("PostgreSQL stopped for 10 s", res, f"rows lost {lost_rows}, dropped (metric) "
                                                                     f"{dropped:.0f}"))  # fmt: skip
    log(f"pg outage: statuses {res.statuses}, lost {lost_rows}, dropped {dropped}")
    return []


def brownout(topo: Topology, out: dict) -> list[str]:
    key = topo.key(name="brownout")
    res = topo.wrk(key, SECONDS, connections=CONN, model="brown")
    fivexx = sum(n for s, n in res.statuses.items() if s >= 500)
    out["brownout_5xx"] = fivexx
    out["load_rows"].append(row("upstream brown-out: model with 2 deployments, one failing 50% (+300 ms)", res,
                                "retries 1, breaker 3 failures / 5 s"))  # fmt: skip
    log(f"brownout: statuses {res.statuses}")
    return []


def soak(topo: Topology, out: dict) -> list[str]:
    key = topo.key(name="soak")
    chunk = min(60.0, max(10.0, SOAK / 10))
    n = max(2, round(SOAK / chunk))
    samples = []
    for i in range(n):
        res = topo.wrk(key, chunk, connections=CONN)
        rss = fds = 0
        for r in topo.replicas:
            for pid in r.pids():
                try:
                    p = psutil.Process(pid)
                    rss += p.memory_info().rss
                    fds += p.num_fds()
                except psutil.NoSuchProcess:
                    pass
        samples.append((i, res, rss / 2**20, fds))
        log(f"soak {i + 1}/{n}: {res.rps:.0f} rps p99 {res.p99_ms:.1f} ms rss {rss / 2**20:.0f} MB fds {fds}")
    warm = max(1, n // 5) if n >= 4 else 0
    base, last = samples[warm], samples[-1]
    out["soak_rss_growth_pct"] = (last[2] - base[2]) / base[2] * 100
    out["soak_fd_growth_pct"] = (last[3] - base[3]) / base[3] * 100
    out["soak_errors"] = sum(s[1].failed + sum(v for k, v in s[1].statuses.items() if k != 200) for s in samples)
    lines = [
        f"## Soak: {n} x {chunk:.0f} s at {CONN} connections ({n * chunk / 60:.1f} min"
        + ("" if SOAK >= 1800 else f"; SCALE_SOAK_SECONDS={SOAK:.0f}, shorter than the 30-minute target") + ")",
        "",
        "| window | requests | req/s | p99 ms | RSS of 6 Portico processes MB | open fds | non-200 |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, res, rss, fds in samples:
        bad = res.failed + sum(v for k, v in res.statuses.items() if k != 200)
        lines.append(f"| {i + 1}{' (warm-up)' if i < warm else ''} | {res.total} | {res.rps:.0f} | {res.p99_ms:.1f} | "
                     f"{rss:.0f} | {fds} | {bad} |")  # fmt: skip
    lines += ["", f"Growth from window {warm + 1} (after warm-up) to the last: RSS "
                  f"{out['soak_rss_growth_pct']:+.1f}%, open fds {out['soak_fd_growth_pct']:+.1f}%, p99 "
                  f"{base[1].p99_ms:.1f} → {last[1].p99_ms:.1f} ms.", ""]  # fmt: skip
    return lines


def fuzz_5xx() -> str:
    path = ROOT / "bench" / "results" / "fuzz.md"
    if not path.exists():
        return "n/a"
    m = re.search(r"fuzz_5xx=(\S+)", path.read_text().strip().splitlines()[-1])
    return m.group(1) if m else "n/a"


def machine() -> list[str]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    load = os.getloadavg()
    return [f"- Machine: {os.cpu_count()} CPUs ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GB RAM, "
            f"{platform.platform()}, Python {platform.python_version()}.",
            f"- The 2 cores are shared with other sessions' work (load average at the end {load[0]:.1f}); every "
            "process of the topology (nginx, 2 x 3 Portico processes, Redis, PostgreSQL, 3 llm-katan, wrk) runs on "
            "them too, so the scaling factor measures contention more than Portico: on one host with 2 cores a "
            "second replica cannot add CPU."]  # fmt: skip


def main() -> None:
    topo = Topology(2, semantic=SEMANTIC)
    log(f"topology under {topo.root}")
    out: dict = {"load_rows": []}
    sections: list[str] = []
    t0 = time.time()
    try:
        topo.start()
        log("topology up")
        for phase in (scaling, limits, sharing, kill, rolling, redis_outage, pg_outage, brownout, soak):
            sections += phase(topo, out)
    finally:
        topo.close()
    lost_usage = out["kill_lost"] + out["sigterm_lost"]
    summary = (f"scale replicas=2 scaling={out['scaling']:.2f} overadmit_pct={out['overadmit_pct']:.2f} "
               f"kill_failed={out['kill_failed']} kill_inflight={out['kill_inflight']} "
               f"sigterm_failed={out['sigterm_failed']} lost_usage={lost_usage} "
               f"redis_outage_5xx={out['redis_outage_5xx']} pg_outage_lost={out['pg_outage_lost']} "
               f"fuzz_5xx={fuzz_5xx()} soak_rss_growth_pct={out['soak_rss_growth_pct']:.1f}")  # fmt: skip
    lines = [
        "# Scale-out and faults: nginx → 2 replicas (--workers 2) → Redis + PostgreSQL",
        "",
        f"`make bench-scale` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {(time.time() - t0) / 60:.0f} "
        f"min). Load: wrk, {CONN} connections, {SECONDS:.0f} s per phase unless said, non-streaming chat "
        "completions of distinct prompts (exact-cache misses) to llm-katan's echo backend.",
        "",
        *machine(),
        "",
        "## Load runs",
        "",
        "| run | requests | req/s | p50 ms | p99 ms | statuses | socket errors | note |",
        "|---|---|---|---|---|---|---|---|",
        *out["load_rows"],
        "",
        "Failures counted: 5xx answers and requests that got no answer (wrk read/write errors, timeouts). In flight "
        "on the killed replica: requests nginx had sent to it that had started and not finished at the kill (nginx "
        "access log). Lost rows: answered (200) request ids, from wrk's per-response log, with no usage row after "
        "the writers caught up (for the kill: after the replica was started again and replayed its spool).",
        "",
        *sections,
        summary,
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print(summary)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally: above still stops every process
    main()
