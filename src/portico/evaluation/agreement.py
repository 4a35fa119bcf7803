"""Agreement between pairwise judges, counted the way the MT-Bench paper does (Zheng et al., 2023, section 4.2).

A vote is 'a', 'b' or 'tie'. Two judges agree on an item when their votes are equal; every pair of votes two
different judges cast on the same item counts once (an item three humans rated gives a model judge three
comparisons, and three human-human ones). "With ties" counts every such pair (3-way); "without ties" drops the
pairs where either vote is a tie. Confidence intervals resample items, not votes: the votes on one item are
not independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VOTES = ("a", "b", "tie")


@dataclass(frozen=True, slots=True)
class Agreement:
    agree: int
    total: int
    ci: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.agree / self.total if self.total else float("nan")


def _check(v: str) -> str:
    if v not in VOTES:
        raise ValueError(f"a vote is 'a', 'b' or 'tie', not {v!r}")
    return v


def _counts(x: Sequence[str], y: Sequence[str], ties: bool, same_judge_skipped: bool) -> tuple[int, int]:
    agree = total = 0
    for i, u in enumerate(x):
        for j, v in enumerate(y):
            if same_judge_skipped and j <= i:  # each unordered pair of distinct judges once
                continue
            if not ties and "tie" in (_check(u), _check(v)):
                continue
            total += 1
            agree += _check(u) == _check(v)
    return agree, total


def per_item(judge: Sequence[Sequence[str]] | None, humans: Sequence[Sequence[str]], ties: bool) -> np.ndarray:
    """(n_items, 2) agree/total counts: judge vs every human vote, or (``judge`` None) human vs human."""
    if judge is not None and len(judge) != len(humans):
        raise ValueError("one list of judge votes per item")
    rows = []
    for k, hs in enumerate(humans):
        if judge is None:
            rows.append(_counts(hs, hs, ties, same_judge_skipped=True))
        else:
            rows.append(_counts(judge[k], hs, ties, same_judge_skipped=False))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def summarise(counts: np.ndarray, seed: int = 0, resamples: int = 2000, level: float = 0.95) -> Agreement:
    """Pooled agreement (sum of agreements / sum of comparisons) and a percentile bootstrap CI over items."""
    counts = counts[counts[:, 1] > 0] if len(counts) else counts
    agree, total = (int(counts[:, 0].sum()), int(counts[:, 1].sum())) if len(counts) else (0, 0)
    if total == 0:
        return Agreement(0, 0, (float("nan"), float("nan")))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(resamples, len(counts)))
    rates = counts[idx, 0].sum(axis=1) / counts[idx, 1].sum(axis=1)
    lo, hi = np.quantile(rates, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Agreement(agree, total, (float(lo), float(hi)))


def agreement(judge: Sequence[Sequence[str]] | None, humans: Sequence[Sequence[str]], ties: bool,
              seed: int = 0) -> Agreement:  # fmt: skip
    """Judge-human agreement (``judge``: each item's votes of the judge, usually one) or, with ``judge`` None,
    human-human agreement over the items more than one human rated."""
    return summarise(per_item(judge, humans, ties), seed=seed)


@dataclass(frozen=True, slots=True)
class SwapStats:
    n: int
    consistent: int  # both orders gave the same verdict (a tie in both counts)
    first: int  # the answer shown first won in both orders: position bias
    second: int  # the answer shown second won in both orders
    unparsed: int  # at least one reply had no verdict

    @property
    def consistency(self) -> float:
        return self.consistent / self.n if self.n else float("nan")


def swap_stats(verdicts: Sequence[Sequence[str | None]]) -> SwapStats:
    """``verdicts``: per item the two verdicts mapped onto the answers (as PairwiseJudge.compare reports them),
    the first from the order (a, b), the second from (b, a)."""
    consistent = first = second = unparsed = 0
    for m1, m2 in verdicts:
        if m1 is None or m2 is None:
            unparsed += 1
        elif m1 == m2:
            consistent += 1
        elif (m1, m2) == ("a", "b"):  # a won when shown first, b won when shown first
            first += 1
        elif (m1, m2) == ("b", "a"):
            second += 1
    return SwapStats(len(verdicts), consistent, first, second, unparsed)
