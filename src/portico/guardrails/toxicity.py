"""Toxicity classifier for answers: logistic regression over [MiniLM embedding ‖ hashed character n-grams] of
each chunk; a text's score is its highest chunk score.

Trained by ``python -m portico.guardrails.toxicity`` on Davidson et al. (MIT; hate speech and offensive → toxic)
and a balanced Civil Comments sample (CC0; target ≥ 0.5 → toxic), each split 80/20 with a fixed seed; the
threshold maximises F1 on out-of-fold scores of the training part. The held-out 20% and the Jigsaw sample
(unseen source) are for measurement only (``make bench-guardrails``). Both training sources allow shipping a
model trained on them (MIT, CC0); the chunking is stored with the weights, so serving chunks answers exactly as
the training chunked its examples.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from portico.guardrails.injection.model import CHUNK_STRIDE, CHUNK_WORDS, ngram_vectorizer
from portico.guardrails.injection.model import InjectionModel as LinearModel
from portico.guardrails.injection.train import CACHE, DATA, chunked, doc_scores, embed_cached, fit_lr, load_encoder

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "models" / "toxicity.npz"
Dataset = tuple[list[str], np.ndarray]


def load_sets(data: Path = DATA, seed: int = 0) -> dict[str, Dataset]:
    tox = data / "toxicity"
    with (tox / "davidson_hate_offensive" / "labeled_data.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    dav = ([r["tweet"] for r in rows], np.array([int(r["class"] in ("0", "1")) for r in rows]))
    with gzip.open(tox / "civil_comments_balanced_10k" / "balanced_dataset.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    civ = ([r["comment_text"] for r in rows], np.array([int(float(r["target"]) >= 0.5) for r in rows]))
    with (tox / "jigsaw_ibm_max_sample" / "test_examples.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    jig = ([r["comment_text"] for r in rows], np.array([int(r["toxic"]) for r in rows]))
    out: dict[str, Dataset] = {"jigsaw": jig}
    rng = np.random.default_rng(seed)
    for name, (texts, y) in (("davidson", dav), ("civil", civ)):
        held = rng.random(len(texts)) < 0.2
        out[f"{name}_train"] = ([t for t, h in zip(texts, held, strict=True) if not h], y[~held])
        out[f"{name}_test"] = ([t for t, h in zip(texts, held, strict=True) if h], y[held])
    return out


def features(
    encoder: object, texts: list[str], vectorizer: object, words: int = CHUNK_WORDS, stride: int = CHUNK_STRIDE
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk rows (the shared chunking, recorded in the weights and used when serving) and each chunk's text."""
    pieces, owner = chunked(texts, words, stride)
    emb = embed_cached(encoder, pieces, CACHE)
    return np.hstack([emb, vectorizer.transform(pieces).toarray()]), owner  # type: ignore[attr-defined]


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    best, best_t = -1.0, 0.5
    for t in np.unique(np.round(scores, 3)):
        p = scores >= t
        tp = float((p & (labels == 1)).sum())
        f1 = 2 * tp / max(p.sum() + (labels == 1).sum(), 1)
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


def train(sets: dict[str, Dataset], encoder: object, c: float = 4.0, folds: int = 3, seed: int = 0) -> LinearModel:
    texts = sets["davidson_train"][0] + sets["civil_train"][0]
    y = np.concatenate([sets["davidson_train"][1], sets["civil_train"][1]])
    x, owner = features(encoder, texts, ngram_vectorizer())
    fold = np.random.default_rng(seed).integers(0, folds, size=len(texts))
    oof = np.zeros(len(texts))
    for f in range(folds):
        tr = fold[owner] != f
        clf = fit_lr(x[tr], y[owner][tr], c)
        docs = np.flatnonzero(fold == f)
        te = np.isin(owner, docs)
        oof[docs] = doc_scores(clf.predict_proba(x[te])[:, 1], np.searchsorted(docs, owner[te]), len(docs))
    threshold = best_f1_threshold(oof, y)
    clf = fit_lr(x, y[owner], c)
    return LinearModel(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), threshold, CHUNK_WORDS, CHUNK_STRIDE)


class ToxicityClassifier:
    def __init__(self, model: LinearModel, embed: Callable[[list[str]], Awaitable[np.ndarray]]) -> None:
        self.model = model
        self.embed = embed
        self.vectorizer = ngram_vectorizer()

    @classmethod
    def load(
        cls, embed: Callable[[list[str]], Awaitable[np.ndarray]], path: Path | str | None = None
    ) -> ToxicityClassifier:
        return cls(LinearModel.load(path or DEFAULT_WEIGHTS), embed)

    async def score(self, text: str) -> float:
        pieces = self.model.chunks(text)
        if not pieces:
            return 0.0
        emb = await self.embed(pieces)
        rows = np.hstack([emb, self.vectorizer.transform(pieces).toarray()])
        return float(np.max(self.model.chunk_scores(rows)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = ap.parse_args()
    model = train(load_sets(args.data), load_encoder())
    model.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size // 1024} KB), threshold {model.threshold:.3f}")


if __name__ == "__main__":
    main()
