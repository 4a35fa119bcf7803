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
import routing_data as data  # noqa: E402

from portico.routing.evaluation import Curve, cost_quality_curve, random_apgr  # noqa: E402
from portico.routing.features import prompt_features  # noqa: E402
from portico.routing.preference import PairwiseRecord, PreferenceModel, TrainConfig, train  # noqa: E402

SEED = 0
OUT = Path(__file__).resolve().parent / "results" / "routing.md"
CONFIG = TrainConfig()  # chosen by CV inside the training split (see module docstring)
HUMAN_CONFIG = TrainConfig(k=10)  # 64 training questions per fold: a 150-neighbour kNN would be a constant


def golden_records(g: data.Golden, idx: np.ndarray) -> list[PairwiseRecord]:
    out = []
    for i in idx:
        s, w = g.strong_ok[i], g.weak_ok[i]
        winner = "model_a" if s > w else "model_b" if w > s else "tie"
        out.append(PairwiseRecord(g.prompts[i], data.STRONG, data.WEAK, winner))
    return out


def embedding_lr(emb: np.ndarray, gain: np.ndarray, folds: int = 5) -> object:
    """Logistic regression on the embedding predicting "the strong model wins"; C by CV inside the training set."""
    from sklearn.linear_model import LogisticRegressionCV

    return LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=folds, scoring="roc_auc", max_iter=2000).fit(
        emb, (gain > 0).astype(int)
    )


def cv_apgr(prompts: list[str], emb: np.ndarray, g: data.Golden, idx: np.ndarray, folds: int = 5) -> float:
    """Our router's APGR by 5-fold CV inside the training split (what tuning could look at)."""
    from sklearn.model_selection import KFold

    lookup = dict(zip(prompts, emb, strict=True))
    scores = []
    for a, b in KFold(folds, shuffle=True, random_state=SEED).split(idx):
        m = train(golden_records(g, idx[a]), lambda ps: np.stack([lookup[p] for p in ps]), config=CONFIG)
        p = m.p_strong_wins_batch(emb[idx[b]], [prompts[i] for i in idx[b]])
        scores.append(cost_quality_curve(p, g.weak_ok[idx[b]], g.strong_ok[idx[b]]).apgr)
    return float(np.mean(scores))


def human_accuracy(rows: list[dict], box: list) -> tuple[float, float, int, list[tuple[str, float, float, int]]]:
    """Non-tie accuracy of Bradley-Terry vs the prompt-aware predictor, 5-fold split by question."""
    questions = sorted({r["question_id"] for r in rows})
    qtext = {r["question_id"]: r["question"] for r in rows}
    texts = [qtext[q] for q in questions]
    emb = data.embed_cached("vicuna80", texts, box)
    lookup = dict(zip(texts, emb, strict=True))
    rng = np.random.default_rng(SEED)
    fold_of = dict(zip(rng.permutation(questions).tolist(), np.arange(len(questions)) % 5, strict=True))
    hits_bt = hits_pa = total = 0
    by_cat: dict[str, list[int]] = {}
    for fold in range(5):
        train_rows = [r for r in rows if fold_of[r["question_id"]] != fold]
        test_rows = [r for r in rows if fold_of[r["question_id"]] == fold and r["winner"] != "tie"]
        recs = [
            PairwiseRecord.from_dict(
                {
                    "prompt": r["question"],
                    "model_a": r["model_1"],
                    "model_b": r["model_2"],
                    "winner": {"model_1": "model_a", "model_2": "model_b"}.get(r["winner"], "tie"),
                }
            )
            for r in train_rows
        ]
        m = train(recs, lambda ps: np.stack([lookup[p] for p in ps]), config=HUMAN_CONFIG)
        for r in test_rows:
            a, b = r["model_1"], r["model_2"]
            truth = r["winner"] == "model_1"
            bt = m.p_bt(a, b) > 0.5
            pa = m.p_wins(a, b, lookup[r["question"]], r["question"]) > 0.5
            hits_bt += bt == truth
            hits_pa += pa == truth
            total += 1
            c = by_cat.setdefault(r["category"], [0, 0, 0])
            c[0] += bt == truth
            c[1] += pa == truth
            c[2] += 1
    cats = [(k, v[0] / v[2], v[1] / v[2], v[2]) for k, v in sorted(by_cat.items())]
    return hits_bt / total, hits_pa / total, total, cats


def latency(model: PreferenceModel, emb: np.ndarray, texts: list[str], n: int = 2000) -> tuple[float, float]:
    for i in range(100):
        model.p_strong_wins(emb[i], texts[i])
    times = []
    for i in range(min(n, len(texts))):
        t0 = time.perf_counter()
        model.p_strong_wins(emb[i], texts[i])
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


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
    perm = np.random.default_rng(SEED).permutation(len(mmlu.prompts))
    cut = int(0.8 * len(perm))
    tr, te = np.sort(perm[:cut]), np.sort(perm[cut:])
    lookup = dict(zip(mmlu.prompts, em, strict=True))
    te_text = [mmlu.prompts[i] for i in te]
    gain = mmlu.strong_ok - mmlu.weak_ok

    t0 = time.perf_counter()
    model = train(golden_records(mmlu, tr), lambda ps: np.stack([lookup[p] for p in ps]), config=CONFIG)
    train_s = time.perf_counter() - t0
    cv = cv_apgr(mmlu.prompts, em, mmlu, tr)

    subjects = np.asarray(mmlu.subjects)
    prior = {s: gain[tr][subjects[tr] == s].mean() for s in sorted(set(subjects[tr]))}
    lr = embedding_lr(em[tr], gain[tr])
    scores = {
        "ours": (model.p_strong_wins_batch(em[te], te_text), model.p_strong_wins_batch(eg, gsm.prompts)),
        "per-subject prior": (np.asarray([prior.get(s, 0.0) for s in subjects[te]]), np.zeros(len(gsm.prompts))),
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

    acc_bt, acc_pa, n_human, cats = human_accuracy(data.load_human(), box)
    p50, p99 = latency(model, em[te], te_text)

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
        "Router: Bradley-Terry ratings + a ridge stack of three prompt experts (kNN k=150 on MiniLM embeddings, "
        "ridge on TF-IDF word uni/bigrams, ridge on the embedding) and 16 hand-made prompt features.",
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
        "## Human pairwise ratings (PRD Vicuna-80): non-tie accuracy, 5-fold split by question",
        "",
        f"{n_human} non-tie test ratings. Bradley-Terry predicts the higher-rated model; the prompt-aware predictor "
        "adds the prompt score (same model as above, kNN k=10).",
        "",
        "| category | Bradley-Terry | prompt-aware | ratings |",
        "|---|---|---|---|",
        *(f"| {c} | {a:.3f} | {b:.3f} | {n} |" for c, a, b, n in cats),
        f"| **all** | **{acc_bt:.3f}** | **{acc_pa:.3f}** | {n_human} |",
        "",
        "## Decision latency given the query embedding (features + experts + stack, one prompt at a time)",
        "",
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms over 2,000 held-out MMLU prompts.",
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
    lines += ["## Verdict", "", verdict, ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    print(
        f"routing apgr_mmlu={ours_m:.3f} apgr_gsm8k={ours_g:.3f} apgr_random={rand_m:.3f} "
        f"apgr_best_baseline_mmlu={curves[best_m][0].apgr:.3f} acc_bt={acc_bt:.3f} acc_prompt={acc_pa:.3f} "
        f"p99_ms={p99:.3f}"
    )


if __name__ == "__main__":
    main()
