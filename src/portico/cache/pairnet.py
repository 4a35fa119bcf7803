"""A small neural scorer over the two questions' embeddings, the verifier's view of what the words alone miss.

The hand features (verifier.py) see surface signals; cosine similarity squeezes 384 dimensions into one number.
Between the two, a one-hidden-layer network over the element-wise product and absolute difference of the two
embeddings learns which *directions* of disagreement change the meaning on the operator's own data (a different
programming language, a different country) and which do not (word order, politeness). It is trained with
scikit-learn and served with two numpy matrix products: a few microseconds for the handful of candidates of one
lookup, with no training library imported at serving time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def pair_vectors(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Rows of [q * c, |q - c|] for one query vector (d,) against candidate vectors (n, d), or row-wise pairs."""
    q = np.asarray(query, dtype=np.float32)
    c = np.asarray(candidates, dtype=np.float32)
    return np.concatenate([q * c, np.abs(q - c)], axis=-1)


@dataclass
class PairNet:
    weights: list[np.ndarray]
    biases: list[np.ndarray]

    def probability(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        raw = (h @ self.weights[-1] + self.biases[-1])[:, 0]
        return 1.0 / (1.0 + np.exp(-np.clip(raw, -50, 50)))

    @property
    def dim(self) -> int:
        return int(self.weights[0].shape[0])

    @classmethod
    def from_sklearn(cls, model: Any) -> PairNet:
        return cls([np.asarray(w, dtype=np.float32) for w in model.coefs_],
                   [np.asarray(b, dtype=np.float32) for b in model.intercepts_])  # fmt: skip

    def arrays(self, prefix: str = "pairnet") -> dict[str, np.ndarray]:
        out = {f"{prefix}_w{i}": w for i, w in enumerate(self.weights)}
        out |= {f"{prefix}_b{i}": b for i, b in enumerate(self.biases)}
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, layers: int, prefix: str = "pairnet") -> PairNet:
        return cls([np.asarray(arrays[f"{prefix}_w{i}"], dtype=np.float32) for i in range(layers)],
                   [np.asarray(arrays[f"{prefix}_b{i}"], dtype=np.float32) for i in range(layers)])  # fmt: skip


@dataclass
class PairEnsemble:
    """Cross-fitted members, each trained without one fold of the data; serving averages them (no refit on
    everything: the members already saw it all between them, and training costs a third less)."""

    members: list[PairNet]

    def probability(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.probability(x) for m in self.members], axis=0)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, m in enumerate(self.members):
            out |= m.arrays(f"pairnet{i}")
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, members: int, layers: int) -> PairEnsemble:
        return cls([PairNet.from_arrays(arrays, layers, f"pairnet{i}") for i in range(members)])


def fit(x: np.ndarray, y: np.ndarray, *, seed: int = 0, hidden: int = 128) -> PairNet:
    """Early stopping on a 10% validation slice keeps the small network from memorising the training pairs."""
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-4, batch_size=256, learning_rate_init=1e-3,
                          max_iter=60, early_stopping=True, n_iter_no_change=10, random_state=seed)  # fmt: skip
    model.fit(np.asarray(x, dtype=np.float32), np.asarray(y))
    return PairNet.from_sklearn(model)
