"""Scoring of a cache run in the QQP protocol (see bench/cache.py); no heavy imports, shared by both peers."""

from __future__ import annotations

from dataclasses import dataclass

from cache_data import Pairs


@dataclass
class Outcome:
    name: str
    correct: int
    wrong: int
    unlabelled: int
    positives: int
    lookups: int
    identical: int = 0  # correct hits whose entry is the very same text (another pair's question)

    @property
    def hits(self) -> int:
        return self.correct + self.wrong + self.unlabelled

    @property
    def precision(self) -> float:
        return self.correct / max(1, self.correct + self.wrong)

    @property
    def precision_strict(self) -> float:  # unlabelled hits counted as wrong
        return self.correct / max(1, self.hits)

    @property
    def precision_lenient(self) -> float:  # unlabelled hits counted as correct
        return (self.correct + self.unlabelled) / max(1, self.hits)

    @property
    def recall(self) -> float:
        return self.correct / max(1, self.positives)

    @property
    def recall_partner(self) -> float:  # only hits on the lookup's own labelled duplicate
        return (self.correct - self.identical) / max(1, self.positives)


def score(name: str, pairs: Pairs, served: list[int | None], entry_text: list[str]) -> Outcome:
    """``served[i]``: the index (into the filled first questions) returned for lookup i, or None."""
    correct = wrong = unlabelled = identical = 0
    for i, j in enumerate(served):
        if j is None:
            continue
        t = entry_text[j]
        if t == pairs.q2[i]:  # the very same question
            correct += 1
            identical += 1
        elif t == pairs.q1[i]:  # the lookup's own pair: labelled
            correct += int(pairs.label[i] == 1)
            wrong += int(pairs.label[i] == 0)
        else:
            unlabelled += 1
    return Outcome(name, correct, wrong, unlabelled, int(pairs.label.sum()), len(served), identical)
