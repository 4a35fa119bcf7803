"""The semantic cache's index and matcher: answers to earlier questions found by meaning, not by bytes.

Entries live in one hnswlib HNSW index per scope (key or tenant, application, model, system prompt), so a
search never even sees another tenant's questions. The index is bounded (oldest entry out first) and entries
expire; both are checked on the way out, so a stale or evicted entry is never served. A match needs the
cosine similarity floor and, when a verifier is configured, its probability threshold.

``SemanticStore`` is the contract the ``semantic_cache`` step and the matcher use: this embedded index (one
process), PostgreSQL + pgvector (semantic_pg.py) and Redis (semantic_redis.py) implement it, the latter two so
that several Portico replicas share one cache. The embedded index also keeps its synchronous ``add`` /
``candidates`` for training and benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import hnswlib
import numpy as np

from portico.cache.store import Clock
from portico.cache.verifier import Verifier


@dataclass(slots=True)
class Entry:
    id: int
    scope: str
    text: str
    vector: np.ndarray
    value: bytes
    expires: float  # on the store's clock: the embedded index's (monotonic by default), epoch seconds when shared


class SemanticStore(Protocol):
    """Where the semantic cache keeps its entries. Every implementation keeps scopes apart (a search only ever
    returns entries of the scope asked for), never returns an expired or evicted entry, holds at most its bound
    (oldest entry out first) and replaces the answer when the same question is stored again in the same scope."""

    async def put(self, scope: str, text: str, vector: np.ndarray, value: bytes, ttl: float) -> None: ...

    async def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[Entry, float]]:
        """Up to ``k`` live entries of ``scope``, most similar first, with their cosine similarity."""
        ...

    async def count(self) -> int:
        """Entries held (an upper bound on the live ones: some may have expired unseen)."""
        ...

    async def close(self) -> None: ...


class SemanticIndex:
    """The embedded store: in this process only, lost on restart."""

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

    # -- SemanticStore ----------------------------------------------------------------------------------------
    async def put(self, scope: str, text: str, vector: np.ndarray, value: bytes, ttl: float) -> None:
        self.add(scope, text, vector, value, ttl)

    async def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[Entry, float]]:
        return self.candidates(scope, vector, k)

    async def count(self) -> int:
        return len(self)

    async def close(self) -> None:
        return None

    # -- synchronous API (training, benchmarks, the Redis store's local mirror) -----------------------------------
    def add(self, scope: str, text: str, vector: np.ndarray, value: bytes, ttl: float, *,
            entry_id: int | None = None) -> int:  # fmt: skip
        """Store an entry; ``entry_id`` (a mirror of a shared store) keeps the id the store gave it. An id is
        never reused (hnswlib's slot reuse would mix up a label added twice): adding a present id is a no-op."""
        if entry_id is not None and entry_id in self._entries:
            return entry_id
        old = self._by_text.get((scope, text))
        if old is not None:  # the same question again: the newer answer replaces the older
            self._remove(old)
        while len(self._entries) >= self.max_entries:
            self._remove(next(iter(self._entries)))
        index = self._index(scope, vector.shape[-1], 1)
        new = entry_id if entry_id is not None else self._next + 1
        self._next = max(self._next, new)
        vec = np.ascontiguousarray(vector, dtype=np.float32)
        index.add_items(vec[None, :], [new], num_threads=1, replace_deleted=True)
        self._entries[new] = Entry(new, scope, text, vec, value, self.clock() + ttl)
        self._by_text[(scope, text)] = new
        return new

    def remove(self, entry_id: int) -> bool:
        """Drop an entry by id (False when it is not here)."""
        if entry_id not in self._entries:
            return False
        self._remove(entry_id)
        return True

    def expire(self) -> int:
        """Drop every entry past its expiry; how many went."""
        now = self.clock()
        gone = [i for i, e in self._entries.items() if e.expires <= now]
        for i in gone:
            self._remove(i)
        return len(gone)

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
        if vector.shape[-1] != self.dim:  # hnswlib does not check: a wrong-sized query corrupts memory
            raise ValueError(f"embedding has {vector.shape[-1]} dimensions; this cache holds {self.dim}")
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
    """Best candidate by the verifier's probability when there is one, else by similarity alone.

    ``amatch`` searches any ``SemanticStore`` (the step); ``match`` the embedded index synchronously (training
    and benchmarks). Both decide in ``choose``."""

    def __init__(self, index: SemanticStore, *, min_similarity: float, verifier: Verifier | None = None,
                 threshold: float | None = None, k: int = 4) -> None:  # fmt: skip
        self.index = index
        self.min_similarity = min_similarity
        self.verifier = verifier
        self.threshold = threshold if threshold is not None else (verifier.threshold if verifier else None)
        self.k = k

    async def amatch(self, scope: str, text: str, vector: np.ndarray) -> Match:
        return self.choose(text, vector, await self.index.search(scope, vector, self.k))

    def match(self, scope: str, text: str, vector: np.ndarray) -> Match:
        assert isinstance(self.index, SemanticIndex), "a shared store is searched with amatch"
        return self.choose(text, vector, self.index.candidates(scope, vector, self.k))

    def choose(self, text: str, vector: np.ndarray, cands: list[tuple[Entry, float]]) -> Match:
        """The match for the query (``text``, embedding ``vector``) among ``cands`` (most similar first, each
        entry with its own ``vector``), if any passes the floor and the verifier."""
        if not cands:
            return Match(None, 0.0, None)
        best_sim = cands[0][1]
        eligible = [(e, s) for e, s in cands if s >= self.min_similarity]
        if not eligible:
            return Match(None, best_sim, None)
        if self.verifier is None:
            return Match(eligible[0][0], best_sim, None)
        # Margins are over every candidate; eligible ones are the most similar, so a prefix of the rows.
        rows = self.verifier.rows(text, vector, [(e.text, s, e.vector) for e, s in cands])[: len(eligible)]
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
