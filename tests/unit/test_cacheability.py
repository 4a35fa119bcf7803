"""The cacheability classifier: shipped in the package, scored exactly as trained, catching user-specific and
time-sensitive queries the rules miss while leaving general ones cacheable, and switchable per cache."""

from __future__ import annotations

import importlib.resources
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from portico.cache.cacheability import compile_patterns, query_filter
from portico.cache.cacheability_model import (
    DEFAULT_MODEL,
    TEST_DATA,
    TRAIN_DATA,
    CacheabilityModel,
    _design,
    grams,
    read_examples,
    words,
)
from portico.cache.cli import cache_app
from portico.cache.memory import MemoryStore
from portico.cache.step import CacheLookupStep, ExactCache
from portico.config.schema import CacheConfig
from portico.pipeline import Pipeline
from tests.unit.test_cache_steps import FakeGenerate, req, run

RULES = compile_patterns(None)
# Not matched by any default rule (asserted below), so only the classifier can stop them being cached.
TIME_SENSITIVE = ("did the Warriors win", "is Costco open", "who won the game last night")
GENERAL = ("What is the capital of France?", "What's the capital of France?", "how do I reset my password",
           "name three rivers", "what is our refund policy", "Tell me more", "write a haiku about rain")  # fmt: skip


@pytest.fixture(scope="module")
def model() -> CacheabilityModel:
    return CacheabilityModel.load()


def test_the_model_ships_inside_the_package(model: CacheabilityModel) -> None:
    packaged = importlib.resources.files("portico.cache") / "data" / "cacheability.npz"
    assert packaged.is_file() and Path(str(packaged)) == DEFAULT_MODEL
    assert 0.05 < model.threshold < 0.95
    assert model.meta["examples"] >= 800 and len(model.weights) > 1000


def test_scores_equal_the_trained_regression() -> None:
    """The serving path (one lookup per word) gives the probability sklearn gives on the training design."""
    from sklearn.linear_model import LogisticRegression

    texts, y = read_examples(TRAIN_DATA)
    texts, y = texts[::4], y[::4]
    x, names = _design(texts)
    lr = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    m = CacheabilityModel(dict(zip(names, lr.coef_[0].tolist(), strict=True)), float(lr.intercept_[0]), 0.5)
    assert np.allclose([m.probability(t) for t in texts], lr.predict_proba(x)[:, 1], atol=1e-9)
    # Unseen n-grams weigh nothing but still count in the scale, as in training.
    held_out, _ = read_examples(TEST_DATA)
    for t in held_out[:50]:
        g = grams(t)
        z = float(lr.intercept_[0]) + sum(
            m.weights.get(k, 0.0) * v for k, v in g.items()
        ) / math.sqrt(sum(g.values()))  # fmt: skip
        assert m.probability(t) == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-9)


def test_contractions_read_as_the_words_they_stand_for() -> None:
    assert words("What's the score? I can't, John's") == ["what", "is", "the", "score", "i", "can", "not", "john"]
    assert words("x" * 5000 + " tail") [-1] == "tail"  # fmt: skip  # a long prompt keeps its end


def test_flags_held_out_queries_and_leaves_general_ones(model: CacheabilityModel) -> None:
    texts, labels = read_examples(TEST_DATA)  # written separately from the training set; never trained on
    flagged = [model.probability(t) >= model.threshold for t in texts]
    personal = [f for f, t, y in zip(flagged, texts, labels, strict=True) if y == 1 and not RULES.search(t)]
    general = [f for f, y in zip(flagged, labels, strict=True) if y == 0]
    assert len(personal) > 100 and np.mean(personal) >= 0.85  # what the rules miss, the classifier catches
    assert np.mean(general) <= 0.08


