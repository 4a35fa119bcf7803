"""Hand-made prompt features: length, numbers and math markers, code markers, structure. Pure Python + numpy.

These are the difficulty signals an embedding of a short prompt does not carry well (how long it is, how many
numbers it juggles, whether it asks for a calculation or code). Computing them costs tens of microseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

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


def _mean_word_len(text: str) -> float:
    words = _WORD.findall(text)
    return (sum(len(w) for w in words) / len(words)) if words else 0.0


def _option_len(text: str) -> float:
    options = _OPTION.findall(text)
    return math.log1p(sum(len(o) for o in options) / len(options)) if options else 0.0


def _log_count(pattern: re.Pattern[str]) -> Callable[[str], float]:
    return lambda text: math.log1p(len(pattern.findall(text)))


# name → feature of a prompt; only the features a model uses are computed at serving time.
_FEATURES: Mapping[str, Callable[[str], float]] = MappingProxyType(
    {
        "log_chars": lambda t: math.log1p(len(t)),
        "log_words": lambda t: math.log1p(len(_WORD.findall(t))),
        "log_lines": lambda t: math.log1p(t.count("\n")),
        "log_numbers": _log_count(_NUMBER),
        "digit_frac": lambda t: sum(c.isdigit() for c in t) / max(len(t), 1),
        "math_ops": _log_count(_MATH_OPS),
        "math_words": _log_count(_MATH_WORDS),
        "latex": _log_count(_LATEX),
        "code": _log_count(_CODE),
        "negation": _log_count(_NEGATION),
        "options": _log_count(_OPTION),
        "option_len": _option_len,
        "question_marks": lambda t: math.log1p(t.count("?")),
        "avg_word_len": _mean_word_len,
        "upper_frac": lambda t: sum(c.isupper() for c in t) / max(len(t), 1),
        "sentences": _log_count(_SENTENCE),
    }
)
assert tuple(_FEATURES) == FEATURE_NAMES


def prompt_features(text: str, names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """A float32 vector aligned with ``names`` (log-scaled counts, so no feature dominates by magnitude)."""
    return np.asarray([_FEATURES[n](text) for n in names], dtype=np.float32)


def feature_matrix(texts: list[str], names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    if not texts:
        return np.zeros((0, len(names)), dtype=np.float32)
    return np.stack([prompt_features(t, names) for t in texts])
