"""The hashed character n-gram part of the injection score, computed without building a sparse matrix.

sklearn's ``HashingVectorizer.transform`` costs ~0.5 ms of fixed overhead per call (input validation, a CSR
matrix, normalisation), which dominated screening a short tool output in the agent loop. The fast model only
needs one number per text: the L2-normalised n-gram count vector dotted with the n-gram weights. This computes
that number with the same tokenisation (``char_wb`` 3- to 5-grams of the lowercased text) and the same hash
(sklearn's murmurhash3, column ``abs(h) % dim``), so the weights trained through sklearn apply unchanged; a unit
test holds the two equal. A word's columns are cached: tool outputs and prompts repeat words a lot.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from sklearn.utils import murmurhash3_32

MIN_N, MAX_N = 3, 5  # the vectoriser's ngram_range (model.ngram_vectorizer)
_CACHE_WORDS = 50_000  # bounded: cleared when full (a word's columns cost a few µs to recompute)


def word_ngrams(word: str) -> list[str]:
    """sklearn's ``char_wb`` n-grams of one whitespace-free word: padded with a space each side; a word shorter
    than n yields itself once and stops the longer sizes."""
    w = f" {word} "
    out = []
    for n in range(MIN_N, MAX_N + 1):
        if len(w) <= n:
            out.append(w)
            break
        out.extend(w[i : i + n] for i in range(len(w) - n + 1))
    return out


class NgramScorer:
    """``normalize(hashed_counts(text)) @ weights`` for one weight vector over ``dim`` hashed columns.

    The numerator is linear in the counts, so each word's weight sum is cached with its columns; only the norm
    needs the merged counts (one C-level ``Counter`` over the text's columns)."""

    def __init__(self, weights: np.ndarray) -> None:
        self.dim = len(weights)
        self._w = weights.astype(np.float64).tolist()  # list indexing beats numpy scalar access per column
        self._words: dict[str, tuple[tuple[int, ...], float]] = {}

    def _word(self, word: str) -> tuple[tuple[int, ...], float]:
        dim, w = self.dim, self._w
        # murmurhash3_32 returns a signed int; sklearn takes abs() (and maps -2**31 through the modulo too)
        cols = tuple(abs(murmurhash3_32(g, 0)) % dim for g in word_ngrams(word))
        if len(self._words) >= _CACHE_WORDS:
            self._words.clear()
        entry = self._words[word] = (cols, sum(w[c] for c in cols))
        return entry

    def score(self, text: str) -> float:
        cols: list[int] = []
        num = 0.0
        words = self._words
        for word in text.lower().split():
            entry = words.get(word) or self._word(word)
            cols.extend(entry[0])
            num += entry[1]
        if not cols:
            return 0.0
        return num / math.sqrt(sum(c * c for c in Counter(cols).values()))
