"""Cacheability benchmark: how well the rules, the classifier and both together tell user-specific or
time-sensitive queries (do not cache) from general ones, how often they flag general Quora questions, and what
the check costs per request.

    make bench-cacheability   # or, on a shared machine:
    flock /tmp/portico-bench.lock taskset -c 1 .venv/bin/python bench/cacheability.py

Quality: the packaged held-out sets (``cacheability_test.jsonl``, ``cacheability_test2.jsonl``; never trained on)
and 5-fold out-of-fold predictions on the training set. QQP questions are read for the flag rate only: QQP is
licensed for non-commercial use, so none of its text is trained on or written to the results.
Writes bench/results/cacheability.md; the last line printed is the summary.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from portico.cache.cacheability import QueryFilter, compile_patterns, decide
from portico.cache.cacheability_model import (
    DEFAULT_MODEL,
    TEST_DATA,
    TRAIN_DATA,
    CacheabilityModel,
    _design,
    read_examples,
)
from portico.protocol.chat import ChatCompletionRequest

RESULTS = Path(__file__).parent / "results" / "cacheability.md"
TEST2_DATA = TEST_DATA.with_name("cacheability_test2.jsonl")
QQP = Path(__file__).resolve().parents[2] / "shared" / "data" / "paraphrase" / "qqp" / "qqp_pairs_60k.jsonl.gz"
QQP_N = 2000


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    flagged: int
    recall_user: float
    recall_time: float
    false_flag_rate: float  # share of general (cacheable) queries flagged


def kinds(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line).get("kind", "") for line in f if line.strip()]


def score(pred: Sequence[bool], y: Sequence[int], kind: Sequence[str]) -> Scores:
    p, t = np.asarray(pred, bool), np.asarray(y, bool)
    k = np.asarray(kind)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return Scores(prec, rec, f1, int(p.sum()), float(p[k == "user"].mean()), float(p[k == "time"].mean()),
                  float(p[k == "general"].mean()))  # fmt: skip


def predictions(texts: Sequence[str], rules: re.Pattern[str], probs: Sequence[float], thr: float
                ) -> dict[str, list[bool]]:  # fmt: skip
    r = [rules.search(t) is not None for t in texts]
    c = [p >= thr for p in probs]
    return {
        "rules only": r,
        "classifier only": c,
        "combined (either says don't cache)": [a or b for a, b in zip(r, c, strict=True)],
    }


def table(rows: dict[str, Scores]) -> list[str]:
    out = ["| check | precision | recall | F1 | flagged | recall user-specific | recall time-sensitive | "
           "general queries flagged |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in rows.items():
        out.append(f"| {name} | {s.precision:.3f} | {s.recall:.3f} | **{s.f1:.3f}** | {s.flagged} | "
                   f"{s.recall_user:.3f} | {s.recall_time:.3f} | {s.false_flag_rate:.3f} |")  # fmt: skip
    return out


def out_of_fold(texts: list[str], y: list[int], c: float, folds: int) -> np.ndarray:
    """The training set's out-of-fold probabilities with the shipped model's C (as train() chose it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, _ = _design(texts)
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    return cross_val_predict(LogisticRegression(C=c, max_iter=2000), x, np.asarray(y), cv=cv,
                             method="predict_proba")[:, 1]  # fmt: skip


def qqp_questions(n: int) -> list[str]:
    qs: set[str] = set()
    with gzip.open(QQP, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            qs.update((row["question1"], row["question2"]))
    ordered = sorted(qs)
    random.Random(0).shuffle(ordered)
    return ordered[:n]


def per_call_us(fn: Callable[[str], object], texts: Sequence[str], passes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per call: wall time and this thread's CPU time (µs). On a shared machine the wall-time tail is mostly
    the scheduler running someone else; CPU time is what the call itself costs."""
    for t in texts[:200]:
        fn(t)  # warm up
    wall, cpu = [], []
    for _ in range(passes):
        for t in texts:
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            fn(t)
            t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
    return np.asarray(wall) / 1000.0, np.asarray(cpu) / 1000.0


def main() -> None:
    started = time.monotonic()
    t0 = time.perf_counter()
    model = CacheabilityModel.load()
    load_ms = (time.perf_counter() - t0) * 1000
    rules = compile_patterns(None)
    assert rules is not None
    thr = model.threshold

    train_x, train_y = read_examples(TRAIN_DATA)
    oof = out_of_fold(train_x, train_y, float(model.meta["C"]), int(model.meta["cv_folds"]))
    sections: dict[str, dict[str, Scores]] = {}
    sections["train, 5-fold out-of-fold"] = {
        k: score(v, train_y, kinds(TRAIN_DATA)) for k, v in predictions(train_x, rules, oof.tolist(), thr).items()
    }
    held: dict[str, tuple[list[str], list[int], list[str], list[float]]] = {}
    for name, path in (("held-out test set A", TEST_DATA), ("held-out test set B", TEST2_DATA)):
        x, y = read_examples(path)
        probs = [model.probability(t) for t in x]
        held[name] = (x, y, kinds(path), probs)
        sections[name] = {k: score(v, y, kinds(path)) for k, v in predictions(x, rules, probs, thr).items()}

    qqp = qqp_questions(QQP_N) if QQP.exists() else []
    qprobs = [model.probability(q) for q in qqp]
    qflags = {k: float(np.mean(v)) for k, v in predictions(qqp, rules, qprobs, thr).items()} if qqp else {}

    # Threshold sweep: for an operator choosing skip_threshold (the shipped one was chosen on train only).
    ax, ay, ak, ap = held["held-out test set A"]
    sweep = ["| skip_threshold | test A precision | test A recall | test A F1 (combined) | QQP flagged (combined) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for t in sorted({0.3, 0.4, 0.5, round(thr, 3), 0.6, 0.7, 0.8, 0.9}):
        s = score(predictions(ax, rules, ap, t)["combined (either says don't cache)"], ay, ak)
        qf = np.mean(predictions(qqp, rules, qprobs, t)["combined (either says don't cache)"]) if qqp else float("nan")
        mark = " (shipped, from cross-validation on train)" if t == round(thr, 3) else ""
        sweep.append(f"| {t}{mark} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {qf:.3f} |")

    # Latency, one query at a time as the cache step calls it.
    texts = ax + list(qqp)
    flt = QueryFilter(rules, model, thr)
    req = ChatCompletionRequest.model_validate({"model": "m", "temperature": 0,
                                                "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
    lat = {
        "classifier alone (`CacheabilityModel.probability`)": per_call_us(model.probability, texts),
        "rules alone (the default patterns)": per_call_us(rules.search, texts),
        "rules + classifier (`QueryFilter.reason`)": per_call_us(flt.reason, texts),
        "whole `decide()` for a deterministic request": per_call_us(
            lambda q: decide(req, q, cache_control=None, cache_sampled=False, skip=flt), texts),
        "classifier on an 8,000-character prompt (scores its first and last 200 characters)": per_call_us(
            model.probability, [" ".join(texts[i : i + 80]) [:8000] for i in range(0, 800, 80)], passes=50),
    }  # fmt: skip
    lengths = [len(t) for t in texts]

    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    a_n, a_pos = len(ay), sum(ay)
    b_y = held["held-out test set B"][1]
    lines = [
        "# Cacheability: rules and classifier (`make bench-cacheability`, `bench/cacheability.py`)", "",
        "Which queries must never be cached because their answer depends on who asks or when "
        "(`src/portico/cache/cacheability.py`, `cacheability_model.py`; the labelling policy is in the latter's "
        "docstring). Positive class: **do not cache**.", "",
        f"- Training set: {len(train_y)} hand-written queries ({sum(train_y)} do-not-cache), "
        "`src/portico/cache/data/cacheability_train.jsonl`.",
        f"- Held-out test set A: {a_n} queries ({a_pos} do-not-cache), written separately (other topics and "
        "phrasings, no paraphrases of training items), `cacheability_test.jsonl`.",
        f"- Held-out test set B: {len(b_y)} queries ({sum(b_y)} do-not-cache), written later than A, after its "
        "first revisions (see History), `cacheability_test2.jsonl`.",
        f"- Shipped model: C={model.meta['C']}, threshold {thr:.3f} (best out-of-fold F1 {model.meta['cv_f1']:.3f} "
        f"in {model.meta['cv_folds']}-fold cross-validation on the training set), {len(model.weights)} n-gram "
        f"weights, {DEFAULT_MODEL.stat().st_size / 1024:.0f} KB, loads in {load_ms:.0f} ms.", "",
    ]  # fmt: skip
    for name, rows in sections.items():
        lines += [f"## {name}", "", *table(rows), ""]
    lines += [
        "How they combine: either one saying \"don't cache\" is enough (rules first; the classifier only runs when "
        "no rule matched). Combined recall is what protects users; the rules add little recall on the held-out "
        "sets because those were written without the rules' trigger words in mind — in traffic that says "
        "\"my order\" or \"today\" they fire first and cost a few µs.", "",
        "History, for honesty: test set A was scored after each revision of the model. The first model (843 "
        "training queries, binary features) had classifier F1 0.935 on A but flagged 17% of QQP questions. "
        "Revisions since: (1) general questions added in the styles it over-flagged there (longer first-person "
        "advice, \"is there…\", \"what's the best…\", \"when did…\"; none copied from QQP or test A); (2) "
        "\"should I\" dropped from the default rules (it matched 29 general training questions and no personal one "
        "the rest missed); (3) n-gram counts instead of binary features, for speed (one lookup per word); "
        "(4) contractions expanded (\"What's the capital of France?\" scored 0.84 because \"what's\" was common "
        "in the time-sensitive training questions) and 40 follow-up, instruction and organisation-policy queries "
        "added (\"tell me more\", \"what is our refund window\"); (5) the possessive rule (\"my order\") no "
        "longer fires inside a how-to (\"how do I reset my password\"; on the training set that changed 7 general "
        "questions and no personal one). Test set B was written after (2) and scored after (2), (3), (4) and (5): "
        "combined F1 0.897, 0.897, 0.912, then the number above.",
        "",
        f"## Flag rate on general questions: {len(qqp)} QQP questions", "",
        "Quora questions are general (advice, facts, opinions); a few are genuinely time-sensitive or personal, "
        "so the right rate is small but not zero. Measurement only.", "",
        "| check | flagged (do not cache) |", "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in qflags.items()], "",
        "## Threshold sweep (informational)", "", *sweep, "",
        "## Cost per query", "",
        f"Measured one call at a time, {len(texts)} queries (test set A and the QQP questions, median "
        f"{int(np.median(lengths))} characters), 5 passes, pinned to one core under the shared benchmark lock.",
        "",
        "| what | wall p50 µs | wall p99 µs | CPU p50 µs | CPU p99 µs | CPU mean µs |", "|---|---|---|---|---|---|",
        *[f"| {k} | {np.percentile(w, 50):.1f} | {np.percentile(w, 99):.1f} | {np.percentile(c, 50):.1f} | "
          f"{np.percentile(c, 99):.1f} | {c.mean():.1f} |" for k, (w, c) in lat.items()],
        "",
        "No embedding is needed: the classifier reads word and character n-grams from the text. Sampled requests "
        "(temperature unset or > 0) are decided before the query is looked at, so they pay none of this.", "",
        "## Machine", "",
        f"- CPU: {cpu}, {os.cpu_count()} cores; {platform.platform()}; Python {platform.python_version()}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; run took {time.monotonic() - started:.0f} s; load average "
        f"after: {os.getloadavg()[0]:.2f} (the machine is shared)",
    ]  # fmt: skip
    a = sections["held-out test set A"]
    b = sections["held-out test set B"]
    comb = "combined (either says don't cache)"
    summary = (
        f"cacheability f1_rules={a['rules only'].f1:.3f} f1_classifier={a['classifier only'].f1:.3f} "
        f"f1_combined={a[comb].f1:.3f} f1_combined_b={b[comb].f1:.3f} "
        f"qqp_flagged={qflags.get(comb, float('nan')):.3f} "
        f"classifier_cpu_p99_us={np.percentile(next(iter(lat.values()))[1], 99):.1f}"
    )
    RESULTS.write_text("\n".join([*lines, "", summary]) + "\n")
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
