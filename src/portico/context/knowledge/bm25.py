"""BM25 over chunk texts (Lucene's variant, as bm25s computes it), English stop words and the Snowball stemmer.

The index is incremental: adding or removing a chunk updates per-term postings, document frequencies and lengths
in place, and a query scores from the current statistics. So a knowledge base that is written to while it is being
searched never pays a full rebuild per write (bm25s, which we used before, can only index a whole corpus at once).
Scores are the same as bm25s' ``method="lucene"`` (tested). Removed chunks leave dead postings behind that are
skipped; when they outnumber the live ones the postings are compacted once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

_WORD = re.compile(r"(?u)\b\w\w+\b")


class Analyzer:
    """Lower-case words of two or more characters, English stop words removed, Snowball-stemmed."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._stop = frozenset(STOPWORDS_EN)

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in self._stop]
        return self._stemmer.stemWords(words)


@dataclass(frozen=True, slots=True)
class Feedback:
    """Pseudo-relevance feedback (RM3): the query is expanded with the terms that weigh most in its ``docs`` best
    chunks (each chunk weighted by its softmaxed first-pass score), at most ``terms`` of them, and the original terms
    keep ``weight`` of the total. Helps where documents and questions use different words for one thing (NFCorpus);
    the parameters were chosen on SciFact *train* (bench/retrieval.py)."""

    docs: int = 10
    terms: int = 20
    weight: float = 0.7


@dataclass(frozen=True, slots=True)
class Expansion:
    """RM3 from feedback chunks the caller chose ((key, logit) pairs, weighted by the softmax of the logits) instead
    of the index's own first pass: a hybrid search expands from the best chunks of a first fusion with the vector
    retriever, which are relevant more often than BM25's. No chunks: the plain query, never expanded."""

    chunks: tuple[tuple[int, float], ...] = ()
    terms: int = 10
    weight: float = 0.7


def rm3(
    terms: list[str], docs: list[list[str]], logits: np.ndarray, n_terms: int, weight: float
) -> tuple[list[str], list[float]]:
    """(terms, weights) of the query expanded with the ``n_terms`` heaviest terms of the feedback ``docs`` (token
    lists, each weighted by the softmax of its logit); the original terms keep ``weight`` of the total."""
    model: Counter[str] = Counter()
    if docs:
        p = np.exp(logits - logits.max())
        p /= p.sum()
        for toks, pd in zip(docs, p.tolist(), strict=True):
            for t, n in Counter(toks).items():
                model[t] += pd * n / max(1, len(toks))
    best = model.most_common(n_terms)
    total = sum(v for _, v in best) or 1.0
    q = Counter(terms)
    # Scaled by the query length, so an expanded query scores on the same scale as the plain one.
    weights = {t: weight * n for t, n in q.items()}
    for t, v in best:
        weights[t] = weights.get(t, 0.0) + (1 - weight) * len(terms) * v / total
    return list(weights), list(weights.values())


class _Postings:
    """Rows and term frequencies of one term; appended to by writes, turned into arrays when a query reads them."""

    __slots__ = ("arrays", "rows", "tfs")

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.tfs: list[int] = []
        self.arrays: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, row: int, tf: int) -> None:
        self.rows.append(row)
        self.tfs.append(tf)
        self.arrays = None

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        if self.arrays is None:
            self.arrays = (np.asarray(self.rows, dtype=np.int64), np.asarray(self.tfs, dtype=np.float32))
        return self.arrays


