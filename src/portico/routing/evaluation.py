"""Cost/quality evaluation of a router on golden-labelled prompts (RouteLLM's protocol).

Given per prompt whether the weak and the strong model answered correctly and a router score (higher → more
reason to call the strong model), routing the top ``share`` of prompts to the strong model gives an accuracy;
PGR (performance gap recovered) rescales it so the all-weak router is 0 and the all-strong router is 1. APGR is
the mean PGR over strong-call shares 0, 1, …, 100 % (the area under the PGR curve; random routing ≈ 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHARES: tuple[float, ...] = tuple(i / 100 for i in range(101))


@dataclass(frozen=True, slots=True)
class Curve:
    shares: np.ndarray  # strong-call share per point
    accuracy: np.ndarray  # accuracy at that share
    pgr: np.ndarray  # performance gap recovered at that share
    weak: float
    strong: float

    @property
    def apgr(self) -> float:
        return float(np.trapezoid(self.pgr, self.shares) / (self.shares[-1] - self.shares[0]))

    def share_for(self, pgr: float) -> float:
        """The smallest strong-call share that recovers at least ``pgr`` of the gap (1.0 if never)."""
        hit = np.nonzero(self.pgr >= pgr - 1e-12)[0]
        return float(self.shares[hit[0]]) if len(hit) else 1.0


def order_by_score(scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices from most to least strong-worthy; equal scores are broken by a fixed random permutation, so a
    constant router behaves like a random one instead of like the data's row order."""
    scores = np.asarray(scores, dtype=np.float64)
    tiebreak = np.random.default_rng(seed).permutation(len(scores))
    return np.lexsort((tiebreak, -scores))


def cost_quality_curve(
    scores: np.ndarray,
    weak_ok: np.ndarray,
    strong_ok: np.ndarray,
    shares: np.ndarray | tuple[float, ...] = SHARES,
    seed: int = 0,
) -> Curve:
    weak_ok = np.asarray(weak_ok, dtype=np.float64)
    strong_ok = np.asarray(strong_ok, dtype=np.float64)
    n = len(weak_ok)
    order = order_by_score(scores, seed)
    # Accuracy when the first k prompts of the order go to the strong model: weak total + cumulative gain.
    gain = np.concatenate([[0.0], np.cumsum((strong_ok - weak_ok)[order])])
    shares = np.asarray(shares, dtype=np.float64)
    ks = np.rint(shares * n).astype(int)
    acc = (weak_ok.sum() + gain[ks]) / n
    weak, strong = float(weak_ok.mean()), float(strong_ok.mean())
    gap = strong - weak
    pgr = (acc - weak) / gap if abs(gap) > 1e-12 else np.zeros_like(acc)
    return Curve(shares=shares, accuracy=acc, pgr=pgr, weak=weak, strong=strong)


def apgr(scores: np.ndarray, weak_ok: np.ndarray, strong_ok: np.ndarray, seed: int = 0) -> float:
    return cost_quality_curve(scores, weak_ok, strong_ok, seed=seed).apgr


def random_apgr(weak_ok: np.ndarray, strong_ok: np.ndarray, repeats: int = 20, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([apgr(rng.random(len(weak_ok)), weak_ok, strong_ok) for _ in range(repeats)]))