def test_reasons_name_the_check_that_decided() -> None:
    f = query_filter(CacheConfig())
    for q in TIME_SENSITIVE:
        assert RULES.search(q) is None, q
        why = f.reason(q)
        assert why.startswith("classifier: user-specific or time-sensitive (p=0."), (q, why)
        assert float(why.split("p=")[1].rstrip(")")) >= f.threshold
    assert f.reason("Where is my order #1234?") == 'rule: user-specific or time-sensitive ("Where is my order")'
    for q in GENERAL:
        assert f.reason(q) == "", q


async def test_the_exact_cache_skips_what_the_classifier_flags_unless_configured_off() -> None:
    q = TIME_SENSITIVE[0]
    for cfg, expected in ((CacheConfig(), ("bypass", "bypass")), (CacheConfig(skip_classifier=False), ("miss", "hit")),
                          (CacheConfig(skip_threshold=0.999), ("miss", "hit"))):  # fmt: skip
        gen = FakeGenerate()
        lookup = CacheLookupStep(ExactCache(MemoryStore(100), cfg, None))
        assert lookup.closer is not None
        p = Pipeline("t", [lookup, gen, lookup.closer])
        got = tuple([(await run(p, req(q))).headers["x-portico-cache"] for _ in range(2)])
        assert got == expected, cfg
    ctx = await run(Pipeline("t", [CacheLookupStep(ExactCache(MemoryStore(10), CacheConfig(), None))]), req(q))
    assert ctx.state["trace.notes"]["cache"]["reason"].startswith("classifier: ")


def test_an_operator_retrains_and_points_the_cache_at_the_model(tmp_path: Path) -> None:
    rows = [{"text": f"{w} banana {n}", "label": 1} for n, w in enumerate(["ripe", "green", "fresh", "sliced"] * 5)]
    rows += [{"text": f"{w} apple {n}", "label": 0} for n, w in enumerate(["ripe", "green", "fresh", "sliced"] * 5)]
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "model.npz"
    result = CliRunner().invoke(cache_app, ["train-cacheability", str(data), "--out", str(out), "--no-builtin",
                                            "--folds", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    mine = query_filter(CacheConfig(skip_classifier=str(out)))
    assert mine.reason("a banana smoothie").startswith("classifier:")
    assert mine.reason("an apple smoothie") == ""
    assert query_filter(CacheConfig()).reason("a banana smoothie") == ""  # the packaged model does not care


def test_bad_data_and_missing_models_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"text": "x", "label": "yes"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: need"):
        read_examples(bad)
    result = CliRunner().invoke(cache_app, ["train-cacheability", str(bad), "--out", str(tmp_path / "m.npz")])
    assert result.exit_code != 0 and "bad.jsonl:2" in result.output
    with pytest.raises(ValueError, match="cacheability model"):
        query_filter(CacheConfig(skip_classifier=str(tmp_path / "missing.npz")))


async def test_the_semantic_cache_applies_the_same_filter_and_options() -> None:
    from portico.cache.semantic_step import SemanticCacheStep, SemanticOptions
    from tests.unit.test_semantic_cache import Answer, FakeEmbedder, ask, unit, user

    q = TIME_SENSITIVE[0]
    cases = [(SemanticOptions(min_similarity=0.99), ["bypass", "bypass"]),
             (SemanticOptions(min_similarity=0.99, skip_classifier=False), ["miss", "semantic-hit"])]  # fmt: skip
    for opts, expected in cases:
        step = SemanticCacheStep(opts, FakeEmbedder({q: unit(1, 0, 0)}), None, None)
        assert step.closer is not None
        p = Pipeline("t", [step, Answer(), step.closer])
        ctxs = [await ask(p, user(q)) for _ in range(2)]
        assert [c.headers["x-portico-cache"] for c in ctxs] == expected, opts
    assert ctxs[0].state["trace.notes"]["semantic_cache"]["result"] == "miss"
    bypassed = await ask(Pipeline("t", [SemanticCacheStep(SemanticOptions(), FakeEmbedder({}), None, None)]), user(q))
    assert bypassed.state["trace.notes"]["semantic_cache"]["reason"].startswith("classifier: ")
