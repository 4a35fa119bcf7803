"""Preference router: predicts from a prompt whether a strong model's answer would beat a weak model's.

Trained from pairwise records (prompt, model_a, model_b, winner ∈ {model_a, model_b, tie}) — the format of
Chatbot Arena and of Portico's own feedback:

1. **Bradley-Terry** ratings per model (model only; ties count half). ``p_bt(a, b)`` is the baseline.
2. Each record is oriented by rating: y = +1 when the higher-rated model won, -1 when it lost, 0 for a tie, and
   averaged per prompt. Three prompt-aware experts predict y (kNN on the embedding, ridge on TF-IDF words, ridge
   on the embedding); a ridge **stacker** combines their out-of-fold predictions with hand-made prompt features
   (length, numbers, math and code markers, …, see ``features``) into one prompt score h(x).
3. P(a beats b | x) = sigmoid(r_a - r_b + c·(h(x) - h̄)) for the higher-rated a, with c fitted on out-of-fold h.

Serving needs the prompt's embedding (shared with other steps) and its text; it is numpy and plain Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from portico.routing.bradley_terry import fit_bradley_terry, sigmoid
from portico.routing.experts import EXPERTS, KnnExpert, LinearExpert, WordExpert
from portico.routing.features import FEATURE_NAMES, feature_matrix, prompt_features

WINNERS = ("model_a", "model_b", "tie")
EmbedFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True, slots=True)
class PairwiseRecord:
    prompt: str
    model_a: str
    model_b: str
    winner: str  # model_a | model_b | tie

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> PairwiseRecord:
        a, b = str(row["model_a"]), str(row["model_b"])
        w = str(row["winner"]).strip()
        if w == a and a != b:
            w = "model_a"
        elif w == b and a != b:
            w = "model_b"
        elif w.startswith("tie"):
            w = "tie"
        if w not in WINNERS:
            raise ValueError(f"winner must be one of {', '.join(WINNERS)} (or a model's name), not {row['winner']!r}")
        return cls(prompt=str(row["prompt"]), model_a=a, model_b=b, winner=w)

    @property
    def target(self) -> float:
        """1: model_a won, 0: model_b won, 0.5: tie."""
        return {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[self.winner]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    k: int = 150  # neighbours of the kNN expert
    word_alpha: float = 10.0
    linear_alpha: float = 30.0
    stack_alpha: float = 10.0
    folds: int = 5
    seed: int = 0
    experts: tuple[str, ...] = ("knn", "words", "linear")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class PreferenceModel:
    models: list[str]
    ratings: np.ndarray  # Bradley-Terry rating per model
    strong: str
    weak: str
    experts: list[Any]  # KnnExpert | WordExpert | LinearExpert, in stacking order
    feat_mean: np.ndarray
    feat_std: np.ndarray
    stack_coef: np.ndarray  # one weight per expert, then one per prompt feature
    stack_intercept: float
    scale: float  # c
    center: float  # h̄
    info: dict[str, Any] = field(default_factory=dict)

    def _index(self, name: str) -> int:
        try:
            return self.models.index(name)
        except ValueError:
            raise KeyError(f"model '{name}' is not in the router's training data ({', '.join(self.models)})") from None

    def prompt_score(self, embedding: np.ndarray, prompt_text: str) -> float:
        """h(x): how much more than usual the stronger model is expected to win on this prompt."""
        emb = _unit(embedding)
        z = (prompt_features(prompt_text) - self.feat_mean) / self.feat_std
        parts = [e.score(emb, prompt_text) for e in self.experts]
        n = len(parts)
        return float(np.dot(self.stack_coef[:n], parts) + np.dot(self.stack_coef[n:], z) + self.stack_intercept)

    def prompt_scores(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """h(x) for many prompts at once (benchmarks, calibration)."""
        emb = _unit(embeddings)
        z = (feature_matrix(list(texts)) - self.feat_mean) / self.feat_std
        cols = [e.score_batch(emb, list(texts)) for e in self.experts]
        x = np.column_stack([*cols, z]) if cols else z
        return x @ self.stack_coef + self.stack_intercept

    def p_bt(self, a: str, b: str) -> float:
        """Bradley-Terry (model only): probability that ``a`` beats ``b``, ties counting half."""
        return float(sigmoid(self.ratings[self._index(a)] - self.ratings[self._index(b)]))

    def _p_from_score(self, a: str, b: str, h: np.ndarray | float) -> np.ndarray:
        ra, rb = self.ratings[self._index(a)], self.ratings[self._index(b)]
        gap = abs(ra - rb)
        p_hi = sigmoid(gap + self.scale * (np.asarray(h, dtype=np.float64) - self.center))
        return p_hi if ra >= rb else 1.0 - p_hi

    def p_wins(self, a: str, b: str, embedding: np.ndarray, prompt_text: str) -> float:
        """Prompt-aware probability that ``a``'s answer beats ``b``'s (ties counting half)."""
        return float(self._p_from_score(a, b, self.prompt_score(embedding, prompt_text)))

    def p_strong_wins(self, embedding: np.ndarray, prompt_text: str) -> float:
        return self.p_wins(self.strong, self.weak, embedding, prompt_text)

    def p_strong_wins_batch(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return self._p_from_score(self.strong, self.weak, self.prompt_scores(embeddings, texts))

    # -- persistence (see store.py for the versioned layout) --
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {
            "ratings": self.ratings,
            "feat_mean": self.feat_mean,
            "feat_std": self.feat_std,
            "stack_coef": self.stack_coef,
        }
        for i, e in enumerate(self.experts):
            for key, value in e.arrays().items():
                arrays[f"expert{i}.{key}"] = value
        meta = {
            "format": 1,
            "models": self.models,
            "strong": self.strong,
            "weak": self.weak,
            "experts": [e.kind for e in self.experts],
            "features": list(FEATURE_NAMES),
            "stack_intercept": self.stack_intercept,
            "scale": self.scale,
            "center": self.center,
            "info": self.info,
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> PreferenceModel:
        if meta.get("format") != 1:
            raise ValueError(f"unknown preference model format {meta.get('format')!r}")
        if list(meta["features"]) != list(FEATURE_NAMES):
            raise ValueError("the model was trained with other prompt features; retrain it")
        experts = []
        for i, kind in enumerate(meta["experts"]):
            prefix = f"expert{i}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            experts.append(EXPERTS[kind].from_arrays(sub))
        return cls(
            models=list(meta["models"]),
            ratings=np.asarray(arrays["ratings"], dtype=np.float64),
            strong=meta["strong"],
            weak=meta["weak"],
            experts=experts,
            feat_mean=np.asarray(arrays["feat_mean"], dtype=np.float32),
            feat_std=np.asarray(arrays["feat_std"], dtype=np.float32),
            stack_coef=np.asarray(arrays["stack_coef"], dtype=np.float64),
            stack_intercept=float(meta["stack_intercept"]),
            scale=float(meta["scale"]),
            center=float(meta["center"]),
            info=dict(meta.get("info", {})),
        )

    def describe(self) -> str:
        return json.dumps({"models": self.models, "strong": self.strong, "weak": self.weak, **self.info})


def _fit_experts(cfg: TrainConfig, emb: np.ndarray, texts: list[str], y: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for kind in cfg.experts:
        if kind == "knn":
            out.append(KnnExpert.fit(emb, texts, y, k=cfg.k))
        elif kind == "words":
            out.append(WordExpert.fit(emb, texts, y, alpha=cfg.word_alpha))
        elif kind == "linear":
            out.append(LinearExpert.fit(emb, texts, y, alpha=cfg.linear_alpha))
        else:
            raise ValueError(f"unknown expert '{kind}' (known: {', '.join(EXPERTS)})")
    return out


def _fit_scale(gap: np.ndarray, h: np.ndarray, target: np.ndarray, iters: int = 50) -> float:
    """c ≥ 0 maximising the likelihood of sigmoid(gap + c·h) for soft targets (1-D Newton)."""
    c = 0.0
    for _ in range(iters):
        p = sigmoid(gap + c * h)
        grad = np.sum((p - target) * h) + 1e-3 * c
        hess = np.sum(p * (1 - p) * h * h) + 1e-3
        step = grad / hess
        c -= step
        if abs(step) < 1e-10:
            break
    return max(c, 0.0)


def train(
    records: Sequence[PairwiseRecord],
    embed_fn: EmbedFn,
    *,
    strong: str | None = None,
    weak: str | None = None,
    config: TrainConfig | None = None,
) -> PreferenceModel:
    """Fit the Bradley-Terry ratings and the prompt-aware predictor. ``embed_fn(texts)`` returns one embedding
    row per text (the same embedding model the gateway uses at serving time). Deterministic for fixed inputs."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    cfg = config or TrainConfig()
    if not records:
        raise ValueError("no pairwise records to train on")
    models = sorted({r.model_a for r in records} | {r.model_b for r in records})
    if len(models) < 2:
        raise ValueError("pairwise records must compare at least two models")
    index = {m: i for i, m in enumerate(models)}
    a = np.asarray([index[r.model_a] for r in records])
    b = np.asarray([index[r.model_b] for r in records])
    t = np.asarray([r.target for r in records])
    ratings = fit_bradley_terry(a, b, t, len(models))

    # Orient every record by rating and average per prompt: y ∈ [-1, 1], +1 = the higher-rated model won.
    a_hi = ratings[a] >= ratings[b]
    y_rec = np.where(a_hi, 2 * t - 1, 1 - 2 * t)
    prompts = sorted({r.prompt for r in records})
    p_index = {p: i for i, p in enumerate(prompts)}
    rec_prompt = np.asarray([p_index[r.prompt] for r in records])
    counts = np.bincount(rec_prompt, minlength=len(prompts)).astype(np.float64)
    y = np.bincount(rec_prompt, weights=y_rec, minlength=len(prompts)) / counts

    emb = _unit(np.asarray(embed_fn(prompts)))
    feats = feature_matrix(prompts)
    feat_mean = feats.mean(axis=0)
    feat_std = feats.std(axis=0) + 1e-6
    z = (feats - feat_mean) / feat_std

    n = len(prompts)
    n_exp = len(cfg.experts)
    oof = np.zeros((n, n_exp))
    if n >= 2 * cfg.folds and n_exp:
        for fit_idx, pred_idx in KFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(prompts):
            fitted = _fit_experts(cfg, emb[fit_idx], [prompts[i] for i in fit_idx], y[fit_idx])
            sub = [prompts[i] for i in pred_idx]
            for j, e in enumerate(fitted):
                oof[pred_idx, j] = e.score_batch(emb[pred_idx], sub)
    stack_x = np.column_stack([oof, z])
    stacker = Ridge(alpha=cfg.stack_alpha).fit(stack_x, y, sample_weight=counts)
    h_oof = stack_x @ stacker.coef_ + stacker.intercept_
    center = float(np.average(h_oof, weights=counts))
    gap = np.abs(ratings[a] - ratings[b])
    target_hi = np.where(a_hi, t, 1 - t)
    scale = _fit_scale(gap, h_oof[rec_prompt] - center, target_hi)

    if strong is None or weak is None:
        order = np.argsort(-ratings, kind="stable")
        strong = strong or models[order[0]]
        weak = weak or models[order[-1]]
    for m in (strong, weak):
        if m not in index:
            raise ValueError(f"model '{m}' does not appear in the pairwise records")
    return PreferenceModel(
        models=models,
        ratings=ratings,
        strong=strong,
        weak=weak,
        experts=_fit_experts(cfg, emb, prompts, y),
        feat_mean=feat_mean.astype(np.float32),
        feat_std=feat_std.astype(np.float32),
        stack_coef=np.asarray(stacker.coef_, dtype=np.float64),
        stack_intercept=float(stacker.intercept_),
        scale=scale,
        center=center,
        info={"records": len(records), "prompts": n, "config": asdict(cfg)},
    )
