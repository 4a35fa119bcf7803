"""The shipped toxicity classifier separates clear cases and scans long answers in chunks."""

from __future__ import annotations

import numpy as np
import pytest

from portico.guardrails.injection.train import load_encoder
from portico.guardrails.toxicity import ToxicityClassifier, best_f1_threshold


@pytest.fixture(scope="module")
def clf() -> ToxicityClassifier:
    enc = load_encoder()

    async def embed(texts: list[str]) -> np.ndarray:
        return enc.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    return ToxicityClassifier.load(embed)


async def test_clear_cases(clf: ToxicityClassifier) -> None:
    t = clf.model.threshold
    assert await clf.score("Thanks for the quick reply, the new invoice looks correct.") < t
    assert await clf.score("shut up you stupid worthless idiot, nobody wants you here") >= t
    long = "Our shipping policy covers every order placed on weekdays before noon. " * 60
    assert await clf.score(long) < t
    assert await clf.score(long + " You are a stupid worthless idiot.") >= t
    assert await clf.score("   ") == 0.0


def test_best_f1_threshold() -> None:
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    assert 0.2 < best_f1_threshold(scores, np.array([0, 0, 1, 1])) <= 0.8
