"""Judge-human and human-human agreement counted as in the MT-Bench paper (evaluation.agreement)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portico.evaluation.agreement import agreement, per_item, summarise, swap_stats


def test_judge_vs_every_human_vote_with_and_without_ties() -> None:
    judge, humans = [["a"]], [["a", "b", "tie"]]
    with_ties = agreement(judge, humans, ties=True)
    assert (with_ties.agree, with_ties.total) == (1, 3)
    no_ties = agreement(judge, humans, ties=False)  # the pair with the human's tie is dropped
    assert (no_ties.agree, no_ties.total) == (1, 2)
    assert no_ties.rate == 0.5


def test_a_judge_tie_drops_the_item_without_ties_and_matches_a_human_tie_with_them() -> None:
    assert agreement([["tie"]], [["a", "b"]], ties=False).total == 0
    assert math.isnan(agreement([["tie"]], [["a", "b"]], ties=False).rate)
    r = agreement([["tie"]], [["tie", "a"]], ties=True)
    assert (r.agree, r.total) == (1, 2)


def test_human_human_counts_each_pair_of_distinct_humans_once() -> None:
    # three humans: pairs (a,a) agree, (a,tie) and (a,tie) do not; a lone rating has no pair
    humans = [["a", "a", "tie"], ["b"]]
    with_ties = agreement(None, humans, ties=True)
    assert (with_ties.agree, with_ties.total) == (1, 3)
    no_ties = agreement(None, humans, ties=False)
    assert (no_ties.agree, no_ties.total) == (1, 1)
    assert per_item(None, [["a", "b"], ["b", "b"]], ties=True).tolist() == [[0, 1], [1, 1]]


def test_agreement_is_pooled_over_votes_not_averaged_over_items() -> None:
    # item 1: three agreeing votes; item 2: one disagreeing vote -> 3/4 (a mean of per-item rates would be 0.5)
    r = agreement([["a"], ["b"]], [["a", "a", "a"], ["a"]], ties=True)
    assert (r.agree, r.total) == (3, 4)
    assert r.rate == pytest.approx(0.75)
    assert r.ci[0] <= 0.75 <= r.ci[1]
    assert r.ci[0] < r.ci[1]


def test_bootstrap_ci_is_seeded_and_degenerate_when_every_vote_agrees() -> None:
    counts = np.asarray([[1, 1], [0, 1], [2, 3], [1, 2], [0, 0]])
    assert summarise(counts, seed=3).ci == summarise(counts, seed=3).ci
    assert summarise(counts).total == 7  # the item without comparisons is left out
    full = agreement([["a"], ["b"]], [["a"], ["b", "b"]], ties=True)
    assert full.rate == 1.0 and full.ci == (1.0, 1.0)


def test_bad_votes_and_misaligned_items_are_rejected() -> None:
    with pytest.raises(ValueError, match="vote"):
        agreement([["A"]], [["a"]], ties=True)
    with pytest.raises(ValueError, match="one list"):
        agreement([["a"]], [["a"], ["b"]], ties=True)


def test_swap_stats_separates_consistency_from_position_bias() -> None:
    s = swap_stats([("a", "a"), ("tie", "tie"), ("a", "b"), ("b", "a"), ("a", None), ("a", "tie")])
    assert (s.n, s.consistent, s.first, s.second, s.unparsed) == (6, 2, 1, 1, 1)
    assert s.consistency == pytest.approx(2 / 6)
