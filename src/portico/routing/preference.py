"""Preference router: predicts from a prompt whether a strong model's answer would beat a weak model's.

Trained from pairwise records (prompt, model_a, model_b, winner ∈ {model_a, model_b, tie}) — the format of
Chatbot Arena and of Portico's own feedback:

1. **Bradley-Terry** ratings per model (model only; ties count half). ``p_bt(a, b)`` is the baseline.
2. Each record is oriented by rating: y = +1 when the higher-rated model won, -1 when it lost, 0 for a tie, and
   averaged per prompt. Three prompt-aware experts predict y (kNN on the embedding, ridge on TF-IDF words, ridge
   on the embedding); a ridge **stacker** combines their out-of-fold predictions with hand-made prompt features
   (length, numbers, math and code markers, …, see ``features``) into one prompt score h(x).
3. P(a beats b | x) = sigmoid(r_a - r_b + c·(h(x) - h̄)) for the higher-rated a, with c fitted on out-of-fold h.

When records carry a ``domain`` (an application, an intent, a subject), the stack also gets the domain's mean y,
shrunk towards the overall mean (per-domain calibration); at serving time the request's domain looks it up and an
unseen or absent domain gets the overall mean. A domain with at least ``domain_correction_min`` prompts (100 by
default) also gets its own ridge correction of the residual y - h(x) on [h(x), the stack's prompt features], kept
when it lowers that domain's squared error by CV: a domain whose difficulty shows differently (math word problems,
where length means more steps) re-weights the score inside itself; the others keep the shared score.

Serving needs the prompt's embedding (shared with other steps) and its text; it is numpy and plain Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from portico.routing.bradley_terry import fit_bradley_terry, fit_logistic_offset, sigmoid
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
    domain: str | None = None  # optional: the application, intent or subject the prompt belongs to

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
        domain = row.get("domain")
        return cls(
            prompt=str(row["prompt"]),
            model_a=a,
            model_b=b,
            winner=w,
            domain=None if domain is None or domain == "" else str(domain),
        )

    @property
    def target(self) -> float:
        """1: model_a won, 0: model_b won, 0.5: tie."""
        return {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[self.winner]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    k: int = 150  # neighbours of the kNN expert
    # PCA dimensions the kNN expert searches in (None: the full embedding). 64, not 128: the same kNN APGR by 5-fold
    # CV inside the MMLU training split (0.687 vs 0.686; 32: 0.684) with half the bank to scan per decision.
    knn_dims: int | None = 64
    word_alpha: float = 10.0
    linear_alpha: float = 30.0
    stack_alpha: float = 10.0
    folds: int = 5
    seed: int = 0
    experts: tuple[str, ...] = ("knn", "words", "linear")
    # Hand-made prompt features in the stack. Length only: by 5-fold CV inside the MMLU training split the other
    # features (numbers, math/code markers, …) lowered APGR by 0.008 ± 0.003 for the prompt-only router, and with
    # the subject as domain they are within fold noise (0.710 vs 0.709, mean of three fold seeds), so the simpler
    # set stays; any of FEATURE_NAMES can be chosen.
    features: tuple[str, ...] = ("log_chars", "log_words")
    # Per-model prompt factors (RouteLLM-style matrix factorisation): model m gets a vector u_m over a
    # ``factor_dims``-dimensional PCA projection ψ(x) of the embedding; logit += (u_a - u_b)·ψ(x). 0 turns it off.
    factor_dims: int = 0
    factor_l2: float = 30.0
    # Per-domain calibration, used when records carry a domain: prompts of the domain count this much towards its
    # mean before it leaves the overall mean (30: chosen by CV with the MMLU subject as the domain; 10 or 0 within
    # 0.001).
    domain_shrink: float = 30.0
    # Per-domain correction (see the module docstring): domains with at least this many prompts get one when it
    # lowers their squared error by CV; 0 = off. alpha 300: GSM8K's 30 % dev part picked 100-300 by CV (0.644 on
    # either). On by default: with the MMLU subjects as domains it is neutral by CV inside the training split
    # (0.709 against 0.710 off; 5 of 57 subjects keep one) and, given 392 labelled GSM8K prompts, it ranks the
    # rest at APGR 0.619 ± 0.010 over 5 partitions against 0.569 ± 0.011 without it (bench-routing).
    domain_correction_min: int = 100
    domain_correction_alpha: float = 300.0


def _higher(ra: Any, rb: Any, ia: Any, ib: Any) -> Any:
    """Whether a is the higher-rated model of the pair: by rating, equal ratings by model index (a strict order,
    so P(a beats b) + P(b beats a) = 1 even for tied ratings)."""
    return (ra > rb) | ((ra == rb) & (ia < ib))


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
    features: list[str]  # the hand-made prompt features the stacker uses (see features.FEATURE_NAMES)
    feat_mean: np.ndarray
    feat_std: np.ndarray
    stack_coef: np.ndarray  # one weight per expert, then one per prompt feature
    stack_intercept: float
    scale: float  # c
    center: float  # h̄
    factors: np.ndarray | None = None  # (models, q): u_m
    psi_mean: np.ndarray | None = None  # (d,)
    psi_proj: np.ndarray | None = None  # (d, q), scaled so ψ has unit variance on the training prompts
    info: dict[str, Any] = field(default_factory=dict)
    domain_means: dict[str, float] | None = (
        None  # shrunk mean y per training domain; its stack weight follows the experts'
    )
    domain_default: float = 0.0  # the overall mean: an unseen or absent domain
    # Per-domain residual correction: [intercept, weight of h - center, weight per standardised prompt feature].
    domain_corrections: dict[str, list[float]] | None = None

    def __post_init__(self) -> None:
        # Serving constants, derived once: model positions, the stack's weights split per expert, and the feature
        # standardisation folded into the feature weights: w·(f - mean)/std = (w/std)·f - (w/std)·mean.
        n = len(self.experts)
        self._pos = {m: i for i, m in enumerate(self.models)}
        self._expert_w = [float(c) for c in self.stack_coef[:n]]
        self._domain_w = float(self.stack_coef[n]) if self.domain_means is not None else 0.0
        n += self.domain_means is not None
        self._feat_w = (np.asarray(self.stack_coef[n:], dtype=np.float64) / self.feat_std).astype(np.float64)
        self._bias = float(self.stack_intercept - np.dot(self._feat_w, self.feat_mean))
        self._corr = {d: np.asarray(c, dtype=np.float64) for d, c in (self.domain_corrections or {}).items()}
        # The same corrections with the feature standardisation folded in, for one prompt at a time:
        # (bias, weight of h - center, weights on the raw features).
        self._corr_raw = {
            d: (float(c[0] - np.dot(c[2:] / self.feat_std, self.feat_mean)), float(c[1]), c[2:] / self.feat_std)
            for d, c in self._corr.items()
        }

    def _index(self, name: str) -> int:
        try:
            return self._pos[name]
        except KeyError:
            raise KeyError(f"model '{name}' is not in the router's training data ({', '.join(self.models)})") from None

    def domain_mean(self, domain: str | None) -> float:
        if self.domain_means is None or domain is None:
            return self.domain_default
        return self.domain_means.get(domain, self.domain_default)

    def calibration(self, domain: str | None) -> str:
        """What the router knows of a domain, for the trace: "corrected" (its mean and its own correction),
        "domain" (its mean outcome) or "shared" (no record of it: the overall mean)."""
        if domain in self._corr_raw:
            return "corrected"
        if self.domain_means is not None and domain in self.domain_means:
            return "domain"
        return "shared"

    def prompt_score(self, embedding: np.ndarray, prompt_text: str, domain: str | None = None) -> float:
        """h(x): how much more than usual the stronger model is expected to win on this prompt."""
        emb = _unit(embedding)
        f = prompt_features(prompt_text, self.features)
        h = self._bias + float(np.dot(self._feat_w, f))
        for w, e in zip(self._expert_w, self.experts, strict=True):
            h += w * e.score(emb, prompt_text)
        h += self._domain_w * self.domain_mean(domain)
        corr = self._corr_raw.get(domain)  # None is never a key: no domain, no correction
        if corr is not None:
            h += corr[0] + corr[1] * (h - self.center) + float(np.dot(corr[2], f))
        return h

    def prompt_scores(
        self, embeddings: np.ndarray, texts: Sequence[str], domains: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """h(x) for many prompts at once (benchmarks, calibration)."""
        emb = _unit(embeddings)
        z = (feature_matrix(list(texts), self.features) - self.feat_mean) / self.feat_std
        cols = [e.score_batch(emb, list(texts)) for e in self.experts]
        if self.domain_means is not None:
            cols.append(np.asarray([self.domain_mean(d) for d in (domains or [None] * len(texts))]))
        x = np.column_stack([*cols, z]) if cols else z
        h = x @ self.stack_coef + self.stack_intercept
        if self._corr and domains is not None:
            _apply_corrections(h, z, domains, self._corr, self.center)
        return h

    @property
    def embedding_dim(self) -> int | None:
        """The embedding size the router was trained on (None when no part of it reads the embedding)."""
        for e in self.experts:
            if isinstance(e, KnnExpert):
                return int(e.proj.shape[0])
            if isinstance(e, LinearExpert):
                return int(e.coef.shape[0])
        return None if self.psi_mean is None else int(self.psi_mean.shape[0])

    def p_bt(self, a: str, b: str) -> float:
        """Bradley-Terry (model only): probability that ``a`` beats ``b``, ties counting half."""
        return float(sigmoid(self.ratings[self._index(a)] - self.ratings[self._index(b)]))

    def _factor_term(self, a: str, b: str, embeddings: np.ndarray) -> np.ndarray | float:
        if self.factors is None or self.psi_mean is None or self.psi_proj is None:
            return 0.0
        psi = (_unit(embeddings) - self.psi_mean) @ self.psi_proj
        return psi @ (self.factors[self._index(a)] - self.factors[self._index(b)])

    def _p_from_score(self, a: str, b: str, h: np.ndarray | float, extra: np.ndarray | float = 0.0) -> np.ndarray:
        ia, ib = self._index(a), self._index(b)
        ra, rb = self.ratings[ia], self.ratings[ib]
        sign = 1.0 if _higher(ra, rb, ia, ib) else -1.0
        return sigmoid(ra - rb + sign * self.scale * (np.asarray(h, dtype=np.float64) - self.center) + extra)

    def p_wins(self, a: str, b: str, embedding: np.ndarray, prompt_text: str, domain: str | None = None) -> float:
        """Prompt-aware probability that ``a``'s answer beats ``b``'s (ties counting half)."""
        ia, ib = self._index(a), self._index(b)
        ra, rb = float(self.ratings[ia]), float(self.ratings[ib])
        sign = 1.0 if _higher(ra, rb, ia, ib) else -1.0
        logit = ra - rb + sign * self.scale * (self.prompt_score(embedding, prompt_text, domain) - self.center)
        if self.factors is not None:
            logit += float(self._factor_term(a, b, embedding))
        return 0.5 * (1.0 + math.tanh(0.5 * logit))  # the sigmoid of bradley_terry, for one value

    def p_strong_wins(self, embedding: np.ndarray, prompt_text: str, domain: str | None = None) -> float:
        return self.p_wins(self.strong, self.weak, embedding, prompt_text, domain)

    def p_strong_wins_batch(
        self, embeddings: np.ndarray, texts: Sequence[str], domains: Sequence[str | None] | None = None
    ) -> np.ndarray:
        h = self.prompt_scores(embeddings, texts, domains)
        return self._p_from_score(self.strong, self.weak, h, self._factor_term(self.strong, self.weak, embeddings))

    # -- persistence (see store.py for the versioned layout) --
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {
            "ratings": self.ratings,
            "feat_mean": self.feat_mean,
            "feat_std": self.feat_std,
            "stack_coef": self.stack_coef,
        }
        if self.factors is not None:
            arrays.update(factors=self.factors, psi_mean=self.psi_mean, psi_proj=self.psi_proj)  # type: ignore[arg-type]
        for i, e in enumerate(self.experts):
            for key, value in e.arrays().items():
                arrays[f"expert{i}.{key}"] = value
        meta = {
            "format": 1,
            "models": self.models,
            "strong": self.strong,
            "weak": self.weak,
            "experts": [e.kind for e in self.experts],
            "features": self.features,
            "stack_intercept": self.stack_intercept,
            "scale": self.scale,
            "center": self.center,
            "info": self.info,
            "domain_means": self.domain_means,
            "domain_default": self.domain_default,
            "domain_corrections": self.domain_corrections,
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> PreferenceModel:
        if meta.get("format") != 1:
            raise ValueError(f"unknown preference model format {meta.get('format')!r}")
        unknown = set(meta["features"]) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"the model uses prompt features this version lacks ({', '.join(sorted(unknown))})")
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
            features=list(meta["features"]),
            feat_mean=np.asarray(arrays["feat_mean"], dtype=np.float32),
            feat_std=np.asarray(arrays["feat_std"], dtype=np.float32),
            stack_coef=np.asarray(arrays["stack_coef"], dtype=np.float64),
            stack_intercept=float(meta["stack_intercept"]),
            scale=float(meta["scale"]),
            center=float(meta["center"]),
            factors=arrays.get("factors"),
            psi_mean=arrays.get("psi_mean"),
            psi_proj=arrays.get("psi_proj"),
            info=dict(meta.get("info", {})),
            domain_means=meta.get("domain_means"),
            domain_default=float(meta.get("domain_default", 0.0)),
            domain_corrections=meta.get("domain_corrections"),
        )

    def describe(self) -> str:
        return json.dumps({"models": self.models, "strong": self.strong, "weak": self.weak, **self.info})


def _fit_experts(cfg: TrainConfig, emb: np.ndarray, texts: list[str], y: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for kind in cfg.experts:
        if kind == "knn":
            # Small data (a first batch of feedback) gets fewer neighbours: a tenth of the prompts, at least 10.
            out.append(KnnExpert.fit(emb, texts, y, k=min(cfg.k, max(10, len(texts) // 10)), dims=cfg.knn_dims))
        elif kind == "words":
            out.append(WordExpert.fit(emb, texts, y, alpha=cfg.word_alpha))
        elif kind == "linear":
            out.append(LinearExpert.fit(emb, texts, y, alpha=cfg.linear_alpha))
        else:
            raise ValueError(f"unknown expert '{kind}' (known: {', '.join(EXPERTS)})")
    return out


def _domain_means(
    domains: Sequence[str | None], y: np.ndarray, weights: np.ndarray, idx: np.ndarray, shrink: float
) -> tuple[dict[str, float], float]:
    """Weighted mean y per domain over the prompts ``idx``, shrunk towards the overall mean by ``shrink`` prompts."""
    overall = float(np.average(y[idx], weights=weights[idx]))
    sums: dict[str, list[float]] = {}
    for i in idx:
        d = domains[i]
        if d is not None:
            acc = sums.setdefault(d, [0.0, 0.0])
            acc[0] += weights[i] * y[i]
            acc[1] += weights[i]
    return {d: (s + shrink * overall) / (w + shrink) for d, (s, w) in sums.items()}, overall


def _fit_corrections(
    cfg: TrainConfig,
    prompt_domain: Sequence[str | None],
    h: np.ndarray,
    center: float,
    z: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
) -> dict[str, list[float]]:
    """Per domain with ≥ ``domain_correction_min`` prompts: ridge of the residual y - h on [h - center, z], kept
    only when it lowers the domain's squared error by K-fold CV inside the domain's own prompts (so a domain whose
    score is already right, or whose residual is noise, keeps the shared score)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    doms = np.asarray([d or "" for d in prompt_domain], dtype=object)
    x = np.column_stack([h - center, z])
    r = y - h
    out: dict[str, list[float]] = {}
    for d in sorted({d for d in prompt_domain if d is not None}):
        rows = np.flatnonzero(doms == d)
        if len(rows) < max(cfg.domain_correction_min, 2 * cfg.folds):
            continue
        gain = 0.0  # weighted squared error without the correction minus with it, out of fold
        for fit, held in KFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(rows):
            fi, hi = rows[fit], rows[held]
            m = Ridge(alpha=cfg.domain_correction_alpha).fit(x[fi], r[fi], sample_weight=counts[fi])
            gain += float(np.sum(counts[hi] * (r[hi] ** 2 - (r[hi] - m.predict(x[hi])) ** 2)))
        if gain > 0:
            m = Ridge(alpha=cfg.domain_correction_alpha).fit(x[rows], r[rows], sample_weight=counts[rows])
            out[d] = [float(m.intercept_), *(float(c) for c in m.coef_)]
    return out


