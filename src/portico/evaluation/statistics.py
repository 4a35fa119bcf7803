"""Summaries of an eval run: per variant and scorer the mean with a bootstrap CI over items, pass@k / pass^k and
flakiness over repeats, cost and latency; paired comparisons between variants (paired bootstrap and a sign test
on per-item means); pairwise-judge tallies. Items are the unit of resampling (repeats are averaged per item first),
so more repeats narrow the noise of an item, not the CI's sample size.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 2000


def bootstrap_ci(values: list[float], seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    if not values:
        return (float("nan"), float("nan"))
    a = np.asarray(values, dtype=float)
    if len(a) == 1:
        return (float(a[0]), float(a[0]))
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), size=(RESAMPLES, len(a)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def paired_test(a: list[float], b: list[float], seed: int = 0) -> dict[str, Any]:
    """b - a over the same items: mean difference, its bootstrap CI and two-sided p, and a sign test."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    out: dict[str, Any] = {"n": len(d), "diff": float(d.mean()) if len(d) else 0.0, "wins": wins, "losses": losses,
                           "ties": len(d) - wins - losses}  # fmt: skip
    if len(d) >= 2:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, len(d), size=(RESAMPLES, len(d)))].mean(axis=1)
        lo, hi = np.quantile(means, [0.025, 0.975])
        out["ci"] = [float(lo), float(hi)]
        p = 2 * min(float((means <= 0).mean()), float((means >= 0).mean()))
        out["p_bootstrap"] = min(1.0, p) if d.any() else 1.0
    out["p_sign"] = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return out


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def summarise(results: list[dict[str, Any]], variants: list[str], scorers: dict[str, float], repeats: int,
              pairs: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """``scorers``: label → pass threshold. ``results``: eval_results rows."""
    # per (variant, scorer, item): the scores over repeats (None: not applicable, skipped)
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    per_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        per_variant[r["variant"]].append(r)
        for s, v in (r["scores"] or {}).items():
            if v is not None and s in scorers:
                cells[(r["variant"], s, r["item_id"])].append(float(v))
    items_of: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
    for (v, s, item), vals in cells.items():
        items_of[(v, s)][item] = vals
    out_variants: dict[str, Any] = {}
    for v in variants:
        rows = per_variant.get(v, [])
        lat = [r["latency_ms"] for r in rows if r["latency_ms"] is not None and not r["error"]]
        cost = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
        entry: dict[str, Any] = {
            "cells": len(rows), "errors": sum(1 for r in rows if r["error"]),
            "cost_usd": {"total": float(sum(cost)), "mean": float(np.mean(cost)) if cost else None},
            "latency_ms": {"p50": _percentile(lat, 0.5), "p95": _percentile(lat, 0.95),
                           "mean": float(np.mean(lat)) if lat else None, "values": [round(x, 2) for x in lat]},
            "scorers": {},
        }  # fmt: skip
        for s, threshold in scorers.items():
            by_item = items_of.get((v, s), {})
            means = [float(np.mean(x)) for x in by_item.values()]
            passes = [[x >= threshold for x in vals] for vals in by_item.values()]
            if not means:
                entry["scorers"][s] = {"n": 0}
                continue
            lo, hi = bootstrap_ci(means)
            entry["scorers"][s] = {
                "n": len(means), "mean": float(np.mean(means)), "ci": [lo, hi],
                "pass_at_k": float(np.mean([any(p) for p in passes])),
                "pass_all_k": float(np.mean([all(p) for p in passes])),
                "flaky": float(np.mean([0 < sum(p) < len(p) for p in passes])) if repeats > 1 else 0.0,
            }  # fmt: skip
        out_variants[v] = entry
    comparisons = []
    base = variants[0]
    for v in variants[1:]:
        for s in scorers:
            a, b = items_of.get((base, s), {}), items_of.get((v, s), {})
            common = sorted(set(a) & set(b))
            if not common:
                continue
            test = paired_test([float(np.mean(a[i])) for i in common], [float(np.mean(b[i])) for i in common])
            comparisons.append({"scorer": s, "a": base, "b": v, **test})
    items: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for (v, s, item), vals in cells.items():
        items[item][v][s] = float(np.mean(vals))
    return {"repeats": repeats, "variants": out_variants, "comparisons": comparisons,
            "pairwise": _pairwise(pairs or []), "items": {k: dict(v) for k, v in items.items()}}  # fmt: skip


def _pairwise(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for p in pairs:
        groups[(p["judge"], p["a"], p["b"])].append(p)
    out = []
    for (judge, a, b), rows in groups.items():
        wa = sum(r["winner"] == "a" for r in rows)
        wb = sum(r["winner"] == "b" for r in rows)
        consistent = [bool((r["details"] or {}).get("consistent")) for r in rows]
        out.append({"judge": judge, "a": a, "b": b, "n": len(rows), "wins_a": wa, "wins_b": wb,
                    "ties": len(rows) - wa - wb, "consistency": float(np.mean(consistent)) if consistent else None,
                    "p_sign": float(binomtest(wa, wa + wb, 0.5).pvalue) if wa + wb else 1.0})  # fmt: skip
    return out
