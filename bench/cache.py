"""Semantic and exact cache benchmark: Portico vs GPTCache on Quora question pairs, in one run.

Protocol (a cache, not a pair classifier), per the cache issue: pairs split 50/50 (tune / test, seeded); the
cache is filled with the test pairs' first questions and every second question is looked up. A hit is correct
when the returned entry is the lookup's labelled duplicate (or the identical text), wrong when it is its labelled
non-duplicate, and unlabelled when it is some other pair's question (reported both ways). Precision = correct
hits / labelled hits (and with unlabelled hits counted as wrong); recall = correct hits / lookups whose pair is a
duplicate. Everything tuned — the verifier, its threshold, the similarity floor, GPTCache's threshold — is tuned
on the tune half only.

Also measured: semantic lookup end to end (embed + search + verify) at 100k entries, GPTCache's lookup at the
test size, and an exact-cache hit through a running Portico over HTTP.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_data import embed_cached, load_split, minilm
from cache_eval import Outcome, score
from cache_exact import exact_hit_latency

from portico.cache.semantic import SemanticMatcher
from portico.cache.training import SCOPE, candidate_rows, fill, fit_verifier, labels, scored_rows
from portico.cache.verifier import threshold_for_precision

RESULTS = Path(__file__).resolve().parent / "results" / "cache.md"
TARGET = 0.95
K = 4


def serve(meta: list, probs: np.ndarray, n: int, threshold: float, sims: np.ndarray, floor: float) -> list:
    best: dict[int, tuple[float, int]] = {}
    for r, (i, j, _) in enumerate(meta):
        if sims[r] >= floor and probs[r] >= threshold and (i not in best or probs[r] > best[i][0]):
            best[i] = (float(probs[r]), j)
    return [best[i][1] if i in best else None for i in range(n)]


def cosine_only(meta: list, n: int, threshold: float) -> list:
    top: dict[int, tuple[float, int]] = {}
    for i, j, s in meta:
        if s >= threshold and (i not in top or s > top[i][0]):
            top[i] = (s, j)
    return [top[i][1] if i in top else None for i in range(n)]


def gptcache_run() -> dict:
    """GPTCache in its own process, so its native libraries (faiss) never share one with ours."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("cache_gptcache.py"))], capture_output=True,
                         text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"GPTCache run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    for line in out.stdout.splitlines():
        print(f"  {line}" if not line.startswith("{") else "  gptcache: done", flush=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["outcome"] = Outcome(**data["outcome"])
    return data


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def main() -> None:
    t_start = time.monotonic()
    tune, test = load_split()
    model = minilm()
    v = {n: embed_cached(t, n, model) for n, t in (("test_q1", test.q1), ("test_q2", test.q2),
                                                 ("tune_q1", tune.q1), ("tune_q2", tune.q2))}  # fmt: skip
    print(f"pairs: tune {len(tune.q1)}, test {len(test.q1)} ({int(test.label.sum())} duplicates)", flush=True)

    # --- tune: verifier and floor on the tune half only
    tindex, ttexts, _ = fill(tune.q1, v["tune_q1"])
    tmeta, _ = candidate_rows(tindex, tune.q2, v["tune_q2"], K)
    tsims = np.array([m[2] for m in tmeta], dtype=np.float32)
    ty = labels(tmeta, tune.q1, tune.q2, tune.label, ttexts)
    t0 = time.monotonic()
    tune_args = (tune.q1, tune.q2, tune.label, v["tune_q1"], v["tune_q2"])
    verifier = fit_verifier(*tune_args, k=K, target_precision=TARGET)  # the default: hand features
    with_net = fit_verifier(*tune_args, k=K, target_precision=TARGET, pair_model=True)  # the option, measured
    print(f"verifier trained in {time.monotonic() - t0:.0f} s", flush=True)
    cos_threshold = threshold_for_precision(tsims, ty, TARGET)
    print(f"verifier threshold {verifier.threshold:.3f}; cosine-only threshold {cos_threshold:.4f}", flush=True)

    # --- test
    index, texts, evecs = fill(test.q1, v["test_q1"])
    index.max_entries = 100_000  # room for the latency run below
    meta, x = candidate_rows(index, test.q2, v["test_q2"], K)
    sims = np.array([m[2] for m in meta], dtype=np.float32)
    probs = verifier.probability(scored_rows(verifier, meta, x, v["test_q2"], evecs))
    ours = score("Portico (MiniLM + verifier)", test, serve(meta, probs, len(test.q2), verifier.threshold, sims, 0.0),
                 texts)  # fmt: skip
    nprobs = with_net.probability(scored_rows(with_net, meta, x, v["test_q2"], evecs))
    net = score("Portico, verifier with the pair network (--pair-model)", test,
                serve(meta, nprobs, len(test.q2), with_net.threshold, sims, 0.0), texts)  # fmt: skip
    cos_only = score("Portico cosine only", test, cosine_only(meta, len(test.q2), cos_threshold), texts)

    # --- latency at 100k entries: pad the test index with the tune questions, then unit noise if short
    pad_texts = [t for t in dict.fromkeys(tune.q1 + tune.q2) if t not in set(texts)]
    pad_vecs = np.concatenate([v["tune_q1"], v["tune_q2"]])
    pos = {t: i for i, t in enumerate(tune.q1 + tune.q2)}
    need = 100_000 - len(index)
    pad_texts = pad_texts[:need]
    index.add_many(SCOPE, pad_texts, pad_vecs[[pos[t] for t in pad_texts]], [b"-1"] * len(pad_texts), 1e9)
    rng = np.random.default_rng(0)
    noise = max(0, 100_000 - len(index))
    if noise:
        nv = rng.normal(size=(noise, 384)).astype(np.float32)
        nv /= np.linalg.norm(nv, axis=1, keepdims=True)
        index.add_many(SCOPE, [f"noise {i}" for i in range(noise)], nv, [b"-1"] * noise, 1e9)
    matcher = SemanticMatcher(index, min_similarity=0.0, verifier=verifier, k=K)
    lat_total, lat_embed = [], []
    for q in test.q2[1000:1500]:
        t0 = time.perf_counter()
        qv = model.encode([q], normalize_embeddings=True, convert_to_numpy=True)[0].astype(np.float32)
        t1 = time.perf_counter()
        matcher.match(SCOPE, q, qv)
        t2 = time.perf_counter()
        lat_embed.append((t1 - t0) * 1000)
        lat_total.append((t2 - t0) * 1000)
    search_only = []
    for i in range(2000, 4000):
        t0 = time.perf_counter()
        matcher.match(SCOPE, test.q2[i], v["test_q2"][i])
        search_only.append((time.perf_counter() - t0) * 1000)
    print(f"100k index: {len(index)} entries ({noise} noise); lookup p50 {pct(lat_total, 50):.1f} ms "
          f"p99 {pct(lat_total, 99):.1f} ms; search+verify p99 {pct(search_only, 99):.2f} ms", flush=True)  # fmt: skip

    # --- GPTCache in the same run
    g = gptcache_run()
    gout: Outcome = g["outcome"]

    exact = exact_hit_latency()
    write_results(ours, net, with_net, cos_only, gout, g, verifier, cos_threshold, lat_total, lat_embed,
                  search_only, noise, exact, time.monotonic() - t_start)  # fmt: skip
    print(
        f"cache sem_precision={ours.precision:.3f} sem_recall={ours.recall:.3f} "
        f"gptcache_precision={gout.precision:.3f} gptcache_recall={gout.recall:.3f} "
        f"p99_ms_100k={pct(lat_total, 99):.1f} exact_hit_p99_ms={exact['p99']:.2f}"
    )


def write_results(ours, net, with_net, cos_only, gout, g, verifier, cos_threshold, lat_total, lat_embed,
                  search_only, noise, exact, took) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    rows = ["| cache | threshold (tuned on tune half) | hits | correct | wrong | unlabelled | precision (labelled) | "
            "precision (unlabelled = wrong) | precision (unlabelled = right) | recall | "
            "recall without identical-text hits |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for o, th in ((ours, f"verifier p ≥ {verifier.threshold:.3f}"), (net, f"verifier p ≥ {with_net.threshold:.3f}"),
                  (cos_only, f"cos ≥ {cos_threshold:.4f}"),
                  (gout, f"similarity_threshold {g['threshold']}")):  # fmt: skip
        rows.append(f"| {o.name} | {th} | {o.hits} | {o.correct} | {o.wrong} | {o.unlabelled} | {o.precision:.3f} | "
                    f"{o.precision_strict:.3f} | {o.precision_lenient:.3f} | {o.recall:.3f} | "
                    f"{o.recall_partner:.3f} |")  # fmt: skip
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    text = "\n".join([
        "# Cache benchmark (`make bench-cache`)", "",
        f"Quora question pairs, 50/50 tune/test split (seeded); {ours.lookups} test lookups, "
        f"{ours.positives} of them labelled duplicates. Protocol in `bench/cache.py`.", "",
        "## Semantic cache quality (test half)", "", *rows, "",
        "Identical-text hits: the lookup's text is stored verbatim as another pair's first question (Quora repeats "
        "questions); both caches get those. GPTCache's threshold was swept on the first 6,000 tune pairs "
        "(the lowest of 0.95 … 0.99 reaching precision 0.95 there); a full-size sweep costs minutes per value. "
        "Unlabelled hits return some other pair's question: their truth is unknown, hence the two bounds. "
        "The verifier's default is boosted trees over hand features (numbers, question words, negation, one-sided "
        "words, similarity and its margin); the pair-network row adds a small network over the two embeddings "
        "([q*c, |q-c|], cross-fitted, its score stacked into the trees) — an option (`--pair-model`), off by "
        "default unless it earns its training time on the operator's data.", "",
        "## Latency", "",
        "| measurement | p50 ms | p99 ms |", "|---|---|---|",
        f"| Portico semantic lookup at 100k entries: embed + search + verify | {pct(lat_total, 50):.2f} | "
        f"{pct(lat_total, 99):.2f} |",
        f"| of which embedding the query (MiniLM, 1 thread) | {pct(lat_embed, 50):.2f} | {pct(lat_embed, 99):.2f} |",
        f"| Portico search + verify only (query embedding given, as in the pipeline where it is shared) | "
        f"{pct(search_only, 50):.3f} | {pct(search_only, 99):.3f} |",
        f"| GPTCache lookup at {ours.lookups} entries, embedding included (300 lookups) | {pct(g['live_ms'], 50):.2f} "
        f"| {pct(g['live_ms'], 99):.2f} |",
        f"| GPTCache lookup, embedding precomputed | {pct(g['search_ms'], 50):.2f} | {pct(g['search_ms'], 99):.2f} |",
        f"| Portico exact-cache hit over HTTP (openai-shaped request, keep-alive client, {exact['n']} requests) | "
        f"{exact['p50']:.2f} | {exact['p99']:.2f} |", "",
        f"The 100k index holds the test questions, then tune-half questions, then {noise} random unit vectors. "
        "The verifier was trained on the tune half inside this run and is not shipped (QQP is licensed for "
        "non-commercial use).", "",
        "## Machine", "",
        f"- CPU: {cpu}, {os.cpu_count()} cores; {platform.platform()}; Python {platform.python_version()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; run took {took / 60:.1f} min; "
        f"load average after: {os.getloadavg()[0]:.2f} (the machine is shared; compare within one run)",
    ])  # fmt: skip
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
