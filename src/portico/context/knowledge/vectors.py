"""Chunk vectors: an exact in-memory matrix (cosine = dot product of normalised rows) and, above a size
threshold, an hnswlib HNSW index for unfiltered approximate search, updated in place by writes (new vectors added,
removed ones marked deleted) and rebuilt only when tombstones outnumber live vectors. Filtered searches are exact
over the rows the filter allows, so a narrow filter never starves the result list.

A chunk may have several vectors: one for its whole text and one per further window when the text is longer than
the embedding model reads (see KnowledgeBase). A chunk's similarity is its best vector's (MaxP), so the end of a
long chunk is found too, not only its first few hundred word pieces."""

from __future__ import annotations

import hnswlib
import numpy as np

MAX_VECTORS = 64  # per chunk; HNSW labels are key * MAX_VECTORS + window


class VectorIndex:
    def __init__(self, dim: int, ann_threshold: int = 20_000) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold  # below this many vectors exact search is as fast as HNSW
        self._keys = np.zeros(0, dtype=np.int64)  # chunk keys, in row order
        self._starts = np.zeros(0, dtype=np.int64)  # first matrix row of each chunk (its rows are contiguous)
        self._counts = np.zeros(0, dtype=np.int64)  # vectors per chunk
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._row: dict[int, int] = {}  # chunk key → index into _keys
        self._order: np.ndarray | None = None  # indexes into _keys sorted by key (vectorised key lookups)
        self._pending: dict[int, np.ndarray | None] = {}  # key → vectors (add) or None (remove), not yet merged
        self._ann: hnswlib.Index | None = None
        self._ann_deleted = 0  # labels marked deleted in the HNSW graph

    def __len__(self) -> int:
        self._merge()
        return len(self._keys)

    def add(self, keys: list[int], vectors: np.ndarray | list[np.ndarray]) -> None:
        """One vector (dim,) or several (n, dim) per key."""
        for k, v in zip(keys, vectors, strict=True):
            m = np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1])
            if m.shape[1] != self.dim or not 1 <= len(m) <= MAX_VECTORS:
                raise ValueError(f"expected 1-{MAX_VECTORS} vectors of dimension {self.dim}, got {v.shape}")
            self._pending[int(k)] = m

    def remove(self, keys: list[int]) -> None:
        for k in keys:
            self._pending[int(k)] = None

    def _merge(self) -> None:
        if not self._pending:
            return
        keep = [i for i, k in enumerate(self._keys.tolist()) if k not in self._pending]
        added = [(k, v) for k, v in self._pending.items() if v is not None]
        if self._ann is not None:  # the HNSW graph is updated in place, never rebuilt per write
            gone = [k for k, v in self._pending.items() if k in self._row]
            self._ann_update([(k, int(self._counts[self._row[k]])) for k in gone], added)
        rows = np.concatenate([np.arange(s, s + c) for s, c in zip(self._starts[keep], self._counts[keep], strict=True)]
                              ) if keep else np.zeros(0, dtype=np.int64)  # fmt: skip
        counts = np.concatenate([self._counts[keep], np.asarray([len(v) for _, v in added], dtype=np.int64)])
        self._keys = np.concatenate([self._keys[keep], np.asarray([k for k, _ in added], dtype=np.int64)])
        self._matrix = np.concatenate([self._matrix[rows], *[v for _, v in added]])
        self._counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
        self._row = {k: i for i, k in enumerate(self._keys.tolist())}
        self._order = None
        self._pending.clear()

    def _ann_update(self, removed: list[tuple[int, int]], added: list[tuple[int, np.ndarray]]) -> None:
        ann = self._ann
        assert ann is not None
        for k, n in removed:
            for j in range(n):
                ann.mark_deleted(k * MAX_VECTORS + j)
            self._ann_deleted += n
        if added:
            vecs = np.concatenate([v for _, v in added])
            labels = np.asarray([k * MAX_VECTORS + j for k, v in added for j in range(len(v))], dtype=np.uint64)
            need = ann.get_current_count() + len(vecs)
            if need > ann.get_max_elements():
                ann.resize_index(max(need, 2 * ann.get_max_elements()))
            # A label marked deleted and added again (a replaced chunk) is revived with the new vector by hnswlib.
            ann.add_items(vecs, labels, num_threads=1)
        if self._ann_deleted > ann.get_current_count() // 2:  # mostly tombstones: rebuild on the next search
            self._ann = None

    def _per_chunk(self, sims: np.ndarray) -> np.ndarray:
        """Row similarities → each chunk's best."""
        if len(self._matrix) == len(self._keys):
            return sims
        return np.maximum.reduceat(sims, self._starts) if len(sims) else sims

    def key_scores(self, query: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Each given chunk's similarity to ``query`` (its best vector's)."""
        self._merge()
        if not len(keys):
            return np.zeros(0, dtype=np.float32)
        q = query.astype(np.float32)
        if self._order is None:
            self._order = np.argsort(self._keys, kind="stable")
        idx = self._order[np.minimum(np.searchsorted(self._keys, keys, sorter=self._order), len(self._keys) - 1)]
        if (self._keys[idx] != keys).any():
            raise KeyError("chunk key not in the vector index")
        counts = self._counts[idx]
        if (counts == 1).all():
            return self._matrix[self._starts[idx]] @ q
        rows = np.concatenate([np.arange(s, s + c) for s, c in zip(self._starts[idx], counts, strict=True)])
        return np.maximum.reduceat(self._matrix[rows] @ q, np.concatenate([[0], np.cumsum(counts)[:-1]]))

    def scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk keys, cosine similarity) for every chunk, exact."""
        self._merge()
        return self._keys, self._per_chunk(self._matrix @ query.astype(np.float32))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (keys, cosine similarities), best first: HNSW above the threshold, exact below it."""
        self._merge()
        n = len(self._matrix)
        if n == 0 or k <= 0:
            return self._keys[:0], np.zeros(0, dtype=np.float32)
        if n < self.ann_threshold:
            keys, sims = self.scores(query)
            return top_k(keys, sims, k)
        ann = self._ann_index()
        want = min(k, len(self._keys))
        fetch = min(n, k if n == len(self._keys) else 2 * k)
        while True:  # a chunk's windows may take several neighbours: ask for more until k chunks are found
            labels, dists = ann.knn_query(query.astype(np.float32), k=fetch, num_threads=1)
            best: dict[int, float] = {}
            for label, d in zip(labels[0].tolist(), dists[0].tolist(), strict=True):
                key = int(label) // MAX_VECTORS
                best[key] = max(best.get(key, -2.0), 1.0 - d)
            if len(best) >= want or fetch >= n:
                break
            fetch = min(n, 2 * fetch)
        order = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        return (np.asarray([kk for kk, _ in order], dtype=np.int64),
                np.asarray([s for _, s in order], dtype=np.float32))  # fmt: skip

    def _ann_index(self) -> hnswlib.Index:
        if self._ann is None:  # built once; later writes update it in place (see _merge)
            ann = hnswlib.Index(space="cosine", dim=self.dim)
            ann.init_index(max_elements=len(self._matrix), ef_construction=128, M=16)
            labels = np.concatenate([k * MAX_VECTORS + np.arange(c) for k, c in
                                     zip(self._keys.tolist(), self._counts.tolist(), strict=True)])  # fmt: skip
            ann.add_items(self._matrix, labels.astype(np.uint64), num_threads=1)
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
