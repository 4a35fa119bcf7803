"""The semantic cache's second opinion: is a cached question really the same question as the new one?

Cosine similarity of sentence embeddings alone cannot tell "How do I learn Python?" from "How do I learn Java?"
reliably enough to serve an answer (on Quora pairs it cannot reach 95% precision at any useful recall). The
verifier scores a (query, candidate) pair from signals the embedding blurs — numbers, question words, negation,
words present on one side only — plus the element-wise product and difference of the two embeddings, with a
logistic regression: numpy only at serving time, well under a millisecond per pair.

Weights are trained by the operator from labelled pairs (``portico cache train-verifier``) and loaded from a
directory; none ship with Portico, because the public pair sets are licensed for research only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
_NUM = re.compile(r"\d+(?:[.,]\d+)?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _words(
    "a an the of to in on for and or is are was were be been being do does did can could should would will shall "
    "may might must i you he she it we they me my your his her its our their this that these those what which who "
    "whom whose how why when where there here with from by at as about into than then so if it's im best good "
    "way ways some any get"
)
QUESTION_WORDS = _words(
    "what how why when where who which whom whose is are can do does should will would could did was were has have"
)
NEGATIONS = _words("not no never nothing none nobody cannot without dont doesnt didnt isnt arent cant wont")
N_HAND = 12


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("'", ""))


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _grams(text: str) -> set[str]:
    t = " ".join(_tokens(text))
    return {t[i : i + 3] for i in range(max(1, len(t) - 2))}


def hand_features(a: str, b: str, cos: float, margin: float) -> np.ndarray:
    ta, tb = _tokens(a), _tokens(b)
    sa, sb = set(ta), set(tb)
    ca, cb = sa - STOPWORDS, sb - STOPWORDS
    wa = next((w for w in ta if w in QUESTION_WORDS), "")
    wb = next((w for w in tb if w in QUESTION_WORDS), "")
    la, lb = max(1, len(ta)), max(1, len(tb))
    return np.array([
        cos,
        margin,
        _jaccard(sa, sb),
        _jaccard(ca, cb),
        min(len(ca - cb), 10) / 10,
        min(len(cb - ca), 10) / 10,
        float(set(_NUM.findall(a)) != set(_NUM.findall(b))),
        float(wa != wb),
        float(bool(sa & NEGATIONS) != bool(sb & NEGATIONS)),
        min(la, lb) / max(la, lb),
        _jaccard(_grams(a), _grams(b)),
        float(ta == tb),
    ], dtype=np.float32)  # fmt: skip


def pair_vector(a: str, b: str, ea: np.ndarray, eb: np.ndarray, cos: float, margin: float) -> np.ndarray:
    """Hand features, then |ea - eb| and ea * eb (symmetric in the two texts' embeddings)."""
    return np.concatenate([hand_features(a, b, cos, margin), np.abs(ea - eb), ea * eb]).astype(np.float32)


@dataclass
class Verifier:
    """A logistic regression over ``pair_vector``: ``p = sigmoid(w · standardise(x) + b)``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float  # serve a candidate when p ≥ threshold (chosen for a target precision when trained)
    meta: dict

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "verifier.npz", weights=self.weights, mean=self.mean, scale=self.scale)
        (d / "verifier.json").write_text(json.dumps({"bias": self.bias, "threshold": self.threshold, **self.meta},
                                                    indent=2))  # fmt: skip

    @classmethod
    def load(cls, directory: str | Path) -> Verifier:
        d = Path(directory)
        try:
            arrays = np.load(d / "verifier.npz")
            meta = json.loads((d / "verifier.json").read_text())
        except FileNotFoundError as e:
            raise ValueError(f"no verifier in {d}: {e.filename} is missing (train one with "
                             "`portico cache train-verifier`)") from None  # fmt: skip
        bias, threshold = float(meta.pop("bias")), float(meta.pop("threshold"))
        return cls(arrays["weights"], bias, arrays["mean"], arrays["scale"], threshold, meta)


def train(x: np.ndarray, y: np.ndarray, *, target_precision: float = 0.95, c: float = 1.0, seed: int = 0,
          meta: dict | None = None) -> Verifier:  # fmt: skip
    """Fit on pair vectors; the threshold is the lowest one whose precision, in 5-fold cross-validation on
    these pairs, reaches ``target_precision`` (so it is not tuned on the data it will be judged by)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std < 1e-4, 1.0, std)  # a constant column must not turn tiny deviations into huge z
    xs = (x - mean) / scale
    oof = np.zeros(len(y), dtype=np.float64)
    for fit_idx, held in StratifiedKFold(5, shuffle=True, random_state=seed).split(xs, y):
        m = LogisticRegression(C=c, max_iter=2000).fit(xs[fit_idx], y[fit_idx])
        oof[held] = m.predict_proba(xs[held])[:, 1]
    threshold = threshold_for_precision(oof, y, target_precision)
    model = LogisticRegression(C=c, max_iter=2000).fit(xs, y)
    return Verifier(model.coef_[0].astype(np.float32), float(model.intercept_[0]), mean.astype(np.float32),
                    scale.astype(np.float32), threshold, {"pairs": len(y), "target_precision": target_precision,
                                                          **(meta or {})})  # fmt: skip


def threshold_for_precision(scores: np.ndarray, y: np.ndarray, target: float, min_hits: int = 20) -> float:
    """The lowest score threshold at which precision (share of y == 1 among scores ≥ t) is ≥ target."""
    order = np.argsort(-scores)
    hits = np.cumsum(y[order])
    precision = hits / np.arange(1, len(y) + 1)
    ok = np.where((precision >= target) & (np.arange(1, len(y) + 1) >= min_hits))[0]
    if len(ok) == 0:
        return float(scores.max()) + 1e-6  # nothing reaches it: serve nothing
    return float(scores[order][ok.max()])
