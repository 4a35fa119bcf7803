"""Train the injection/jailbreak classifiers on the train splits only; choose each one's regularisation and
threshold, and the step's default variant, by a fixed rule on validation scores (5-fold out-of-fold scores of the
train splits, FPR ≤ 5% on each train source). The test splits and malignant are never read here.

    python -m portico.guardrails.injection.train [--data ../shared/data]

writes ``guardrails/models/injection_fast.npz``, ``injection.npz`` (full) and ``injection_selection.json`` (every
candidate's validation numbers and the chosen default).

Embeddings of the chunks are cached as .npy under ``$PORTICO_GUARDRAILS_CACHE`` (default /work/cache/guardrails).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from portico.guardrails.injection.model import (
    CHUNK_STRIDE,
    CHUNK_WORDS,
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    SELECTION,
    InjectionModel,
    chunks,
    design,
    ngram_vectorizer,
)

ROOT = Path(__file__).resolve().parents[4]
DATA = Path(os.environ.get("PORTICO_DATA", str(ROOT.parent / "shared" / "data")))
CACHE = Path(os.environ.get("PORTICO_GUARDRAILS_CACHE", "/work/cache/guardrails"))
MAX_FPR = 0.05
FOLDS = 5
C_GRID = (1.0, 4.0, 16.0, 64.0)
TIE = 0.01  # validation recall differences below one point are noise on ~200 positives per source
# `full` embeds every chunk with MiniLM: ~4x the input set's 100 ms budget at 1k tokens on this hardware
# (bench/results/guardrails.md), whatever its accuracy, so it is offered as `model: full` but not as the default.
DEFAULT_ELIGIBLE = ("fast",)
RULE = (
    "per variant: C from C_GRID with the highest mean (deepset, jackhhao) out-of-fold recall at the lowest "
    "threshold holding FPR <= 5% on each train source, the smaller C within 0.01; default: the eligible "
    "variant (latency budget) with the highest such recall, the cheaper within 0.01"
)
Dataset = tuple[list[str], np.ndarray]


def load_sets(data: Path = DATA) -> dict[str, Dataset]:
    """deepset train/test, jackhhao train/test, malignant (jailbreak and act_as are positives)."""
    inj = data / "injection"
    out: dict[str, Dataset] = {}
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (inj / "deepset_prompt_injections" / f"{split}.jsonl").open()]
        out[f"deepset_{split}"] = ([r["text"] for r in rows], np.array([int(r["label"]) for r in rows]))
        with (inj / "jackhhao_jailbreak_classification" / f"{split}_balanced.csv").open(newline="") as f:
            rs = list(csv.DictReader(f))
        out[f"jackhhao_{split}"] = ([r["prompt"] for r in rs], np.array([int(r["type"] == "jailbreak") for r in rs]))
    with (inj / "malignant" / "malignant_paraphrase.csv").open(newline="") as f:
        rs = list(csv.DictReader(f))
    out["malignant"] = ([r["text"] for r in rs], np.array([int(r["category"] != "conversation") for r in rs]))
    return out


def load_encoder() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from portico.gateway.providers.local.paths import default_embedder

    torch.set_num_threads(1)
    return SentenceTransformer(str(default_embedder()), device="cpu", local_files_only=True)


def embed_cached(encoder: Any, texts: list[str], cache: Path = CACHE) -> np.ndarray:
    """Normalised MiniLM embeddings (truncated to the model's window), cached by the texts' hash."""
    key = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:20]
    path = cache / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    vecs = encoder.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False).astype(np.float32)  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def chunked(texts: list[str], words: int = CHUNK_WORDS, stride: int = CHUNK_STRIDE) -> tuple[list[str], np.ndarray]:
    """All chunks of all texts and, per chunk, the index of its text (the chunking every model records)."""
    pieces: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        cs = chunks(t, words, stride) or [""]
        pieces.extend(cs)
        owner.extend([i] * len(cs))
    return pieces, np.asarray(owner)


def doc_scores(chunk_scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    np.maximum.at(out, owner, chunk_scores)
    return out


def threshold_at_fpr(scores: np.ndarray, labels: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """The lowest threshold whose false-positive rate on ``labels == 0`` is ≤ max_fpr."""
    neg = np.sort(scores[labels == 0])[::-1]
    k = int(np.floor(max_fpr * len(neg)))  # up to k negatives may score at or above the threshold
    return float(np.nextafter(neg[k], 1.0)) if k < len(neg) else 0.0


def fit_lr(x: np.ndarray, y: np.ndarray, c: float, weight: np.ndarray | None = None) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y, sample_weight=weight)


@dataclass
class TrainRows:
    rows: np.ndarray  # one per chunk
    y_doc: np.ndarray
    src: np.ndarray  # per document: 0 deepset, 1 jackhhao
    owner: np.ndarray  # per chunk: its document
    weight: np.ndarray  # per chunk


def training_rows(sets: dict[str, Dataset], encoder: Any, embeddings: bool) -> TrainRows:
    """Chunk rows of the train splits (deepset + jackhhao), with labels, sources and weights."""
    texts: list[str] = []
    labels: list[int] = []
    source: list[int] = []
    for s, name in enumerate(("deepset_train", "jackhhao_train")):
        t, y = sets[name]
        texts += t
        labels += y.tolist()
        source += [s] * len(t)
    y_doc, src = np.asarray(labels), np.asarray(source)
    pieces, owner = chunked(texts)
    rows = design(embed_cached(encoder, pieces) if embeddings else None, pieces, ngram_vectorizer())
    # Every document weighs the same whatever its number of chunks, and both sources weigh the same.
    per_doc = np.bincount(owner, minlength=len(texts))
    weight = 1.0 / per_doc[owner]
    for s in (0, 1):
        weight[src[owner] == s] *= len(texts) / (2 * (src == s).sum())
    return TrainRows(rows, y_doc, src, owner, weight)


def validation_scores(d: TrainRows, c: float, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Out-of-fold document scores: each train document scored by a model fitted without its fold, so every
    document of the train splits is validation data exactly once (test splits are never read)."""
    fold_of = np.random.default_rng(seed).integers(0, folds, size=len(d.y_doc))
    oof = np.zeros(len(d.y_doc))
    y_chunk = d.y_doc[d.owner]
    for f in range(folds):
        tr = fold_of[d.owner] != f
        clf = fit_lr(d.rows[tr], y_chunk[tr], c, d.weight[tr])
        te_docs = np.flatnonzero(fold_of == f)
        te = np.isin(d.owner, te_docs)
        scores = clf.predict_proba(d.rows[te])[:, 1]
        oof[te_docs] = doc_scores(scores, np.searchsorted(te_docs, d.owner[te]), len(te_docs))
    return oof


def validate(d: TrainRows, c: float) -> dict[str, Any]:
    """The threshold that holds FPR ≤ 5% on each train source's validation scores, and the recall it gives."""
    oof = validation_scores(d, c)
    t = max(threshold_at_fpr(oof[d.src == s], d.y_doc[d.src == s]) for s in (0, 1))
    recall = [float(np.mean(oof[(d.src == s) & (d.y_doc == 1)] >= t)) for s in (0, 1)]
    fpr = [float(np.mean(oof[(d.src == s) & (d.y_doc == 0)] >= t)) for s in (0, 1)]
    return {"c": c, "threshold": t, "recall_deepset": recall[0], "recall_jackhhao": recall[1],
            "fpr_deepset": fpr[0], "fpr_jackhhao": fpr[1], "mean_recall": float(np.mean(recall))}  # fmt: skip


def pick(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule, fixed before any test number is read: the highest mean validation recall; within TIE of it the
    smaller C (stronger regularisation) wins."""
    best = max(r["mean_recall"] for r in results)
    return min((r for r in results if r["mean_recall"] >= best - TIE), key=lambda r: r["c"])


def fit_final(d: TrainRows, chosen: dict[str, Any]) -> InjectionModel:
    clf = fit_lr(d.rows, d.y_doc[d.owner], chosen["c"], d.weight)
    return InjectionModel(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), chosen["threshold"],
                          CHUNK_WORDS, CHUNK_STRIDE)  # fmt: skip


def select_and_train(sets: dict[str, Dataset], encoder: Any) -> dict[str, Any]:
    """Both variants over the C grid on validation scores; each variant's weights refitted on all train data with
    its chosen C and validation threshold. The step's default is the eligible variant with the higher validation
    recall (the cheaper one within TIE)."""
    report: dict[str, Any] = {"rule": RULE, "variants": {}}
    models: dict[str, InjectionModel] = {}
    for variant in ("fast", "full"):
        d = training_rows(sets, encoder, embeddings=variant == "full")
        results = [validate(d, c) for c in C_GRID]
        chosen = pick(results)
        report["variants"][variant] = {"candidates": results, "chosen": chosen}
        models[variant] = fit_final(d, chosen)
        print(f"{variant}: " + ", ".join(f"C={r['c']:g} recall {r['mean_recall']:.3f}" for r in results)
              + f" -> C={chosen['c']:g}, threshold {chosen['threshold']:.3f}")  # fmt: skip
    eligible = [v for v in ("fast", "full") if v in DEFAULT_ELIGIBLE]
    best = max(report["variants"][v]["chosen"]["mean_recall"] for v in eligible)
    report["default"] = next(v for v in eligible if report["variants"][v]["chosen"]["mean_recall"] >= best - TIE)
    report["models"] = models
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    report = select_and_train(load_sets(args.data), load_encoder())
    for variant, model in report.pop("models").items():
        out = FAST_WEIGHTS if variant == "fast" else DEFAULT_WEIGHTS
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(out)
        print(f"saved {out} ({out.stat().st_size // 1024} KB), threshold {model.threshold:.3f}")
    SELECTION.write_text(json.dumps(report, indent=1) + "\n")
    print(f"default model: {report['default']} (written to {SELECTION})")


if __name__ == "__main__":
    main()
