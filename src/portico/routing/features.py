"""Hand-made prompt features: length, numbers and math markers, code markers, structure. Pure Python + numpy.

These are the difficulty signals an embedding of a short prompt does not carry well (how long it is, how many
numbers it juggles, whether it asks for a calculation or code). Computing them costs tens of microseconds.
"""

from __future__ import annotations

import math
import re

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_numbers",
    "digit_frac",
    "math_ops",
    "math_words",
    "latex",
    "code",
    "negation",
    "options",
    "option_len",
    "question_marks",
    "avg_word_len",
    "upper_frac",
    "sentences",
)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z]+")
_MATH_OPS = re.compile(r"[=+*/^<>%$]|(?<=\d)\s*-\s*(?=\d)|\bsqrt\b|\blog\b|\bsin\b|\bcos\b")
_MATH_WORDS = re.compile(
    r"\b(?:calculate|compute|how many|how much|total|sum|product|probability|percent|average|ratio|solve|"
    r"equation|integer|value of|each|per|times|twice|half|remaining|left|cost|price|profit|speed|rate)\b",
    re.IGNORECASE,
)
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|cdot|times|le|ge|pi|alpha|beta|theta|mathbb)|\$[^$]+\$")
_CODE = re.compile(
    r"```|\bdef |\breturn\b|\bprint\(|#include|\bclass \w+|;\s*$|\{|\}|\bfor \w+ in\b|\bwhile\b|\bfunction\b|"
    r"\bSELECT\b|==|!=|->",
    re.MULTILINE,
)
_NEGATION = re.compile(r"\b(?:not|except|least|false|never|incorrect|cannot)\b", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?[A-Ha-h][.)]\s+(.*)$", re.MULTILINE)
_SENTENCE = re.compile(r"[.!?](?:\s|$)")


def prompt_features(text: str) -> np.ndarray:
    """A float32 vector aligned with FEATURE_NAMES (log-scaled counts, so no feature dominates by magnitude)."""
    chars = len(text)
    words = _WORD.findall(text)
    n_words = len(words)
    numbers = _NUMBER.findall(text)
    digits = sum(c.isdigit() for c in text)
    upper = sum(c.isupper() for c in text)
    options = _OPTION.findall(text)
    option_len = (sum(len(o) for o in options) / len(options)) if options else 0.0
    return np.asarray(
        [
            math.log1p(chars),
            math.log1p(n_words),
            math.log1p(text.count("\n")),
            math.log1p(len(numbers)),
            digits / max(chars, 1),
            math.log1p(len(_MATH_OPS.findall(text))),
            math.log1p(len(_MATH_WORDS.findall(text))),
            math.log1p(len(_LATEX.findall(text))),
            math.log1p(len(_CODE.findall(text))),
            math.log1p(len(_NEGATION.findall(text))),
            math.log1p(len(options)),
            math.log1p(option_len),
            math.log1p(text.count("?")),
            (sum(len(w) for w in words) / n_words) if n_words else 0.0,
            upper / max(chars, 1),
            math.log1p(len(_SENTENCE.findall(text))),
        ],
        dtype=np.float32,
    )


def feature_matrix(texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.stack([prompt_features(t) for t in texts])
