"""Train the injection/jailbreak classifier on the train splits only and choose its threshold on out-of-fold
validation scores (FPR ≤ 5% on each train source).

    python -m portico.guardrails.injection.train [--data ../shared/data] [--out guardrails/models/injection.npz]

Embeddings of the chunks are cached as .npy under ``$PORTICO_GUARDRAILS_CACHE`` (default /work/cache/guardrails).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from portico.guardrails.injection.model import (
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    InjectionModel,
    chunks,
    design,
    ngram_vectorizer,
)

ROOT = Path(__file__).resolve().parents[4]
DATA = Path(os.environ.get("PORTICO_DATA", str(ROOT.parent / "shared" / "data")))
CACHE = Path(os.environ.get("PORTICO_GUARDRAILS_CACHE", "/work/cache/guardrails"))
MAX_FPR = 0.05
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


def chunked(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """All chunks of all texts and, per chunk, the index of its text."""
    pieces: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        cs = chunks(t) or [""]
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


def train(
    sets: dict[str, Dataset],
    encoder: Any,
    folds: int = 5,
    seed: int = 0,
    c: float = 16.0,
    report: bool = False,
    embeddings: bool = True,
) -> InjectionModel:
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
    y_chunk = y_doc[owner]
    # Every document weighs the same whatever its number of chunks, and both sources weigh the same.
    per_doc = np.bincount(owner, minlength=len(texts))
    weight = 1.0 / per_doc[owner]
    for s in (0, 1):
        weight[src[owner] == s] *= len(texts) / (2 * (src == s).sum())
    # Out-of-fold document scores → a threshold that holds FPR ≤ 5% on each source.
    rng = np.random.default_rng(seed)
    fold_of = rng.integers(0, folds, size=len(texts))
    oof = np.zeros(len(texts))
    for f in range(folds):
        tr = fold_of[owner] != f
        clf = fit_lr(rows[tr], y_chunk[tr], c, weight[tr])
        te_docs = np.flatnonzero(fold_of == f)
        te = np.isin(owner, te_docs)
        scores = clf.predict_proba(rows[te])[:, 1]
        oof[te_docs] = doc_scores(scores, np.searchsorted(te_docs, owner[te]), len(te_docs))
    threshold = max(threshold_at_fpr(oof[src == s], y_doc[src == s]) for s in (0, 1))
    if report:
        for s in (0, 1):
            m = src == s
            print(f"C={c} source {s}: out-of-fold recall {np.mean(oof[m][y_doc[m] == 1] >= threshold):.3f}")
    clf = fit_lr(rows, y_chunk, c, weight)
    return InjectionModel(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), threshold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fast", action="store_true", help="no embeddings: n-grams and heuristics only")
    args = ap.parse_args()
    args.out = args.out or (FAST_WEIGHTS if args.fast else DEFAULT_WEIGHTS)
    model = train(load_sets(args.data), None if args.fast else load_encoder(), embeddings=not args.fast)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size // 1024} KB), threshold {model.threshold:.3f}")


if __name__ == "__main__":
    main()
