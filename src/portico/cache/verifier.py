"""The semantic cache's second opinion: is a cached question really the same question as the new one?

Cosine similarity of sentence embeddings alone cannot tell "How do I learn Python?" from "How do I learn Java?"
reliably enough to serve an answer (on Quora pairs it cannot reach 95% precision at any useful recall). The
verifier scores a (query, candidate) pair from signals the embedding blurs — numbers, question words, negation,
words present on one side only, the candidate's margin over the runner-up — and, when trained with one, the
probability from a small network over the two embeddings (pairnet.py). Boosted trees combine them; both parts are
evaluated with numpy at serving time, well under a millisecond per lookup.

Weights are trained by the operator from labelled pairs (``portico cache train-verifier``) and loaded from a
directory; none ship with Portico, because the public pair sets are licensed for research only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from portico.cache.pairnet import PairEnsemble, pair_vectors
from portico.cache.pairnet import fit as fit_pairnet

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
PAIR_FLOOR = 0.7  # the matcher's default similarity floor with a verifier


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


def candidate_features(query: str, candidates: list[tuple[str, float]]) -> np.ndarray:
    """The verifier's rows for one lookup: per (text, similarity) candidate, its features with the margin of its
    similarity over the best other candidate's (how the matcher and the training data both see it)."""
    sims = [s for _, s in candidates]
    rows = []
    for i, (text, s) in enumerate(candidates):
        best_other = max((x for j, x in enumerate(sims) if j != i), default=0.0)
        rows.append(hand_features(query, text, s, s - best_other))
    return np.stack(rows) if rows else np.zeros((0, N_HAND), dtype=np.float32)


@dataclass
class Trees:
    """A trained boosted-tree ensemble as flat arrays, evaluated for all trees at once with numpy: no pickle to
    load, no per-call overhead of the training library (sklearn's predict costs milliseconds on four rows)."""

    feature: np.ndarray  # (trees, nodes) int: feature tested at each node
    threshold: np.ndarray  # (trees, nodes) float: go left when x[feature] <= threshold
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray  # bool
    value: np.ndarray  # leaf values (learning rate included)
    baseline: float
    depth: int

    @classmethod
    def from_sklearn(cls, model: Any) -> Trees:
        trees = [p[0].nodes for p in model._predictors]
        width = max(len(t) for t in trees)

        def grid(field: str, dtype: Any) -> np.ndarray:
            out = np.zeros((len(trees), width), dtype=dtype)
            for i, t in enumerate(trees):
                out[i, : len(t)] = t[field]
            return out

        baseline = float(np.ravel(model._baseline_prediction)[0])
        depth = int(max(t["depth"].max() for t in trees)) + 1
        return cls(
            grid("feature_idx", np.int64), grid("num_threshold", np.float64), grid("left", np.int64),
            grid("right", np.int64), grid("is_leaf", bool), grid("value", np.float64), baseline, depth,
        )  # fmt: skip

    def probability(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        rows = np.arange(len(x))[:, None]
        trees = np.arange(self.feature.shape[0])[None, :]
        node = np.zeros((len(x), self.feature.shape[0]), dtype=np.int64)
        for _ in range(self.depth):
            values = x[rows, self.feature[trees, node]]
            step = np.where(values <= self.threshold[trees, node], self.left[trees, node], self.right[trees, node])
            node = np.where(self.leaf[trees, node], node, step)
        raw = self.baseline + self.value[trees, node].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-np.clip(raw, -50, 50)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
                "leaf": self.leaf, "value": self.value}  # fmt: skip


