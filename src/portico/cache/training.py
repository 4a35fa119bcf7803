"""Training data for the verifier, built the way the cache will meet it: fill a semantic index with the first
questions, look up each second question, and take the top-k candidates with the similarity and margin the
matcher will see at serving time."""

from __future__ import annotations

import numpy as np

from portico.cache.semantic import SemanticIndex
from portico.cache.verifier import N_HAND, candidate_features

SCOPE = "train"


def fill(texts: list[str], vectors: np.ndarray) -> tuple[SemanticIndex, list[str]]:
    """An index of the distinct texts; entry values are their positions in the returned list."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    distinct = list(first)
    index = SemanticIndex(vectors.shape[1], len(distinct) + 1)
    index.add_many(SCOPE, distinct, vectors[[first[t] for t in distinct]], [str(k).encode() for k in
                                                                          range(len(distinct))], ttl=1e12)  # fmt: skip
    return index, distinct


def candidate_rows(
    index: SemanticIndex, queries: list[str], vectors: np.ndarray, k: int, scope: str = SCOPE
) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """Per query, its top-k candidates as (query, entry position, similarity) and their pair vectors."""
    meta: list[tuple[int, int, float]] = []
    rows = [np.zeros((0, N_HAND), dtype=np.float32)]
    for i, text in enumerate(queries):
        cands = index.candidates(scope, vectors[i], k)
        meta += [(i, int(e.value), s) for e, s in cands]
        rows.append(candidate_features(text, [(e.text, s) for e, s in cands]))
    return meta, np.concatenate(rows)


def labels(meta: list[tuple[int, int, float]], q1: list[str], q2: list[str], dup: np.ndarray,
           entries: list[str]) -> np.ndarray:  # fmt: skip
    """1 when the candidate is the query's labelled duplicate or the very same text, else 0. Candidates from
    other pairs count as different questions: nearly always true, and the rare exception is label noise."""
    y = np.zeros(len(meta), dtype=np.int8)
    for r, (i, j, _) in enumerate(meta):
        t = entries[j]
        y[r] = int(t == q2[i] or (t == q1[i] and dup[i] == 1))
    return y


def training_set(q1: list[str], q2: list[str], dup: np.ndarray, v1: np.ndarray, v2: np.ndarray,
                 k: int = 4) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    index, entries = fill(q1, v1)
    meta, x = candidate_rows(index, q2, v2, k)
    return x, labels(meta, q1, q2, dup, entries)
