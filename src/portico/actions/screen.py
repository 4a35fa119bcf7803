"""Tool outputs through the injection detector before a model reads them.

A web page or an API answer is text the model may take as instructions ("ignore your instructions and …").
Every tool result is cut into segments (lines, long lines into windows of the detector's chunk size), each
segment is scored by the injection classifier's fast variant (hashed n-grams + heuristics: no embedding model,
a few ms per 1k tokens), and the agent then flags (notes it and passes the text on), strips (replaces the
flagged segments) or stops the run.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from portico.guardrails.injection.hashing import NgramScorer
from portico.guardrails.injection.heuristics import features, matched
from portico.guardrails.injection.model import FAST_WEIGHTS, HASH_DIM, InjectionModel

Action = Literal["flag", "strip", "stop"]
STRIPPED = "[removed by Portico: text that looked like instructions to the model]"
_WORD = re.compile(r"\S+")
_INLINE_CHARS = 4000  # scored in the event loop below this; larger outputs go to a thread


@dataclass(slots=True)
class Screened:
    text: str  # what the model reads (with flagged segments removed when the action is strip)
    score: float
    flagged: bool
    rules: list[str] = field(default_factory=list)
    removed: int = 0  # segments stripped


class ToolOutputScreen:
    def __init__(self, action: Action, threshold: float | None = None, weights: str | None = None) -> None:
        self.model = InjectionModel.load(weights or FAST_WEIGHTS)
        if self.model.uses_embeddings:
            raise ValueError("tool outputs are screened with the fast injection model (no embeddings)")
        self.grams = NgramScorer(self.model.coef[:HASH_DIM])
        self.heuristic_weights = self.model.coef[HASH_DIM:].astype(np.float64)
        self.threshold = threshold if threshold is not None else self.model.threshold
        self.action = action

    def segments(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character spans: each line, and a long line in windows of the detector's chunk size."""
        out: list[tuple[int, int]] = []
        pos = 0
        for line in text.splitlines(keepends=True):
            words = [m.span() for m in _WORD.finditer(line)]
            for i in range(0, len(words), self.model.chunk_words):
                window = words[i : i + self.model.chunk_words]
                out.append((pos + window[0][0], pos + window[-1][1]))
            pos += len(line)
        return out

    def _scores(self, pieces: list[str]) -> list[float]:
        """The fast model's probabilities (its rows are [hashed n-grams | heuristics]): the n-gram part as one dot
        product per piece (NgramScorer: the same numbers as ``chunk_scores(design(…))`` without sklearn's
        per-call overhead, which dominated a short tool output)."""
        out = []
        for p in pieces:
            z = self.grams.score(p) + float(features(p) @ self.heuristic_weights) + self.model.intercept
            out.append(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))  # clamped: math.exp overflows
        return out

    async def screen(self, text: str) -> Screened:
        spans = self.segments(text)
        if not spans:
            return Screened(text, 0.0, False)
        pieces = [text[a:b] for a, b in spans]
        if len(text) < _INLINE_CHARS:
            scores = self._scores(pieces)
        else:
            scores = await asyncio.to_thread(self._scores, pieces)
        hits = [i for i, s in enumerate(scores) if s >= self.threshold]
        if not hits:
            return Screened(text, max(scores), False)
        rules = sorted({r for i in hits for r in matched(pieces[i])})
        if self.action != "strip":
            return Screened(text, max(scores), True, rules)
        out, last = [], 0
        for i in hits:
            a, b = spans[i]
            out += [text[last:a], STRIPPED]
            last = b
        out.append(text[last:])
        return Screened("".join(out), max(scores), True, rules, len(hits))
