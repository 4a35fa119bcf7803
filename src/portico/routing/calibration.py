"""Threshold calibration: the p_strong_wins cut-off that sends a target share of prompts to the strong model."""

from __future__ import annotations

import numpy as np


def threshold_for_share(p_strong: np.ndarray, strong_share: float) -> float:
    """A threshold t such that routing to the strong model when p ≥ t selects ``strong_share`` of the sample.

    The threshold sits halfway between the last selected and the first unselected probability, so prompts close
    to the sample route the same way. Share 0 → above every sample value; share 1 → at or below all of them.
    """
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError(f"strong_share must be in [0, 1], not {strong_share}")
    p = np.sort(np.asarray(p_strong, dtype=np.float64))[::-1]
    if len(p) == 0:
        raise ValueError("need at least one prompt to calibrate on")
    k = round(strong_share * len(p))
    if k <= 0:
        return float(np.nextafter(p[0], np.inf))
    if k >= len(p):
        return float(p[-1])
    return float((p[k - 1] + p[k]) / 2.0) if p[k - 1] > p[k] else float(np.nextafter(p[k], np.inf))


def strong_share(p_strong: np.ndarray, threshold: float) -> float:
    """The share of ``p_strong`` at or above ``threshold`` (what a threshold routes to the strong model)."""
    p = np.asarray(p_strong, dtype=np.float64)
    return float(np.mean(p >= threshold)) if len(p) else 0.0
