"""Combining rankings: reciprocal rank fusion, weighted score fusion (min-max or z-score normalised), and
the sequential form (term candidates re-scored by embedding similarity)."""

from __future__ import annotations

from typing import Literal

import numpy as np

Normalization = Literal["minmax", "zscore"]


def rrf(rankings: list[np.ndarray], weights: list[float] | None = None, k: int = 60) -> dict[int, float]:
    """Σ w / (k + rank) over the rankings (arrays of keys, best first; ranks start at 1)."""
    weights = weights or [1.0] * len(rankings)
    out: dict[int, float] = {}
    for keys, w in zip(rankings, weights, strict=True):
        for rank, key in enumerate(keys.tolist(), start=1):
            out[key] = out.get(key, 0.0) + w / (k + rank)
    return out


def normalize(scores: np.ndarray, how: Normalization) -> np.ndarray:
    if len(scores) == 0:
        return scores
    if how == "minmax":
        lo, hi = float(scores.min()), float(scores.max())
        return (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
    sd = float(scores.std())
    return (scores - float(scores.mean())) / sd if sd > 0 else np.zeros_like(scores)


def weighted(
    lists: list[tuple[np.ndarray, np.ndarray]], weights: list[float], how: Normalization = "minmax"
) -> dict[int, float]:
    """Σ w · normalised score over the candidate lists ((keys, scores) each); a key missing from a list gets that
    list's lowest normalised value (0 for min-max)."""
    out: dict[int, float] = {}
    floors = []
    normed = []
    for keys, scores in lists:
        n = normalize(scores.astype(np.float64), how)
        normed.append((keys, n))
        floors.append(float(n.min()) if len(n) else 0.0)
    for (keys, n), w, floor in zip(normed, weights, floors, strict=True):
        for key in keys.tolist():
            out.setdefault(key, sum(wi * fi for wi, fi in zip(weights, floors, strict=True)))
        for key, s in zip(keys.tolist(), n.tolist(), strict=True):
            out[key] += w * (s - floor)
    return out


def ranked(fused: dict[int, float], k: int) -> tuple[np.ndarray, np.ndarray]:
    if not fused:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    keys = np.fromiter(fused.keys(), dtype=np.int64, count=len(fused))
    scores = np.fromiter(fused.values(), dtype=np.float64, count=len(fused))
    order = np.lexsort((keys, -scores))[:k]  # ties: lower key (older chunk) first, deterministic
    return keys[order], scores[order].astype(np.float32)
