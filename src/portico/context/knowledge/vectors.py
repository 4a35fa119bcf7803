"""Chunk vectors: an exact in-memory matrix (cosine = dot product of normalised rows) and, above a size
threshold, an hnswlib HNSW index for unfiltered approximate search, updated in place by writes (new vectors added,
removed ones marked deleted) and rebuilt only when tombstones outnumber live vectors. Filtered searches are exact
over the rows the filter allows, so a narrow filter never starves the result list."""

from __future__ import annotations

import hnswlib
import numpy as np


class VectorIndex:
    def __init__(self, dim: int, ann_threshold: int = 20_000) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold  # below this many vectors exact search is as fast as HNSW
        self._keys = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._row: dict[int, int] = {}
        self._pending: dict[int, np.ndarray | None] = {}  # key → vector (add) or None (remove), not yet merged
        self._ann: hnswlib.Index | None = None
        self._ann_deleted = 0  # labels marked deleted in the HNSW graph

    def __len__(self) -> int:
        self._merge()
        return len(self._keys)

    def add(self, keys: list[int], vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got {vectors.shape}")
        for k, v in zip(keys, vectors, strict=True):
            self._pending[int(k)] = v

    def remove(self, keys: list[int]) -> None:
        for k in keys:
            self._pending[int(k)] = None

    def _merge(self) -> None:
        if not self._pending:
            return
        keep = [i for i, k in enumerate(self._keys) if int(k) not in self._pending]
        added = [(k, v) for k, v in self._pending.items() if v is not None]
        if self._ann is not None:  # the HNSW graph is updated in place, never rebuilt per write
            self._ann_update([k for k, v in self._pending.items() if v is None and k in self._row], added)
        keys = np.concatenate([self._keys[keep], np.asarray([k for k, _ in added], dtype=np.int64)])
        rows = [self._matrix[keep]] + ([np.stack([v for _, v in added]).astype(np.float32)] if added else [])
        self._keys, self._matrix = keys, np.concatenate(rows) if rows else self._matrix[:0]
        self._row = {int(k): i for i, k in enumerate(self._keys)}
        self._pending.clear()

    def _ann_update(self, removed: list[int], added: list[tuple[int, np.ndarray]]) -> None:
        ann = self._ann
        assert ann is not None
        for k in removed:
            ann.mark_deleted(k)
        self._ann_deleted += len(removed)
        if added:
            need = ann.get_current_count() + len(added)
            if need > ann.get_max_elements():
                ann.resize_index(max(need, 2 * ann.get_max_elements()))
            # Re-adding a live label replaces its vector (hnswlib updates the point).
            ann.add_items(np.stack([v for _, v in added]).astype(np.float32),
                          np.asarray([k for k, _ in added], dtype=np.uint64), num_threads=1)  # fmt: skip
        if self._ann_deleted > ann.get_current_count() // 2:  # mostly tombstones: rebuild on the next search
            self._ann = None

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        self._merge()
        return self._matrix[[self._row[int(k)] for k in keys]] if len(keys) else self._matrix[:0]

    def scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk keys, cosine similarity) for every vector, exact."""
        self._merge()
        return self._keys, self._matrix @ query.astype(np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (keys, cosine similarities), best first: HNSW above the threshold, exact below it."""
        self._merge()
        n = len(self._keys)
        if n == 0 or k <= 0:
            return self._keys[:0], np.zeros(0, dtype=np.float32)
        if n < self.ann_threshold:
            keys, sims = self.scores(query)
            return top_k(keys, sims, k)
        ann = self._ann_index()
        labels, dists = ann.knn_query(query.astype(np.float32), k=min(k, n), num_threads=1)
        return np.asarray(labels[0], dtype=np.int64), (1.0 - np.asarray(dists[0], dtype=np.float32))

    def _ann_index(self) -> hnswlib.Index:
        if self._ann is None:  # built once; later writes update it in place (see _merge)
            ann = hnswlib.Index(space="cosine", dim=self.dim)
            ann.init_index(max_elements=len(self._keys), ef_construction=128, M=16)
            ann.add_items(self._matrix, self._keys.astype(np.uint64), num_threads=1)
            ann.set_ef(96)
            self._ann, self._ann_deleted = ann, 0
        return self._ann


def top_k(
    keys: np.ndarray, scores: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (keys, scores), best first; rows where ``mask`` is False are left out."""
    if mask is not None:
        keys, scores = keys[mask], scores[mask]
    if len(scores) == 0 or k <= 0:
        return keys[:0], scores[:0]
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return keys[idx], scores[idx]
