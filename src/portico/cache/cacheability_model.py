"""The cacheability classifier: is this query user-specific or time-sensitive (do not cache) or general?

It backs up the rules in ``cacheability.py``: rules catch the phrasings someone thought of ("my order", "today"),
the classifier catches the ones nobody wrote a pattern for ("did the Warriors win", "which car did I reserve").

Labelling policy (the packaged data, ``data/cacheability_train.jsonl``, follows it; so should yours):

* **do not cache (1)** when the right answer depends on something that is not in the query text:
  - *who asks* — their account, orders, bookings, bills, devices, files, messages, calendar, health records,
    history with us ("what did I…", "did my refund go through", "am I eligible"), or where they are ("near me",
    "how long will it take me to get home");
  - *when they ask* — the present state of something that changes within days or faster (weather, prices,
    scores, news, traffic, outages, "is X open", stock levels, "what's on tonight"), time relative to now ("how many
    days until…", "what time is it in Tokyo"), or an explicit ask for the latest/newest/current thing.
* **cache (0)** when every asker at any moment within the TTL should get the same answer: facts that change slowly
  or never, definitions, explanations, how-tos, code, writing tasks, advice whose inputs are all in the text. A
  possessive does not make a query personal: "how do I reset my password", "my code throws KeyError, why" and
  "what should I do if my dog eats chocolate" have one answer for everyone. "Our" that means the application's
  organisation ("what is your/our refund policy") is general; "our" that means the asker's household or team
  ("our Q3 numbers") is user-specific.

Model: logistic regression over word 1-2-grams and character 3-5-grams within words, as counts divided by the
square root of the query's total n-gram count (seen in training or not, so scoring needs no vocabulary of unseen
ones). The weights are a dictionary n-gram → weight rather than a hashed array: no collisions, and in Python a dict
lookup is cheaper than hashing. At load, each known word's own weight and its character n-grams' weights are summed
once, so scoring a query is one lookup per word and one per bigram — no numpy, no embedding — about 15 µs for a
typical question (``bench/results/cacheability.md``); a long prompt is scored on its first and last 200 characters.
The threshold is the one that maximised F1 of "do not cache" in 5-fold cross-validation on the training set, stored
with the weights.

``portico cache train-cacheability DATA.jsonl --out FILE.npz`` fits a model (by default on your examples plus the
packaged ones); the packaged model is that command run on the packaged data with ``--no-builtin``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL = DATA_DIR / "cacheability.npz"
TRAIN_DATA = DATA_DIR / "cacheability_train.jsonl"
TEST_DATA = DATA_DIR / "cacheability_test.jsonl"
FEATURES_VERSION = 3  # bump when grams() changes: a model trained on other features must not load
HEAD = TAIL = 200  # characters scored of a long prompt: its question is usually at one end
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'"})
_CLITICS = {"can't": ["can", "not"], "won't": ["will", "not"], "let's": ["let", "us"]}
_EXPANSIONS = {"re": "are", "m": "am", "ll": "will", "ve": "have", "d": "would"}
_IS_BEFORE_S = frozenset(["what", "where", "who", "how", "when", "why", "it", "that", "there", "here", "he", "she"])


def words(text: str) -> list[str]:
    """Lower-cased word tokens of the text, or of its first and last ``HEAD``/``TAIL`` characters when longer."""
    if len(text) > HEAD + TAIL:
        text = text[:HEAD] + " " + text[-TAIL:]
    out: list[str] = []
    for tok in _WORD.findall(text.lower().translate(_QUOTES)):
        base, _, clitic = tok.partition("'")
        out += _CLITICS.get(tok) or ([base] if not clitic else _clitic(base, clitic))
    return out


def _clitic(base: str, clitic: str) -> list[str]:
    """Contractions as the words they stand for, so "what's" reads like "what is" (not a feature of its own that
    happens to be common in one class); a possessive 's is dropped."""
    if clitic == "s":
        return [base, "is"] if base in _IS_BEFORE_S else [base]
    if clitic == "t" and base.endswith("n"):
        return [base[:-1], "not"]
    return [base, _EXPANSIONS[clitic]] if clitic in _EXPANSIONS else [base]


def char_grams(word: str) -> list[str]:
    """Character 3-5-grams of a word padded with spaces (they never contain ``:``, unlike the word features)."""
    p = f" {word} "
    return [p[i : i + n] for n in (3, 4, 5) for i in range(len(p) - n + 1)]


def grams(text: str) -> Counter[str]:
    """The n-gram counts of a query: ``w:word``, ``b:previous word`` (``<s>`` before the first) and the character
    n-grams of every word. The model scores counts / sqrt(total count)."""
    ws = words(text)
    out = Counter("w:" + w for w in ws)
    out.update(f"b:{a} {b}" for a, b in zip(["<s>", *ws], ws, strict=False))
    for w in ws:
        out.update(char_grams(w))
    return out