def _apply_corrections(
    h: np.ndarray, z: np.ndarray, domains: Sequence[str | None], corr: dict[str, np.ndarray], center: float
) -> None:
    """Adds each domain's correction to its rows of ``h`` in place (z: the standardised prompt features)."""
    doms = np.asarray([d if d in corr else "" for d in domains], dtype=object)
    for d, c in corr.items():
        sel = doms == d
        if sel.any():
            h[sel] += c[0] + c[1] * (h[sel] - center) + z[sel] @ c[2:]


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


def _fit_factors(
    cfg: TrainConfig,
    emb: np.ndarray,
    rec_prompt: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    t: np.ndarray,
    offset: np.ndarray,
    n_models: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = min(cfg.factor_dims, emb.shape[0] - 1, emb.shape[1])
    mean = emb.mean(axis=0)
    _, sv, vt = np.linalg.svd(emb - mean, full_matrices=False)
    proj = vt[:q].T / (sv[:q] / np.sqrt(len(emb)) + 1e-12)
    proj = proj * np.where(proj[np.argmax(np.abs(proj), axis=0), np.arange(q)] < 0, -1.0, 1.0)
    psi = ((emb - mean) @ proj)[rec_prompt]
    x = np.zeros((len(a), n_models * q))
    rows = np.arange(len(a))
    for j in range(q):
        x[rows, a * q + j] += psi[:, j]
        x[rows, b * q + j] -= psi[:, j]
    u = fit_logistic_offset(x, t, offset, cfg.factor_l2).reshape(n_models, q)
    return u - u.mean(axis=0), mean.astype(np.float32), proj.astype(np.float32)


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
    unknown = set(cfg.features) - set(FEATURE_NAMES)
    if unknown:
        raise ValueError(f"unknown prompt features: {', '.join(sorted(unknown))} (known: {', '.join(FEATURE_NAMES)})")
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
    a_hi = _higher(ratings[a], ratings[b], a, b)
    y_rec = np.where(a_hi, 2 * t - 1, 1 - 2 * t)
    prompts = sorted({r.prompt for r in records})
    p_index = {p: i for i, p in enumerate(prompts)}
    rec_prompt = np.asarray([p_index[r.prompt] for r in records])
    counts = np.bincount(rec_prompt, minlength=len(prompts)).astype(np.float64)
    y = np.bincount(rec_prompt, weights=y_rec, minlength=len(prompts)) / counts

    emb = _unit(np.asarray(embed_fn(prompts)))
    feats = feature_matrix(prompts, cfg.features)
    feat_mean = feats.mean(axis=0)
    feat_std = feats.std(axis=0) + 1e-6
    z = (feats - feat_mean) / feat_std

    n = len(prompts)
    n_exp = len(cfg.experts)
    # A prompt's domain: that of its first record carrying one (None when no record of it has any).
    prompt_domain: list[str | None] = [None] * n
    for r, i in zip(records, rec_prompt, strict=True):
        if prompt_domain[i] is None and r.domain is not None:
            prompt_domain[i] = r.domain
    with_domains = any(d is not None for d in prompt_domain)
    oof = np.zeros((n, n_exp + with_domains))
    if n >= 2 * cfg.folds and (n_exp or with_domains):
        for fit_idx, pred_idx in KFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(prompts):
            fitted = _fit_experts(cfg, emb[fit_idx], [prompts[i] for i in fit_idx], y[fit_idx])
            sub = [prompts[i] for i in pred_idx]
            for j, e in enumerate(fitted):
                oof[pred_idx, j] = e.score_batch(emb[pred_idx], sub)
            if with_domains:
                means, overall = _domain_means(prompt_domain, y, counts, fit_idx, cfg.domain_shrink)
                oof[pred_idx, n_exp] = [means.get(prompt_domain[i], overall) for i in pred_idx]  # type: ignore[arg-type]
    domain_means: dict[str, float] | None = None
    domain_default = 0.0
    if with_domains:
        domain_means, domain_default = _domain_means(prompt_domain, y, counts, np.arange(n), cfg.domain_shrink)
        if n < 2 * cfg.folds:  # too few prompts for folds: the in-sample means
            oof[:, n_exp] = [domain_means.get(d, domain_default) for d in prompt_domain]  # type: ignore[arg-type]
    stack_x = np.column_stack([oof, z])
    stacker = Ridge(alpha=cfg.stack_alpha).fit(stack_x, y, sample_weight=counts)
    h_oof = stack_x @ stacker.coef_ + stacker.intercept_
    center = float(np.average(h_oof, weights=counts))
    corrections = None
    if with_domains and cfg.domain_correction_min > 0:
        corrections = _fit_corrections(cfg, prompt_domain, h_oof, center, z, y, counts)
        # The scale below is fitted on the corrected scores.
        _apply_corrections(h_oof, z, prompt_domain, {d: np.asarray(c) for d, c in corrections.items()}, center)
    gap = np.abs(ratings[a] - ratings[b])
    target_hi = np.where(a_hi, t, 1 - t)
    scale = _fit_scale(gap, h_oof[rec_prompt] - center, target_hi)

    factors = psi_mean = psi_proj = None
    if cfg.factor_dims > 0:
        factors, psi_mean, psi_proj = _fit_factors(
            cfg,
            emb,
            rec_prompt,
            a,
            b,
            t,
            ratings[a] - ratings[b] + np.where(a_hi, 1, -1) * scale * (h_oof[rec_prompt] - center),
            len(models),
        )

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
        features=list(cfg.features),
        feat_mean=feat_mean.astype(np.float32),
        feat_std=feat_std.astype(np.float32),
        stack_coef=np.asarray(stacker.coef_, dtype=np.float64),
        stack_intercept=float(stacker.intercept_),
        scale=scale,
        center=center,
        factors=factors,
        psi_mean=psi_mean,
        psi_proj=psi_proj,
        info={"records": len(records), "prompts": n, "config": asdict(cfg)},
        domain_means=domain_means,
        domain_default=domain_default,
        domain_corrections=corrections,
    )
