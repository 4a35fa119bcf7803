"""Preference-router benchmark: cost/quality on RouteLLM's golden-labelled MMLU and GSM8K, human pairwise
accuracy on PRD's Vicuna-80 ratings, and decision latency. Writes bench/results/routing.md.

Protocol: train on a random 80 % of MMLU (seed 0, contaminated prompts dropped), test on the held-out 20 % and on
GSM8K (transfer, never seen in training or tuning). Hyperparameters were chosen by 5-fold CV inside the 80 %; the
same run reports that CV number. Baselines run on the same split: random, per-subject prior, prompt length and
logistic regression on MiniLM embeddings. APGR = mean performance-gap-recovered over strong-call shares 0-100 %.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import routing_attempts as ex  # noqa: E402
import routing_data as data  # noqa: E402

from portico.routing.evaluation import Curve, cost_quality_curve, random_apgr  # noqa: E402
from portico.routing.features import prompt_features  # noqa: E402
from portico.routing.preference import PairwiseRecord, PreferenceModel, TrainConfig, train  # noqa: E402

SEED = ex.SEED
OUT = Path(__file__).resolve().parent / "results" / "routing.md"
LOCK = "/tmp/portico-bench.lock"  # shared by every latency measurement on this machine (one at a time)
# Vicuna-80 has 80 questions: a 150-neighbour kNN would be a constant, so k=10; per-model prompt factors (the
# RouteLLM-style matrix factorisation) are chosen by inner CV on each fold's training ratings.
HUMAN_CANDIDATES = {
    "stack only": TrainConfig(k=10),
    "stack + factors(8)": TrainConfig(k=10, factor_dims=8),
    "stack + factors(16)": TrainConfig(k=10, factor_dims=16),
}


def _human_record(r: dict) -> PairwiseRecord:
    winner = {"model_1": "model_a", "model_2": "model_b"}.get(r["winner"], "tie")
    return PairwiseRecord(r["question"], r["model_1"], r["model_2"], winner)


def _human_fit(train_rows: list[dict], cfg: TrainConfig, lookup: dict) -> PreferenceModel:
    return train([_human_record(r) for r in train_rows], lambda ps: np.stack([lookup[p] for p in ps]), config=cfg)


def _human_hits(m: PreferenceModel, r: dict, lookup: dict) -> tuple[bool, bool]:
    a, b = r["model_1"], r["model_2"]
    truth = r["winner"] == "model_1"
    return (m.p_bt(a, b) > 0.5) == truth, (m.p_wins(a, b, lookup[r["question"]], r["question"]) > 0.5) == truth


def _folds(rows: list[dict], by_question: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not by_question:
        return rng.permutation(len(rows)) % 5
    questions = sorted({r["question_id"] for r in rows})
    fold_of = dict(zip(rng.permutation(questions).tolist(), np.arange(len(questions)) % 5, strict=True))
    return np.asarray([fold_of[r["question_id"]] for r in rows])


def _select(rows: list[dict], by_question: bool, lookup: dict) -> str:
    """The HUMAN_CANDIDATES entry with the best non-tie accuracy by 5-fold CV inside ``rows`` (training only)."""
    folds = _folds(rows, by_question, SEED + 1)
    best, best_acc = "", -1.0
    for name, cfg in HUMAN_CANDIDATES.items():
        hits = n = 0
        for f in range(5):
            m = _human_fit([r for r, g in zip(rows, folds, strict=True) if g != f], cfg, lookup)
            for r, g in zip(rows, folds, strict=True):
                if g == f and r["winner"] != "tie":
                    hits += _human_hits(m, r, lookup)[1]
                    n += 1
        if hits / n > best_acc:
            best, best_acc = name, hits / n
    return best


def human_accuracy(rows: list[dict], box: list, by_question: bool = True) -> dict:
    """Non-tie accuracy of Bradley-Terry vs the prompt-aware predictor by 5-fold CV: split by question (test
    questions never seen in training) or by rating (questions seen, other pairs and reviewers). The prompt-aware
    configuration is chosen per fold by an inner CV on that fold's training ratings."""
    qtext = {r["question_id"]: r["question"] for r in rows}
    texts = [qtext[q] for q in sorted(qtext)]
    lookup = dict(zip(texts, data.embed_cached("vicuna80", texts, box), strict=True))
    folds = _folds(rows, by_question, SEED)
    by_cat: dict[str, list[int]] = {}
    chosen = []
    for fold in range(5):
        train_rows = [r for r, f in zip(rows, folds, strict=True) if f != fold]
        name = _select(train_rows, by_question, lookup)
        chosen.append(name)
        m = _human_fit(train_rows, HUMAN_CANDIDATES[name], lookup)
        for r, f in zip(rows, folds, strict=True):
            if f == fold and r["winner"] != "tie":
                bt, pa = _human_hits(m, r, lookup)
                c = by_cat.setdefault(r["category"], [0, 0, 0])
                c[0] += bt
                c[1] += pa
                c[2] += 1
    total = sum(c[2] for c in by_cat.values())
    return {
        "bt": sum(c[0] for c in by_cat.values()) / total,
        "prompt": sum(c[1] for c in by_cat.values()) / total,
        "n": total,
        "cats": [(k, v[0] / v[2], v[1] / v[2], v[2]) for k, v in sorted(by_cat.items())],
        "chosen": chosen,
    }


