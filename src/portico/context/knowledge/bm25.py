"""BM25 over chunk texts with bm25s (Lucene variant), English stop words and the Snowball stemmer.

Each chunk's stemmed tokens are kept, so after a write the index is rebuilt from tokens (no re-tokenising) on the
next search. Scores come back for every chunk as one array, which makes metadata filters a mask.
"""

from __future__ import annotations

import re

import bm25s
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


class BM25Index:
    def __init__(self, k1: float = 1.2, b: float = 0.75, analyzer: Analyzer | None = None) -> None:
        self.k1, self.b = k1, b
        self.analyze = analyzer or Analyzer()
        self._tokens: dict[int, list[str]] = {}  # chunk key → tokens
        self._keys = np.zeros(0, dtype=np.int64)  # row → chunk key, for the built index
        self._row: dict[int, int] = {}
        self._model: bm25s.BM25 | None = None
        self._dirty = True
        self._last: tuple[str, np.ndarray] | None = None  # the last query's scores (hybrid asks twice)

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, key: int, text: str) -> None:
        self._tokens[key] = self.analyze(text)
        self._dirty = True

    def add_tokens(self, key: int, tokens: list[str]) -> None:
        self._tokens[key] = tokens
        self._dirty = True

    def remove(self, key: int) -> None:
        if self._tokens.pop(key, None) is not None:
            self._dirty = True

    def _build(self) -> None:
        self._keys = np.fromiter(self._tokens.keys(), dtype=np.int64, count=len(self._tokens))
        self._row = {int(k): i for i, k in enumerate(self._keys)}
        self._model = None
        if len(self._keys):
            model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
            model.index([self._tokens[int(k)] for k in self._keys], show_progress=False)
            self._model = model
        self._dirty = False

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(chunk keys, BM25 scores) for every indexed chunk; zeros where no query term occurs."""
        if self._dirty:
            self._build()
            self._last = None
        if self._model is None:
            return self._keys, np.zeros(0, dtype=np.float32)
        if self._last is not None and self._last[0] == query:
            return self._keys, self._last[1]
        vocab = self._model.vocab_dict
        terms = [t for t in self.analyze(query) if t in vocab]
        if not terms:
            return self._keys, np.zeros(len(self._keys), dtype=np.float32)
        scores = np.asarray(self._model.get_scores(terms), dtype=np.float32)
        self._last = (query, scores)
        return self._keys, scores

    def rows(self, keys: np.ndarray) -> np.ndarray:
        if self._dirty:
            self._build()
        return np.asarray([self._row[int(k)] for k in keys], dtype=np.int64)