class BM25Index:
    def __init__(
        self, k1: float = 1.2, b: float = 0.75, analyzer: Analyzer | None = None, feedback: Feedback | None = None
    ) -> None:
        self.k1, self.b = k1, b
        self.analyze = analyzer or Analyzer()
        self.feedback = feedback
        self._reset()

    def _reset(self) -> None:
        self._postings: dict[str, _Postings] = {}
        self._df: Counter[str] = Counter()  # live chunks containing the term
        self._docs: dict[int, tuple[int, list[str]]] = {}  # live chunk key → (row, tokens)
        self._keys: list[int] = []  # row → chunk key (rows of removed chunks stay until compaction)
        self._lengths: list[int] = []  # row → token count
        self._alive: list[bool] = []
        self._total = 0  # tokens over live chunks
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # keys, lengths, alive
        self._order: np.ndarray | None = None  # rows sorted by key, for mapping keys to rows without a loop
        self._last: tuple[tuple, np.ndarray] | None = None  # the last query's scores (hybrid asks twice)

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, key: int, text: str) -> None:
        self.add_tokens(key, self.analyze(text))

    def add_tokens(self, key: int, tokens: list[str]) -> None:
        self.remove(key)
        row = len(self._keys)
        self._keys.append(int(key))
        self._lengths.append(len(tokens))
        self._alive.append(True)
        self._docs[int(key)] = (row, tokens)
        self._total += len(tokens)
        for term, tf in Counter(tokens).items():
            p = self._postings.get(term)
            if p is None:
                p = self._postings[term] = _Postings()
            p.add(row, tf)
            self._df[term] += 1
        self._changed()

    def remove(self, key: int) -> None:
        entry = self._docs.pop(int(key), None)
        if entry is None:
            return
        row, tokens = entry
        self._alive[row] = False
        self._total -= len(tokens)
        for term in set(tokens):
            self._df[term] -= 1
            if self._df[term] <= 0:
                del self._df[term]
        self._changed()
        if len(self._keys) > 64 and len(self._docs) < len(self._keys) // 2:
            self._compact()

    def _changed(self) -> None:
        self._arrays = None
        self._order = None
        self._last = None

    def _compact(self) -> None:
        live = sorted(self._docs.items(), key=lambda kv: kv[1][0])  # keep the insertion order of rows
        self._reset()
        for key, (_, tokens) in live:
            self.add_tokens(key, tokens)

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (np.asarray(self._keys, dtype=np.int64), np.asarray(self._lengths, dtype=np.float32),
                            np.asarray(self._alive, dtype=bool))  # fmt: skip
        return self._arrays

    def scores(self, query: str, expansion: Expansion | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk keys, BM25 scores) for every row; zero where no query term occurs or the chunk was removed. The
        query is expanded by the index's own feedback, or by ``expansion`` when given."""
        keys = self._state()[0]
        if not self._docs:
            return keys, np.zeros(0, dtype=np.float32)
        if self._last is not None and self._last[0] == (query, expansion):
            return keys, self._last[1]
        terms = self.analyze(query)
        scores = self.term_scores(terms)
        if expansion is not None:
            if expansion.chunks and terms:
                chunks = [(k, s) for k, s in expansion.chunks if int(k) in self._docs]
                toks = [self._docs[int(k)][1] for k, _ in chunks]
                terms, weights = rm3(terms, toks, np.asarray([s for _, s in chunks]), expansion.terms,
                                     expansion.weight)  # fmt: skip
                scores = self.term_scores(terms, weights)
        elif self.feedback is not None and self.feedback.docs > 0 and scores.any():
            terms, weights = self.expand(terms, scores, self.feedback)
            scores = self.term_scores(terms, weights)
        self._last = ((query, expansion), scores)
        return keys, scores

    def expand(self, terms: list[str], scores: np.ndarray, fb: Feedback) -> tuple[list[str], list[float]]:
        """RM3: (terms, weights) of the expanded query, from the first-pass ``scores``."""
        keys = self._state()[0]
        top = np.argpartition(-scores, min(fb.docs, len(scores)) - 1)[: fb.docs]
        top = top[scores[top] > 0]
        toks = [self._docs[int(keys[row])][1] for row in top.tolist()]
        return rm3(terms, toks, scores[top], fb.terms, fb.weight)

    def term_scores(self, terms: list[str], weights: list[float] | None = None) -> np.ndarray:
        """Σ weight · idf · tf / (tf + k1 · (1 - b + b · len / avglen)) over the query terms (a term given twice
        counts twice, like bm25s), one score per row."""
        keys, lengths, alive = self._state()
        out = np.zeros(len(keys), dtype=np.float32)
        n = len(self._docs)
        if n == 0:
            return out
        norm = self.k1 * (1.0 - self.b + self.b * lengths / (self._total / n or 1.0))
        for i, term in enumerate(terms):
            df = self._df.get(term, 0)
            if df == 0:
                continue
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            rows, tf = self._postings[term].get()
            w = idf * (weights[i] if weights is not None else 1.0)
            out[rows] += np.float32(w) * tf / (tf + norm[rows])
        out[~alive] = 0.0
        return out

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """The rows of live chunk keys (a key not indexed is an error)."""
        all_keys = self._state()[0]
        if self._order is None:
            self._order = np.argsort(all_keys, kind="stable")
        pos = np.searchsorted(all_keys, keys, sorter=self._order)
        rows = self._order[np.minimum(pos, len(all_keys) - 1)] if len(all_keys) else pos
        alive = self._state()[2]
        if len(keys) and (len(all_keys) == 0 or (all_keys[rows] != keys).any() or not alive[rows].all()):
            raise KeyError("chunk key not in the BM25 index")
        return rows

    def terms(self, key: int) -> list[str]:
        return self._docs[int(key)][1]