@dataclass(frozen=True)
class CacheabilityModel:
    weights: dict[str, float]
    intercept: float
    threshold: float  # p ≥ threshold: do not cache
    meta: dict[str, Any] = field(default_factory=dict)
    # Per known word, the weight of the word and of all its character n-grams: a query then costs one lookup per
    # word (plus one per bigram) instead of one per n-gram. Derived from ``weights`` at load.
    _word_sum: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        known = {k[2:] for k in self.weights if k.startswith("w:")}
        object.__setattr__(self, "_word_sum", {w: self._word_weight(w) for w in known})

    def _word_weight(self, word: str) -> float:
        w = self.weights
        return w.get("w:" + word, 0.0) + sum(w.get(g, 0.0) for g in char_grams(word))

    def probability(self, text: str) -> float:
        """P(user-specific or time-sensitive): the same number as the logistic regression on grams(text)."""
        ws = words(text)
        known, w = self._word_sum, self.weights
        total, count, prev = 0.0, 0, "<s>"
        for t in ws:
            s = known.get(t)
            total += s if s is not None else self._word_weight(t)
            total += w.get(f"b:{prev} {t}", 0.0)
            count += 2 + len(t) + max(len(t) - 1, 0) + max(len(t) - 2, 0)  # word, bigram, char 3-, 4-, 5-grams
            prev = t
        z = self.intercept + (total / math.sqrt(count) if count else 0.0)
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    @classmethod
    def load(cls, path: Path | str | None = None) -> CacheabilityModel:
        path = Path(path) if path is not None else DEFAULT_MODEL
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("features_version") != FEATURES_VERSION:
                    got = meta.get("features_version")
                    raise ValueError(f"trained on features v{got}, this Portico reads v{FEATURES_VERSION}: retrain "
                                     "it with `portico cache train-cacheability`")  # fmt: skip
                names = str(z["features"]).split("\n")
                weights = dict(zip(names, z["weights"].astype(np.float64).tolist(), strict=True))
                return cls(weights, float(z["intercept"]), float(z["threshold"]), meta)
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"cacheability model {path}: {e}") from None

    def save(self, path: Path | str) -> None:
        names = list(self.weights)
        np.savez_compressed(path, features=np.array("\n".join(names)),
                            weights=np.array([self.weights[n] for n in names], dtype=np.float32),
                            intercept=self.intercept, threshold=self.threshold,
                            meta=np.array(json.dumps(self.meta)))  # fmt: skip


def read_examples(path: Path | str) -> tuple[list[str], list[int]]:
    """JSON lines ``{"text": …, "label": 1 | 0}`` (1: do not cache); other fields (``kind``) are ignored."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["label"]
                if not isinstance(text, str) or not text.strip() or label not in (0, 1) or isinstance(label, float):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                raise ValueError(f'{path}:{n}: need {{"text": non-empty string, "label": 0 or 1}}') from None
            texts.append(text)
            labels.append(int(label))
    return texts, labels


def _design(texts: Sequence[str]) -> tuple[Any, list[str]]:
    """The training rows (n-gram counts over sqrt(total count), as probability() scores them) and columns."""
    from sklearn.feature_extraction import DictVectorizer

    rows = []
    for g in map(grams, texts):
        scale = 1.0 / math.sqrt(sum(g.values())) if g else 0.0
        rows.append({k: v * scale for k, v in g.items()})
    vec = DictVectorizer(dtype=np.float64)
    x = vec.fit_transform(rows)
    return x, list(vec.get_feature_names_out())


def _f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The threshold maximising F1 of the positive class on out-of-fold probabilities, and that F1."""
    from sklearn.metrics import precision_recall_curve

    prec, rec, thr = precision_recall_curve(y, p)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    best = int(np.argmax(f1))
    return float(thr[best]), float(f1[best])


def train(texts: Sequence[str], labels: Sequence[int], *, folds: int = 5, seed: int = 0,
          c_grid: Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0), meta: dict[str, Any] | None = None,
          ) -> CacheabilityModel:  # fmt: skip
    """Fit the model: C and the threshold by stratified cross-validation (best out-of-fold F1), then a final fit
    on all examples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(labels, dtype=np.int8)
    if len(y) < 4 * folds or y.sum() < folds or (len(y) - y.sum()) < folds:
        raise ValueError(f"{len(y)} examples ({int(y.sum())} labelled 1): need at least {4 * folds}, with "
                         f"{folds} of each label")  # fmt: skip
    x, names = _design(texts)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    best: tuple[float, float, float] | None = None  # (f1, C, threshold)
    for c in c_grid:
        lr = LogisticRegression(C=c, max_iter=2000)
        p = cross_val_predict(lr, x, y, cv=cv, method="predict_proba")[:, 1]
        thr, f1 = _f1_threshold(y, p)
        if best is None or f1 > best[0]:
            best = (f1, c, thr)
    assert best is not None
    f1, c, thr = best
    lr = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    weights = {n: float(w) for n, w in zip(names, lr.coef_[0], strict=True) if w != 0.0}
    info = {**(meta or {}), "features_version": FEATURES_VERSION, "examples": len(y), "positives": int(y.sum()),
            "C": c, "cv_folds": folds, "cv_f1": round(f1, 4)}  # fmt: skip
    return CacheabilityModel(weights, float(lr.intercept_[0]), thr, info)
