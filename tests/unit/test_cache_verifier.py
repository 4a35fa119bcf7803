"""The verifier's pair network: it sees which direction two embeddings disagree in, which cosine and words cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from portico.cache.pairnet import PairNet, pair_vectors
from portico.cache.training import fit_verifier
from portico.cache.verifier import Verifier

DIM = 16


def _pairs(n: int, rng: np.random.Generator, offset: int = 0) -> tuple[list[str], list[str], np.ndarray, np.ndarray,
                                                                      np.ndarray]:  # fmt: skip
    """(q1, q2, labels, v1, v2), in ``fit_verifier``'s argument order."""
    """Duplicates differ from their partner in a random direction, non-duplicates along axis 0, by the same
    amount: cosine similarity and the texts (same pattern either way) carry no signal; the direction does."""
    q1, q2, v1, v2, y = [], [], [], [], []
    for i in range(n):
        a = rng.normal(size=DIM)
        a /= np.linalg.norm(a)
        dup = i % 2 == 0
        if dup:
            d = rng.normal(size=DIM)
            d[0] = 0
        else:
            d = np.zeros(DIM)
            d[0] = rng.choice([-1.0, 1.0])
        b = a + 0.35 * d / np.linalg.norm(d)
        q1.append(f"question number {i + offset} about topic")
        q2.append(f"question number {i + offset} about topic, please")
        v1.append(a)
        v2.append(b / np.linalg.norm(b))
        y.append(int(dup))
    f32 = np.float32
    return q1, q2, np.array(y, dtype=np.int8), np.array(v1, dtype=f32), np.array(v2, dtype=f32)


def _accuracy(v: Verifier, q1: list[str], q2: list[str], y: np.ndarray, v1: np.ndarray, v2: np.ndarray) -> float:
    right = 0
    for i in range(len(y)):
        cos = float(v1[i] @ v2[i])
        p = v.probability(v.rows(q2[i], v2[i], [(q1[i], cos, v1[i])]))[0]
        right += int((p >= 0.5) == bool(y[i]))
    return right / len(y)


def test_pair_network_learns_the_direction_of_disagreement(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = _pairs(1500, rng)
    test = _pairs(200, rng, offset=10_000)
    with_net = fit_verifier(*train, pair_model=True)
    without = fit_verifier(*train, pair_model=False)
    assert with_net.pairnet is not None and without.pairnet is None
    assert _accuracy(with_net, *test) > 0.9
    assert _accuracy(without, *test) < 0.75  # the hand features alone cannot see it: the test is not vacuous

    with_net.save(tmp_path / "v")
    back = Verifier.load(tmp_path / "v")
    q1, q2, _, v1, v2 = test
    rows = with_net.rows(q2[0], v2[0], [(q1[0], 0.9, v1[0]), (q1[1], 0.5, v1[1])])
    assert rows.shape == (2, with_net.n_features)
    assert np.allclose(back.probability(back.rows(q2[0], v2[0], [(q1[0], 0.9, v1[0]), (q1[1], 0.5, v1[1])])),
                       with_net.probability(rows))  # fmt: skip
    assert back.pairnet is not None and back.threshold == with_net.threshold


def test_numpy_pair_network_matches_sklearn() -> None:
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(1)
    x = pair_vectors(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
    y = (x[:, 0] > 0).astype(int)
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x, y)
    assert np.allclose(PairNet.from_sklearn(model).probability(x), model.predict_proba(x)[:, 1], atol=1e-5)


def test_train_verifier_cli_writes_a_loadable_verifier_with_its_pair_network(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from portico.cache.cli import cache_app

    subjects = ["Python", "Java", "Rust", "Go", "Haskell", "C", "Ruby", "Kotlin", "Swift", "Scala"]
    rows = []
    for i, s in enumerate(subjects * 8):
        n = i // len(subjects)
        rows.append({"question1": f"How do I learn {s} in {n + 2} weeks?",
                     "question2": f"What is the best way to learn {s} in {n + 2} weeks?", "is_duplicate": 1})
        rows.append({"question1": f"How do I learn {s} in {n + 2} weeks?",
                     "question2": f"How do I learn {subjects[(i + 1) % len(subjects)]} in {n + 2} weeks?",
                     "is_duplicate": 0})  # fmt: skip
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = CliRunner().invoke(cache_app, ["train-verifier", str(data), "--out", str(tmp_path / "v"),
                                              "--pair-model"])
    assert result.exit_code == 0, result.output
    v = Verifier.load(tmp_path / "v")
    assert v.pairnet is not None and len(v.pairnet.members) == 3 and v.n_features == 13
