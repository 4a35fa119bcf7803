"""Training data for the verifier, built the way the cache will meet it: fill a semantic index with the first
questions, look up each second question, and take the top-k candidates with the similarity and margin the
matcher will see at serving time."""

from __future__ import annotations

import numpy as np

from portico.cache.pairnet import pair_vectors
from portico.cache.semantic import SemanticIndex
from portico.cache.verifier import N_HAND, Verifier, candidate_features, train

SCOPE = "train"


def fill(texts: list[str], vectors: np.ndarray) -> tuple[SemanticIndex, list[str], np.ndarray]:
    """An index of the distinct texts; entry values are their positions in the returned list (and rows of the
    returned vectors)."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    distinct = list(first)
    dvecs = vectors[[first[t] for t in distinct]]
    index = SemanticIndex(vectors.shape[1], len(distinct) + 1)
    index.add_many(SCOPE, distinct, dvecs, [str(k).encode() for k in range(len(distinct))], ttl=1e12)
    return index, distinct, dvecs


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


def fit_verifier(q1: list[str], q2: list[str], dup: np.ndarray, v1: np.ndarray, v2: np.ndarray, *, k: int = 4,
                 target_precision: float = 0.95, pair_model: bool = False,
                 meta: dict | None = None) -> Verifier:  # fmt: skip
    """The verifier for labelled pairs (q1[i], q2[i], dup[i]) with their embeddings: candidate rows from a cache
    filled with the q1 side and searched with the q2 side, plus — for the pair network — the labelled pairs
    themselves (Quora-style non-duplicates are hard negatives a top-k search rarely surfaces)."""
    index, entries, evecs = fill(q1, v1)
    rows, x = candidate_rows(index, q2, v2, k)
    y = labels(rows, q1, q2, dup, entries)
    groups = np.array([i for i, _, _ in rows], dtype=np.int64)
    pairs = extra = None
    if pair_model:
        pairs = pair_vectors(v2[groups], evecs[[j for _, j, _ in rows]])
        extra = (pair_vectors(v2, v1), np.asarray(dup, dtype=np.int8), np.arange(len(q1), dtype=np.int64))
    return train(x, y, target_precision=target_precision, meta=meta, groups=groups, pairs=pairs, extra=extra)


def scored_rows(verifier: Verifier, rows: list[tuple[int, int, float]], x: np.ndarray, qvecs: np.ndarray,
                evecs: np.ndarray) -> np.ndarray:  # fmt: skip
    """``candidate_rows``' hand features completed for ``verifier`` (its pair network's column, when it has one),
    in bulk: what ``Verifier.rows`` computes lookup by lookup at serving time."""
    if verifier.pairnet is None or not rows:
        return x
    pv = pair_vectors(qvecs[[i for i, _, _ in rows]], evecs[[j for _, j, _ in rows]])
    return np.hstack([x, verifier.pairnet.probability(pv)[:, None].astype(np.float32)])
