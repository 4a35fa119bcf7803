"""The injection/jailbreak classifier: logistic regression over [MiniLM embedding ‖ hashed character n-grams ‖
heuristic families] of each chunk of the prompt; a prompt's score is its highest chunk score, so the whole
prompt is scanned, never truncated.

Weights are trained by ``python -m portico.guardrails.injection.train`` on the train splits of deepset
prompt-injections (Apache-2.0) and jackhhao jailbreak-classification (MIT) and shipped in
``guardrails/models/injection.npz`` (a few hundred KB), loaded once at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from portico.guardrails.injection.heuristics import N_FEATURES, features

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "injection.npz"
FAST_WEIGHTS = DEFAULT_WEIGHTS.with_name("injection_fast.npz")  # no embeddings: n-grams and heuristics only
SELECTION = DEFAULT_WEIGHTS.with_name("injection_selection.json")  # validation numbers and the default variant
# The one chunking of both classifiers (injection and toxicity). Training records it in the weights file and
# serving chunks with the values read from that file, so a change here takes effect only through retraining.
CHUNK_WORDS = 120  # ≈ 160-220 word pieces (PII-heavy text tokenises long): under MiniLM's 256-token window
CHUNK_STRIDE = 100
HASH_DIM = 1 << 14
_WORD = re.compile(r"\S+")


def chunks(text: str, words: int = CHUNK_WORDS, stride: int = CHUNK_STRIDE) -> list[str]:
    """Overlapping windows of whitespace-separated words covering the whole text."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= words:
        return [text.strip()] if text.strip() else []
    out = []
    for i in range(0, len(spans), stride):
        window = spans[i : i + words]
        out.append(text[window[0][0] : window[-1][1]])
        if i + words >= len(spans):
            break
    return out


def ngram_vectorizer() -> Any:
    """Hashed character 3- to 5-grams within words, L2-normalised: language-agnostic (sklearn's murmurhash, so
    the same text maps to the same columns in every process)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=HASH_DIM, alternate_sign=False,
                             lowercase=True, norm="l2", dtype=np.float32)  # fmt: skip


def design(embeddings: np.ndarray | None, texts: list[str], vectorizer: Any) -> np.ndarray:
    """The classifier's input rows for chunk texts and their (normalised) embeddings; without embeddings, the
    rows of the fast model (n-grams and heuristics only)."""
    grams = vectorizer.transform(texts).toarray() if texts else np.zeros((0, HASH_DIM), np.float32)
    heur = np.stack([features(t) for t in texts]) if texts else np.zeros((0, N_FEATURES), np.float32)
    parts = [grams, heur] if embeddings is None else [embeddings.astype(np.float32), grams, heur]
    return np.hstack(parts)


@dataclass(frozen=True)
class InjectionModel:
    """A linear classifier over chunk rows, with the chunking it was trained with (used by injection and
    toxicity)."""

    coef: np.ndarray  # (dim,)
    intercept: float
    threshold: float  # chosen on validation data from the train splits
    chunk_words: int = CHUNK_WORDS
    chunk_stride: int = CHUNK_STRIDE

    @classmethod
    def load(cls, path: Path | str = DEFAULT_WEIGHTS) -> InjectionModel:
        with np.load(path) as z:
            if "chunk_words" not in z.files:
                raise ValueError(f"{path}: weights without their chunking (trained by an older version): retrain")
            return cls(z["coef"].astype(np.float32), float(z["intercept"]), float(z["threshold"]),
                       int(z["chunk_words"]), int(z["chunk_stride"]))  # fmt: skip

    def save(self, path: Path | str) -> None:
        np.savez_compressed(path, coef=self.coef.astype(np.float16), intercept=self.intercept, threshold=self.threshold,
                            chunk_words=self.chunk_words, chunk_stride=self.chunk_stride)  # fmt: skip

    def chunks(self, text: str) -> list[str]:
        """The text's chunks exactly as the training chunked its examples."""
        return chunks(text, self.chunk_words, self.chunk_stride)

    @property
    def uses_embeddings(self) -> bool:
        return len(self.coef) != HASH_DIM + N_FEATURES

    def chunk_scores(self, rows: np.ndarray) -> np.ndarray:
        z = rows @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))
