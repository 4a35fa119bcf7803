"""Prompt-aware experts: each predicts, from a prompt, the mean oriented outcome y ∈ [-1, 1] (+1: the stronger
model wins, -1: the weaker one wins, 0: tie). Training may use scikit-learn; serving is numpy and plain Python.

- ``KnnExpert``: mean outcome of the k most similar training prompts (cosine on unit embeddings).
- ``WordExpert``: ridge regression on TF-IDF of word unigrams and bigrams (topic and difficulty words).
- ``LinearExpert``: ridge regression on the embedding.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from types import MappingProxyType

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def terms(text: str) -> list[str]:
    """Lower-cased word unigrams and bigrams (the same tokens at training and serving time)."""
    toks = _TOKEN.findall(text.lower())
    return toks + [f"{x} {y}" for x, y in itertools.pairwise(toks)]


class KnnExpert:
    """Neighbours are found in a PCA projection of the embedding (``dims``), which keeps the decision fast."""

    kind = "knn"

    def __init__(self, bank: np.ndarray, values: np.ndarray, k: int, proj: np.ndarray, mean: np.ndarray) -> None:
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)  # projected, unit rows
        self.values = np.asarray(values, dtype=np.float32)
        self.k = int(min(k, len(values)))
        self.proj = np.ascontiguousarray(proj, dtype=np.float32)
        self.mean = np.asarray(mean, dtype=np.float32)

    def _project(self, emb: np.ndarray) -> np.ndarray:
        z = (np.asarray(emb, dtype=np.float32) - self.mean) @ self.proj
        return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)

    @classmethod
    def fit(cls, emb: np.ndarray, texts: list[str], y: np.ndarray, k: int = 150, dims: int | None = 64) -> KnnExpert:
        emb = np.asarray(emb, dtype=np.float32)
        d = emb.shape[1]
        if dims is None or dims >= min(d, len(emb)):
            proj, mean = np.eye(d, dtype=np.float32), np.zeros(d, dtype=np.float32)
        else:
            mean = emb.mean(axis=0)
            _, _, vt = np.linalg.svd(emb - mean, full_matrices=False)
            proj = vt[:dims].T
            # SVD signs are arbitrary; fix them so retraining on the same data gives the same arrays.
            proj = proj * np.where(proj[np.argmax(np.abs(proj), axis=0), np.arange(dims)] < 0, -1.0, 1.0)
        out = cls(np.zeros((0, proj.shape[1])), y, k, proj, mean)
        out.bank = out._project(emb)
        return out

    def _neighbour_mean(self, sims: np.ndarray) -> np.ndarray:
        # Rounded so float noise between BLAS kernels (gemv for one prompt, gemm for many) cannot reorder
        # near-equal neighbours: the same partition of the same values picks the same neighbours, one row or many.
        np.round(sims, 5, out=sims)
        cut = sims.shape[-1] - self.k
        return self.values[np.argpartition(sims, cut, axis=-1)[..., cut:]].mean(axis=-1)

    def score(self, emb: np.ndarray, text: str) -> float:
        if self.k >= len(self.values):
            return float(self.values.mean())
        return float(self._neighbour_mean(self.bank @ self._project(emb)))

    def score_batch(self, emb: np.ndarray, texts: list[str]) -> np.ndarray:
        out = np.empty(len(emb))
        if self.k >= len(self.values):
            out[:] = self.values.mean()
            return out
        for i in range(0, len(emb), 256):
            out[i : i + 256] = self._neighbour_mean(self._project(emb[i : i + 256]) @ self.bank.T)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank, "values": self.values, "k": np.asarray(self.k), "proj": self.proj, "mean": self.mean}

    @classmethod
    def from_arrays(cls, arr: dict[str, np.ndarray]) -> KnnExpert:
        return cls(arr["bank"], arr["values"], int(arr["k"]), arr["proj"], arr["mean"])


class _Ids(dict[str, int]):
    """Word → id; an unknown word is -1 (not stored, so serving never grows the table)."""

    def __missing__(self, key: str) -> int:
        return -1


class WordExpert:
    kind = "words"

    def __init__(self, vocab: list[str], weights: np.ndarray, idf: np.ndarray, intercept: float) -> None:
        self.vocab = list(vocab)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.intercept = float(intercept)
        self._idf_w = self.idf * self.weights
        self._idf_sq = self.idf * self.idf
        # Serving tables: every word of the vocabulary gets an id; a unigram term is found by its word id, a bigram
        # term by the key (left id · words + right id) in a sorted array.
        words = sorted({w for t in self.vocab for w in t.split(" ")})
        self._word_id = _Ids(zip(words, range(len(words)), strict=True))
        self._n_words = max(len(words), 1)
        self._uni_term = np.full(len(words), -1, dtype=np.int64)
        bi_keys, bi_term = [], []
        for j, t in enumerate(self.vocab):
            left, _, right = t.partition(" ")
            if right:
                bi_keys.append(self._word_id[left] * self._n_words + self._word_id[right])
                bi_term.append(j)
            else:
                self._uni_term[self._word_id[left]] = j
        order = np.argsort(np.asarray(bi_keys, dtype=np.int64), kind="stable")
        self._bi_keys = np.asarray(bi_keys, dtype=np.int64)[order]
        self._bi_term = np.asarray(bi_term, dtype=np.int64)[order]

    @classmethod
    def fit(
        cls,
        emb: np.ndarray,
        texts: list[str],
        y: np.ndarray,
        alpha: float = 10.0,
        min_df: int = 2,
        max_terms: int = 50000,
    ) -> WordExpert:
        from scipy.sparse import csr_matrix
        from sklearn.linear_model import Ridge

        docs = [Counter(terms(t)) for t in texts]
        df = Counter(t for d in docs for t in d)
        vocab = sorted((t for t, n in df.items() if n >= min_df), key=lambda t: (-df[t], t))[:max_terms]
        vocab.sort()
        index = {t: i for i, t in enumerate(vocab)}
        n = len(texts)
        idf = np.asarray([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab])
        rows, cols, vals = [], [], []
        for r, d in enumerate(docs):
            entries = [(index[t], (1.0 + math.log(c)) * idf[index[t]]) for t, c in d.items() if t in index]
            norm = math.sqrt(sum(v * v for _, v in entries)) or 1.0
            for c, v in entries:
                rows.append(r)
                cols.append(c)
                vals.append(v / norm)
        x = csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)))
        model = Ridge(alpha=alpha, solver="sparse_cg", tol=1e-6).fit(x, y)
        return cls(vocab, model.coef_, idf, float(model.intercept_))

    def score(self, emb: np.ndarray | None, text: str) -> float:
        # Vectorised: tokens become word ids in one C-level map, bigrams are looked up as id pairs in a sorted key
        # array, and the TF-IDF dot product runs in numpy (no Python loop over the prompt's terms).
        toks = _TOKEN.findall(text.lower())
        if not toks:
            return self.intercept
        ids = np.fromiter(map(self._word_id.__getitem__, toks), dtype=np.int64, count=len(toks))
        uni = self._uni_term[ids[ids >= 0]]
        left, right = ids[:-1], ids[1:]
        both = (left >= 0) & (right >= 0)
        keys = left[both] * self._n_words + right[both]
        pos = np.minimum(np.searchsorted(self._bi_keys, keys), len(self._bi_keys) - 1)
        bi = self._bi_term[pos[self._bi_keys[pos] == keys]] if len(self._bi_keys) else pos[:0]
        found = np.concatenate((uni[uni >= 0], bi))
        if not len(found):
            return self.intercept
        term, count = np.unique(found, return_counts=True)
        tf = 1.0 + np.log(count)
        sq = float(np.dot(tf * tf, self._idf_sq[term]))
        return self.intercept + float(np.dot(tf, self._idf_w[term])) / math.sqrt(sq)

    def score_batch(self, emb: np.ndarray | None, texts: list[str]) -> np.ndarray:
        return np.asarray([self.score(None, t) for t in texts])

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "vocab": np.asarray(self.vocab, dtype=np.str_),
            "weights": self.weights,
            "idf": self.idf,
            "intercept": np.asarray(self.intercept),
        }

    @classmethod
    def from_arrays(cls, arr: dict[str, np.ndarray]) -> WordExpert:
        return cls([str(t) for t in arr["vocab"]], arr["weights"], arr["idf"], float(arr["intercept"]))


class LinearExpert:
    kind = "linear"

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = float(intercept)

    @classmethod
    def fit(cls, emb: np.ndarray, texts: list[str], y: np.ndarray, alpha: float = 30.0) -> LinearExpert:
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=alpha).fit(emb, y)
        return cls(model.coef_, float(model.intercept_))

    def score(self, emb: np.ndarray, text: str) -> float:
        return float(emb.astype(np.float32, copy=False) @ self.coef) + self.intercept

    def score_batch(self, emb: np.ndarray, texts: list[str]) -> np.ndarray:
        return emb.astype(np.float32) @ self.coef + self.intercept

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": np.asarray(self.intercept)}

    @classmethod
    def from_arrays(cls, arr: dict[str, np.ndarray]) -> LinearExpert:
        return cls(arr["coef"], float(arr["intercept"]))


EXPERTS = MappingProxyType({c.kind: c for c in (KnnExpert, WordExpert, LinearExpert)})