@dataclass
class Verifier:
    """``probability(rows)`` of "same question" per pair row; serve a candidate when it is ≥ ``threshold``."""

    trees: Trees
    threshold: float
    meta: dict
    pairnet: PairEnsemble | None = None

    @property
    def n_features(self) -> int:
        return N_HAND + (1 if self.pairnet is not None else 0)

    def rows(self, query: str, vector: np.ndarray, candidates: list[tuple[str, float, np.ndarray]]) -> np.ndarray:
        """The rows for one lookup's candidates (text, similarity, embedding), as ``probability`` takes them."""
        hand = candidate_features(query, [(t, s) for t, s, _ in candidates])
        if self.pairnet is None or not candidates:
            return hand
        net = self.pairnet.probability(pair_vectors(vector, np.stack([v for _, _, v in candidates])))
        return np.hstack([hand, net[:, None].astype(np.float32)])

    def probability(self, x: np.ndarray) -> np.ndarray:
        return self.trees.probability(x)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = self.trees.arrays() | (self.pairnet.arrays() if self.pairnet is not None else {})
        with open(d / "verifier.tmp.npz", "wb") as f:
            np.savez(f, **arrays)
        (d / "verifier.tmp.npz").replace(d / "verifier.npz")  # a half-written model never replaces a good one
        meta = {"threshold": self.threshold, "baseline": self.trees.baseline, "depth": self.trees.depth,
                "features": self.n_features, "hand_features": N_HAND, **self.meta,
                "pairnet_members": len(self.pairnet.members) if self.pairnet is not None else 0,
                "pairnet_layers": len(self.pairnet.members[0].weights) if self.pairnet is not None else 0}  # fmt: skip
        (d / "verifier.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Verifier:
        d = Path(directory)
        try:
            meta = json.loads((d / "verifier.json").read_text())
            arrays = np.load(d / "verifier.npz")
        except FileNotFoundError as e:
            raise ValueError(f"no verifier in {d}: {e.filename} is missing (train one with "
                             "`portico cache train-verifier`)") from None  # fmt: skip
        layers, members = int(meta.pop("pairnet_layers", 0)), int(meta.pop("pairnet_members", 0))
        if meta.pop("hand_features", meta.get("features")) != N_HAND:
            raise ValueError(f"the verifier in {d} was trained on other features than this Portico computes: "
                             "train it again")  # fmt: skip
        trees = Trees(arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"], arrays["leaf"],
                      arrays["value"], float(meta.pop("baseline")), int(meta.pop("depth")))  # fmt: skip
        net = PairEnsemble.from_arrays(arrays, members, layers) if members else None
        return cls(trees, float(meta.pop("threshold")), meta, net)


def _model(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=400, learning_rate=0.08, random_state=seed)


def _folds(groups: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Fold per row by its group (the lookup it belongs to), so no lookup is split between fit and held-out."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    return np.random.default_rng(seed).permutation(len(uniq))[inverse] % n


def train(x: np.ndarray, y: np.ndarray, *, target_precision: float = 0.95, seed: int = 0, meta: dict | None = None,
          groups: np.ndarray | None = None, pairs: np.ndarray | None = None,
          extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Verifier:  # fmt: skip
    """Fit on candidate rows ``x`` (hand features; column 0 is the cosine similarity) with labels ``y``;
    ``groups`` names each row's lookup.

    With ``pairs`` (each row's ``pair_vectors``), a pair network is cross-fitted too (3 members, each trained
    without one fold of lookups) and each row's probability from the member that did not see it becomes the
    trees' last feature: stacking, so the trees never learn to trust a score made on the network's own training
    rows. The network trains on rows with similarity ≥ ``PAIR_FLOOR`` only (below it the matcher never serves,
    and cosine alone tells them apart) plus ``extra`` = (pair vectors, labels, groups): directly labelled pairs,
    the hard negatives a top-k search may not surface. The threshold is the loosest one whose precision, in 5-fold
    cross-validation, reaches ``target_precision``: it is not tuned on the data it will be judged by.
    """
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    all_groups = groups if extra is None else np.concatenate([groups, extra[2]])
    net = None
    if pairs is not None:
        fold3 = _folds(all_groups, 3, seed)
        keep = np.concatenate([x[:, 0] >= PAIR_FLOOR, np.ones(len(all_groups) - len(y), dtype=bool)])
        xp = pairs if extra is None else np.concatenate([pairs, extra[0]])
        yp = y if extra is None else np.concatenate([y, extra[1]])
        members, oof_net = [], np.zeros(len(y), dtype=np.float32)
        for f in range(3):
            member = fit_pairnet(xp[keep & (fold3 != f)], yp[keep & (fold3 != f)], seed=seed + f)
            held = fold3[: len(y)] == f
            oof_net[held] = member.probability(pairs[held])
            members.append(member)
        x = np.hstack([x, oof_net[:, None]])
        net = PairEnsemble(members)
    fold = _folds(groups, 5, seed)
    oof = np.zeros(len(y), dtype=np.float64)
    for f in range(5):
        oof[fold == f] = _model(seed).fit(x[fold != f], y[fold != f]).predict_proba(x[fold == f])[:, 1]
    threshold = threshold_for_precision(oof, y, target_precision)
    trees = Trees.from_sklearn(_model(seed).fit(x, y))
    return Verifier(trees, threshold, {"pairs": len(y), "target_precision": target_precision, **(meta or {})}, net)


def threshold_for_precision(scores: np.ndarray, y: np.ndarray, target: float, min_hits: int = 20) -> float:
    """The lowest score threshold at which precision (share of y == 1 among scores ≥ t) is ≥ target."""
    order = np.argsort(-scores)
    hits = np.cumsum(y[order])
    precision = hits / np.arange(1, len(y) + 1)
    ok = np.where((precision >= target) & (np.arange(1, len(y) + 1) >= min_hits))[0]
    if len(ok) == 0:
        return float(scores.max()) + 1e-6  # nothing reaches it: serve nothing
    return float(scores[order][ok.max()])