def _timed(fn, args: list[tuple], passes: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and thread-CPU seconds of ``fn(*a)`` for every a, ``passes`` times over (shape: passes, n)."""
    wall = np.zeros((passes, len(args)))
    cpu = np.zeros((passes, len(args)))
    for k in range(passes):
        for i, a in enumerate(args):
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(*a)
            wall[k, i] = time.perf_counter() - t0
            cpu[k, i] = time.thread_time() - c0
    return wall, cpu


def latency(
    model: PreferenceModel, emb: np.ndarray, texts: list[str], domains: list[str], n: int = 2000, passes: int = 5
) -> dict:
    """One decision given the embedding, in ms, over ``n`` prompts, ``passes`` times: wall-clock and thread-CPU p50/p99
    over all decisions, and the p99 over prompts of each prompt's fastest pass (its cost without other processes'
    interference); plus each part's p50. Holds the machine's bench lock and runs pinned to one core, so only one
    timing runs at a time and the scheduler does not move it mid-call."""
    import fcntl
    import gc

    n = min(n, len(texts))
    args = [(emb[i], texts[i], domains[i]) for i in range(n)]
    pairs = [a[:2] for a in args]  # what an expert reads
    single = [(emb[i][None, :], [texts[i]], [domains[i]]) for i in range(n)]
    with open(LOCK, "w") as lock:
        t_wait = time.perf_counter()
        fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.perf_counter() - t_wait
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(before)})  # one core (core 1 on this 2-core machine)
        gc.disable()
        try:
            for a in args[:200]:
                model.p_strong_wins(*a)  # warm caches and numpy's code paths
            wall, cpu = _timed(model.p_strong_wins, args, passes)
            # Paced: a 1 ms sleep before each decision, as when requests arrive one by one, rather than the
            # back-to-back loop above that makes this process a CPU hog the scheduler preempts every time slice.
            paced = np.zeros(n)
            for i, a in enumerate(args):
                time.sleep(0.001)
                t0 = time.perf_counter()
                model.p_strong_wins(*a)
                paced[i] = time.perf_counter() - t0
            parts = {
                "hand-made features, domain and the stack": np.median(_timed(model.prompt_score, args, 1)[1])
                - sum(np.median(_timed(x.score, pairs, 1)[1]) for x in model.experts),
                **{f"{x.kind} expert": np.median(_timed(x.score, pairs, 1)[1]) for x in model.experts},
                "batch path, 1 prompt (calibration)": np.median(_timed(model.p_strong_wins_batch, single, 1)[1]),
            }
            load = os.getloadavg()[0]
        finally:
            gc.enable()
            os.sched_setaffinity(0, before)
    ms = lambda x, q: float(np.percentile(x, q) * 1e3)  # noqa: E731
    return {
        "n": n * passes,
        "p50": ms(wall, 50),
        "p99": ms(wall, 99),
        "max": float(wall.max() * 1e3),
        "cpu50": ms(cpu, 50),
        "cpu99": ms(cpu, 99),
        "best99": ms(wall.min(axis=0), 99),
        "paced50": ms(paced, 50),
        "paced99": ms(paced, 99),
        "parts": {k: float(v * 1e3) for k, v in parts.items()},
        "load": load,
        "core": max(before),
        "lock_wait_s": waited,
    }


def machine() -> str:
    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def curve_row(name: str, c: Curve) -> str:
    pts = " | ".join(f"{c.accuracy[i]:.3f}" for i in range(0, 101, 10))
    return f"| {name} | {c.apgr:.3f} | {c.share_for(0.5):.0%} | {c.share_for(0.8):.0%} | {pts} |"


def main() -> None:
    import torch

    torch.set_num_threads(1)
    box: list = []
    mmlu, gsm = data.load_golden("mmlu"), data.load_golden("gsm8k")
    em, eg = data.embed_cached("mmlu", mmlu.prompts, box), data.embed_cached("gsm8k", gsm.prompts, box)
    tr, te = ex.split(len(mmlu.prompts))
    sp = ex.Split(mmlu, gsm, em, eg, tr, te)
    te_text = sp.texts(te)
    gain = mmlu.strong_ok - mmlu.weak_ok

    t0 = time.perf_counter()
    model = sp.fit(tr)
    train_s = time.perf_counter() - t0
    cv = ex.cv_apgr(sp)

    proxy = ex.unseen_subject_proxy(sp)
    tried = ex.attempts(sp, model, proxy)
    few = ex.few_shot_gsm8k(sp, model)
    curve = ex.few_shot_curve(sp)
    splits = ex.other_splits(sp)
    subjects = sp.subjects
    lr = ex.embedding_lr(em[tr], gain[tr])
    scores = {
        "ours": (sp.score_mmlu(model, te), sp.score_gsm(model)),
        "per-subject prior": (ex.subject_prior(sp, tr, te), np.zeros(len(gsm.prompts))),
        "prompt length": (
            np.asarray([prompt_features(t)[0] for t in te_text]),
            np.asarray([prompt_features(t)[0] for t in gsm.prompts]),
        ),
        "embedding LR": (lr.decision_function(em[te]), lr.decision_function(eg)),
    }
    curves = {
        name: (
            cost_quality_curve(s_m, mmlu.weak_ok[te], mmlu.strong_ok[te]),
            cost_quality_curve(s_g, gsm.weak_ok, gsm.strong_ok),
        )
        for name, (s_m, s_g) in scores.items()
    }
    rand_m = random_apgr(mmlu.weak_ok[te], mmlu.strong_ok[te])
    rand_g = random_apgr(gsm.weak_ok, gsm.strong_ok)
    baselines = [k for k in curves if k != "ours"]
    best_m = max(baselines, key=lambda k: curves[k][0].apgr)
    best_g = max(baselines, key=lambda k: curves[k][1].apgr)

    # Per subject: within-subject APGR (ranking inside one subject, what transfer to one domain needs).
    per_subject = []
    for s in sorted(set(subjects[te])):
        sel = subjects[te] == s
        w, st = mmlu.weak_ok[te][sel], mmlu.strong_ok[te][sel]
        if abs(st.mean() - w.mean()) < 0.05 or sel.sum() < 30:
            continue  # too small a gap or sample to say anything
        per_subject.append(
            (
                s,
                int(sel.sum()),
                cost_quality_curve(scores["ours"][0][sel], w, st).apgr,
                cost_quality_curve(scores["embedding LR"][0][sel], w, st).apgr,
            )
        )

    all_splits = [
        ("0 (headline)", curves["ours"][0].apgr, curves["per-subject prior"][0].apgr, curves["prompt length"][0].apgr),
        *splits,
    ]
    human_rows = data.load_human()
    hq = human_accuracy(human_rows, box, by_question=True)
    hr = human_accuracy(human_rows, box, by_question=False)
    acc_bt, acc_pa = hq["bt"], hq["prompt"]
    lat = latency(model, em[te], te_text, [str(x) for x in subjects[te]])
    p99 = lat["p99"]

    lines = [
        "# Preference router benchmark",
        "",
        f"`make bench-routing` ({Path(__file__).name}). {machine()}.",
        "",
        f"Data: RouteLLM golden labels — MMLU {len(mmlu.prompts)} prompts ({mmlu.dropped} contaminated dropped), "
        f"train {len(tr)} / held-out {len(te)} (seed {SEED}); GSM8K {len(gsm.prompts)} ({gsm.dropped} dropped), "
        f"transfer only. Weak = Mixtral-8x7B, strong = GPT-4-1106. Training took {train_s:.0f} s; our router's APGR by "
        f"5-fold CV inside the training 80 %: {cv:.3f}.",
        "",
        "Router: Bradley-Terry ratings + a ridge stack of three prompt experts (kNN k=150 on MiniLM embeddings in a "
        "64-dimensional PCA projection, ridge on TF-IDF word uni/bigrams, ridge on the embedding), the prompt's "
        "length (the other hand-made features — numbers, math and code markers — lowered CV APGR inside the "
        "training split, so the default leaves them out) and the record's domain — here the MMLU subject, which "
        "the per-subject-prior baseline uses too; in Portico the request's application — as its mean outcome "
        "shrunk towards the overall one (CV 0.710 against 0.703 without it when this was chosen; the attempts "
        "table has this run's number). A subject with ≥ 100 training prompts also gets its own correction of the "
        "score when that helps by CV inside the subject (the default; the attempts table has the router without). "
        "GSM8K is a domain the router has no record of: it gets the overall mean and no correction.",
        "",
        "## APGR (higher is better; random ≈ 0.5)",
        "",
        "| router | held-out MMLU | GSM8K (transfer) |",
        "|---|---|---|",
        f"| random (mean of 20) | {rand_m:.3f} | {rand_g:.3f} |",
        *(f"| {k} | {curves[k][0].apgr:.3f} | {curves[k][1].apgr:.3f} |" for k in curves),
        "",
        "The per-subject prior has no subject for GSM8K (one unseen domain), so there it is a constant = random.",
        "",
        f"Transfer to an unseen domain, measured inside the training split (5 folds of whole subjects, mean "
        f"within-subject APGR over {proxy['subjects']} held-out subjects): ours {proxy['ours']:.3f}, prompt length "
        f"{proxy['length']:.3f}. Ranking inside one unseen domain — what GSM8K asks — is the weak spot of a router "
        "trained on other domains.",
        "",
        "## Attempts at the APGR goals (trained on the MMLU training 80 % only)",
        "",
        "Each is judged inside the training split only — by 5-fold CV, or for the blends with prompt length by the "
        "unseen-subject proxy above (mean within-subject APGR on held-out subjects); held-out MMLU and GSM8K are "
        f"reported for every attempt, whatever they are. For reference, the default router: CV {cv:.3f}, proxy "
        f"{proxy['ours']:.3f}, held-out MMLU {curves['ours'][0].apgr:.3f}, GSM8K {curves['ours'][1].apgr:.3f}. "
        "The blends add w x the prompt length's percentile among the training prompts to our score's percentile.",
        "",
        "| attempt | inside the training split | held-out MMLU | GSM8K (transfer) |",
        "|---|---|---|---|",
        *(f"| {n} | {c} | {m_:.3f} | {g_:.3f} |" for n, c, m_, g_ in tried),
        "",
        "CV differences of a few thousandths are within the fold noise: with the difficulty features against "
        "without, over fold seeds 0, 1 and 2 (measured outside this script on 2026-12-06): 0.713 / 0.711 / 0.706 "
        "against 0.709 / 0.712 / 0.708, so the default keeps the simpler feature set.",
        "",
        "## Per-domain calibration from a few labelled prompts of the new domain (GSM8K)",
        "",
        f"What a deployment does once feedback arrives for a new application: the router retrained on the MMLU "
        f"training 80 % plus a random {ex.GSM_DEV:.0%} of GSM8K ({few['dev']} prompts, domain `gsm8k`), scored "
        f"on the other {few['test']} GSM8K prompts; {len(few['runs'])} random dev/test partitions. By default a "
        "domain with ≥ 100 prompts gets its own ridge correction of the residual on [score, length features] when "
        "that lowers its squared error by CV inside its own prompts (here kept in "
        f"{sum(r['kept'] for r in few['runs'])} of {len(few['runs'])} partitions). The correction's features and "
        "alpha were picked once, by 5-fold CV (5 repeats) inside partition 0's dev part on the transfer router's "
        "scores, outside this script: length 0.644 at alpha 100 or 300, + numbers and sentences 0.630, all "
        "features 0.627. The embedding LR baseline gets the same dev labels. This is not the transfer number the "
        "goal asks for; it is how far a few hundred labels of the domain go.",
        "",
        "| router, on GSM8K's test part | mean ± std | "
        + " | ".join(f"partition {k}" for k in range(len(few["runs"])))
        + " |",
        "|---|---|" + "---|" * len(few["runs"]),
        *(
            f"| {name} | {few['mean'][key]:.3f} ± {few['std'][key]:.3f} | "
            + " | ".join(f"{r[key]:.3f}" for r in few["runs"])
            + " |"
            for name, key in ex.FEW_SHOT_ROWS.items()
        ),
        "",
        f"The corrected router of partition 0 on held-out MMLU: {few['corrected_mmlu']:.3f}.",
        "",
        "How many labels the domain needs (the same partitions, other dev shares; test = the rest):",
        "",
        "| dev share | labelled GSM8K prompts | ours + per-domain correction | prompt length |",
        "|---|---|---|---|",
        *(
            f"| {sh:.0%} | {nd} | {om:.3f} ± {osd:.3f} | {lm:.3f} ± {lsd:.3f} |"
            for sh, nd, om, osd, lm, lsd in sorted(
                [
                    *curve,
                    (
                        ex.GSM_DEV,
                        few["dev"],
                        few["mean"]["corrected"],
                        few["std"]["corrected"],
                        few["mean"]["length"],
                        few["std"]["length"],
                    ),
                ]
            )
        ),
        "",
        "## How much the held-out MMLU number moves with the split",
        "",
        "The same recipe trained and scored on other random 80/20 splits of MMLU (the headline stays on seed 0, "
        "fixed before any of this was run), beside the per-subject prior and prompt length on the same split:",
        "",
        "| split seed | ours | per-subject prior | prompt length |",
        "|---|---|---|---|",
        *(f"| {s} | {a:.3f} | {b:.3f} | {c:.3f} |" for s, a, b, c in all_splits),
        f"| **mean ± std over {len(all_splits)} splits** | "
        + " | ".join(
            f"{np.mean([x[k] for x in all_splits]):.3f} ± {np.std([x[k] for x in all_splits]):.3f}" for k in (1, 2, 3)
        )
        + " |",
        "",
        "## Cost/quality curves: accuracy at strong-call share 0 %, 10 %, …, 100 %",
        "",
        "| router | APGR | share for 50 % PGR | share for 80 % PGR | "
        + " | ".join(f"{s}%" for s in range(0, 101, 10))
        + " |",
        "|---|---|---|---|" + "---|" * 11,
        *(curve_row(f"{k} — MMLU", curves[k][0]) for k in curves),
        *(curve_row(f"{k} — GSM8K", curves[k][1]) for k in curves),
        "",
        "## Within-subject APGR on held-out MMLU (subjects with ≥ 30 prompts and a gap ≥ 5 points)",
        "",
        "| subject | prompts | ours | embedding LR |",
        "|---|---|---|---|",
        *(f"| {s} | {n} | {a:.3f} | {b:.3f} |" for s, n, a, b in per_subject),
        f"| **mean** | | {np.mean([x[2] for x in per_subject]):.3f} | {np.mean([x[3] for x in per_subject]):.3f} |",
        "",
        "## Human pairwise ratings (PRD Vicuna-80): non-tie accuracy",
        "",
        "5-fold CV two ways: **by question** (the test questions are never seen in training: the headline) and **by "
        "rating** (questions seen, other model pairs and reviewers — closer to an arena where prompt types recur). "
        "Bradley-Terry always predicts the higher-rated model; the prompt-aware predictor adds the prompt score and, "
        "when an inner CV on the fold's training ratings picks them, per-model prompt factors "
        f"(chosen per fold — by question: {', '.join(hq['chosen'])}; by rating: {', '.join(hr['chosen'])}).",
        "",
        "| category | BT (question) | prompt-aware (question) | BT (rating) | prompt-aware (rating) | ratings |",
        "|---|---|---|---|---|---|",
        *(
            f"| {c} | {a:.3f} | {b:.3f} | {a2:.3f} | {b2:.3f} | {n} |"
            for (c, a, b, n), (_, a2, b2, _) in zip(hq["cats"], hr["cats"], strict=True)
        ),
        f"| **all** | **{hq['bt']:.3f}** | **{hq['prompt']:.3f}** | **{hr['bt']:.3f}** | **{hr['prompt']:.3f}** "
        f"| {hq['n']} |",
        "",
        "## Decision latency given the query embedding (features + experts + stack, one prompt at a time)",
        "",
        f"{lat['n']:,} decisions (2,000 held-out MMLU prompts, 5 passes), pinned to core {lat['core']} under the "
        f"machine's bench lock (`{LOCK}`), load average {lat['load']:.1f} on {os.cpu_count()} cores (other "
        "engineers' jobs share the machine):",
        "",
        "| measure | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| wall clock, every decision (the headline p99_ms) | {lat['p50']:.3f} | {lat['p99']:.3f} |",
        f"| CPU time of the calling thread, every decision | {lat['cpu50']:.3f} | {lat['cpu99']:.3f} |",
        f"| wall clock, each prompt's fastest of 5 passes | | {lat['best99']:.3f} |",
        f"| wall clock, paced: 2,000 decisions, one after each 1 ms sleep | {lat['paced50']:.3f} | "
        f"{lat['paced99']:.3f} |",
        "",
        f"Slowest single decision {lat['max']:.2f} ms. The gap between wall clock and CPU time is time the OS gave "
        "to other processes mid-call: the back-to-back loop is a CPU hog that the scheduler preempts once per time "
        "slice whatever the call costs, so its wall p99 measures the machine's load; the paced row is how a "
        "gateway that wakes for each request sees it. CPU-time p50 per part:",
        "",
        "| part | p50 ms |",
        "|---|---|",
        *(f"| {k} | {v:.3f} |" for k, v in lat["parts"].items()),
        "",
        "Serving is numpy only (no torch, no scikit-learn): the kNN expert is one float32 matrix-vector product "
        "over the PCA-projected bank and an `argpartition`; the TF-IDF expert maps tokens to ids in one C-level "
        "`map` and scores with numpy (no Python loop over terms); the stack's feature scaling is folded into its "
        "weights at load time.",
        "",
    ]
    ours_m, ours_g = curves["ours"][0].apgr, curves["ours"][1].apgr
    verdict = (
        f"Goals: APGR ≥ 0.68 held-out MMLU — {'met' if ours_m >= 0.68 else 'NOT met'} ({ours_m:.3f}); ≥ 0.60 GSM8K — "
        f"{'met' if ours_g >= 0.60 else 'NOT met'} ({ours_g:.3f}); better than every baseline on MMLU — "
        f"{'yes' if ours_m > curves[best_m][0].apgr else 'no'} (best {best_m} {curves[best_m][0].apgr:.3f}); on GSM8K "
        f"— {'yes' if ours_g > curves[best_g][1].apgr else 'no'} (best {best_g} {curves[best_g][1].apgr:.3f}); "
        f"p99 ≤ 2 ms — {'met' if p99 <= 2 else 'NOT met'}."
    )
    summary = (
        f"routing apgr_mmlu={ours_m:.3f} apgr_gsm8k={ours_g:.3f} apgr_random={rand_m:.3f} "
        f"apgr_best_baseline_mmlu={curves[best_m][0].apgr:.3f} acc_bt={acc_bt:.3f} acc_prompt={acc_pa:.3f} "
        f"p99_ms={p99:.3f}"
    )
    lines += ["## Verdict", "", verdict, "", summary, ""]  # the summary line closes the file
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
