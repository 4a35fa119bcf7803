"""The semantic cache's index and matcher: answers to earlier questions found by meaning, not by bytes.

Entries live in one hnswlib HNSW index per scope (key or tenant, application, model, system prompt), so a
search never even sees another tenant's questions. The index is bounded (oldest entry out first) and entries
expire; both are checked on the way out, so a stale or evicted entry is never served. A match needs the
cosine similarity floor and, when a verifier is configured, its probability threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import hnswlib
import numpy as np

from portico.cache.store import Clock
from portico.cache.verifier import Verifier, candidate_features


@dataclass(slots=True)
class Entry:
    id: int
    scope: str
    text: str
    vector: np.ndarray
    value: bytes
    expires: float


class SemanticIndex:
    def __init__(self, dim: int | None, max_entries: int, *, clock: Clock | None = None) -> None:
        self.dim = dim  # None: taken from the first vector added
        self.max_entries = max_entries
        self.clock = clock or time.monotonic
        self._indexes: dict[str, hnswlib.Index] = {}
        self._live: dict[str, int] = {}  # entries per scope not marked deleted
        self._entries: dict[int, Entry] = {}  # insertion order = eviction order
        self._by_text: dict[tuple[str, str], int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, scope: str, text: str, vector: np.ndarray, value: bytes, ttl: float) -> int:
        old = self._by_text.get((scope, text))
        if old is not None:  # the same question again: the newer answer replaces the older
            self._remove(old)
        while len(self._entries) >= self.max_entries:
            self._remove(next(iter(self._entries)))
        index = self._index(scope, vector.shape[-1], 1)
        self._next += 1
        vec = np.ascontiguousarray(vector, dtype=np.float32)
        index.add_items(vec[None, :], [self._next], num_threads=1, replace_deleted=True)
        self._entries[self._next] = Entry(self._next, scope, text, vec, value, self.clock() + ttl)
        self._by_text[(scope, text)] = self._next
        return self._next

    def add_many(self, scope: str, texts: list[str], vectors: np.ndarray, values: list[bytes], ttl: float) -> None:
        """Bulk load (benchmarks, warm-up): one batched insert into the scope's index."""
        if len(self._entries) + len(texts) > self.max_entries:
            raise ValueError("add_many would exceed max_entries")
        index = self._index(scope, vectors.shape[-1], len(texts))
        ids = np.arange(self._next + 1, self._next + 1 + len(texts), dtype=np.uint64)
        index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), ids, num_threads=1, replace_deleted=True)
        expires = self.clock() + ttl
        for i, t, v, val in zip(ids.tolist(), texts, vectors, values, strict=True):
            self._entries[i] = Entry(i, scope, t, v, val, expires)
            self._by_text[(scope, t)] = i
        self._next += len(texts)

    def _index(self, scope: str, dim: int, adding: int) -> hnswlib.Index:
        """The scope's index, created or grown so that ``adding`` more entries fit."""
        if self.dim is None:
            self.dim = dim
        elif dim != self.dim:
            raise ValueError(f"embedding has {dim} dimensions; this cache holds {self.dim}")
        index = self._indexes.get(scope)
        if index is None:
            index = self._indexes[scope] = hnswlib.Index(space="cosine", dim=dim)
            index.init_index(max_elements=max(16, adding), ef_construction=128, M=16, allow_replace_deleted=True)
            index.set_ef(128)
            self._live[scope] = 0
        need = self._live[scope] + adding
        if need > index.get_max_elements():
            index.resize_index(max(need, 2 * index.get_max_elements()))
        self._live[scope] += adding
        return index

    def candidates(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[Entry, float]]:
        """Up to ``k`` live entries of ``scope``, most similar first, with their cosine similarity."""
        index = self._indexes.get(scope)
        live = self._live.get(scope, 0)
        if index is None or live == 0:
            return []
        keys, dists = index.knn_query(np.ascontiguousarray(vector, dtype=np.float32), k=min(k, live), num_threads=1)
        out = []
        now = self.clock()
        for key, dist in zip(keys[0].tolist(), dists[0].tolist(), strict=True):
            e = self._entries.get(int(key))
            if e is None:
                continue
            if e.expires <= now:
                self._remove(e.id)
                continue
            out.append((e, 1.0 - float(dist)))
        return out

    def _remove(self, entry_id: int) -> None:
        e = self._entries.pop(entry_id)
        self._by_text.pop((e.scope, e.text), None)
        self._indexes[e.scope].mark_deleted(entry_id)  # its slot is reused by the next insert
        self._live[e.scope] -= 1
        if self._live[e.scope] == 0:
            del self._indexes[e.scope], self._live[e.scope]


@dataclass(frozen=True, slots=True)
class Match:
    entry: Entry | None
    similarity: float  # of the best candidate (0 when there was none)
    probability: float | None  # the verifier's, for the chosen (or best rejected) candidate


class SemanticMatcher:
    """Best candidate by the verifier's probability when there is one, else by similarity alone."""

    def __init__(self, index: SemanticIndex, *, min_similarity: float, verifier: Verifier | None = None,
                 threshold: float | None = None, k: int = 4) -> None:  # fmt: skip
        self.index = index
        self.min_similarity = min_similarity
        self.verifier = verifier
        self.threshold = threshold if threshold is not None else (verifier.threshold if verifier else None)
        self.k = k

    def match(self, scope: str, text: str, vector: np.ndarray) -> Match:
        cands = self.index.candidates(scope, vector, self.k)
        if not cands:
            return Match(None, 0.0, None)
        best_sim = cands[0][1]
        eligible = [(e, s) for e, s in cands if s >= self.min_similarity]
        if not eligible:
            return Match(None, best_sim, None)
        if self.verifier is None:
            return Match(eligible[0][0], best_sim, None)
        # Margins are over every candidate; eligible ones are the most similar, so a prefix of the rows.
        rows = candidate_features(text, [(e.text, s) for e, s in cands])[: len(eligible)]
        probs = self.verifier.probability(rows)
        i = int(np.argmax(probs))
        p = float(probs[i])
        assert self.threshold is not None
        return Match(eligible[i][0] if p >= self.threshold else None, best_sim, p)


def describe(m: Match) -> dict[str, Any]:
    out: dict[str, Any] = {"similarity": round(m.similarity, 4)}
    if m.probability is not None:
        out["verifier_p"] = round(m.probability, 4)
    return out
