"""The semantic cache: index bounds and TTL, scoping, the verifier's training and persistence, and the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from portico.cache.semantic import SemanticIndex, SemanticMatcher
from portico.cache.semantic_step import SemanticCacheStep, SemanticOptions, semantic_cache_step
from portico.cache.verifier import Verifier, hand_features, threshold_for_precision, train
from portico.pipeline import Pipeline, Step
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_index_scopes_bounds_and_expiry() -> None:
    clock = Clock()
    idx = SemanticIndex(None, 3, clock=clock)
    idx.add("a", "q1", unit(1, 0, 0), b"1", ttl=10)
    idx.add("b", "q1", unit(1, 0, 0), b"2", ttl=10)
    assert [e.value for e, _ in idx.candidates("a", unit(1, 0, 0), 4)] == [b"1"]  # never another scope's entry
    idx.add("a", "q2", unit(0, 1, 0), b"3", ttl=10)
    idx.add("a", "q3", unit(0, 0, 1), b"4", ttl=10)  # over the bound: the oldest (scope a, q1) goes
    assert len(idx) == 3
    assert all(e.text != "q1" for e, _ in idx.candidates("a", unit(1, 0, 0), 4))
    clock.t = 11
    assert idx.candidates("a", unit(0, 1, 0), 4) == [] and len(idx) == 1  # expired entries are dropped on sight
    with pytest.raises(ValueError, match="dimensions"):
        idx.add("a", "q", unit(1, 0), b"x", ttl=1)
    with pytest.raises(ValueError, match="dimensions"):  # a search too (hnswlib would read past the vector)
        idx.candidates("b", unit(1, 0), 4)


def test_same_question_replaces_its_answer() -> None:
    idx = SemanticIndex(None, 10)
    idx.add("s", "q", unit(1, 0), b"old", ttl=10)
    idx.add("s", "q", unit(1, 0), b"new", ttl=10)
    assert len(idx) == 1 and idx.candidates("s", unit(1, 0), 4)[0][0].value == b"new"


def test_hand_features_see_what_embeddings_blur() -> None:
    same = hand_features("How do I learn Python fast?", "How do I learn Python fast?", 1.0, 0.2)
    nums = hand_features("Is 2019 a leap year?", "Is 2020 a leap year?", 0.97, 0.0)
    wh = hand_features("Why is the sky blue?", "When is the sky blue?", 0.9, 0.0)
    neg = hand_features("Is coffee healthy?", "Is coffee not healthy?", 0.95, 0.0)
    assert same[11] == 1 and nums[6] == 1 and wh[7] == 1 and neg[8] == 1 and same[6] == same[7] == same[8] == 0


def test_threshold_for_precision_is_the_loosest_that_meets_it() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 1, 0, 1, 0])
    assert threshold_for_precision(scores, y, 1.0, min_hits=1) == 0.7
    assert threshold_for_precision(scores, y, 0.8, min_hits=1) == 0.5
    assert threshold_for_precision(scores, y, 1.0, min_hits=10) > 0.9  # unreachable: serve nothing


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose label depends on the number feature: same similarity, different numbers → not the same."""
    rows, ys = [], []
    for i in range(n):
        a = f"is {i} a prime number"
        dup = i % 2 == 0
        b = f"is {i} a prime number?" if dup else f"is {i + 1} a prime number"
        ea = unit(*rng.normal(size=8))
        eb = unit(*(ea + rng.normal(scale=0.05, size=8)))
        rows.append(hand_features(a, b, float(ea @ eb), float(rng.uniform(0, 1))))
        ys.append(int(dup))
    return np.stack(rows), np.array(ys)


def test_verifier_learns_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = _synthetic(400, rng)
    v = train(x, y, target_precision=0.95)
    xt, yt = _synthetic(100, rng)
    p = v.probability(xt)
    assert ((p >= v.threshold) == yt.astype(bool)).mean() > 0.9
    v.save(tmp_path / "v")
    w = Verifier.load(tmp_path / "v")
    assert np.allclose(w.probability(xt), p) and w.threshold == v.threshold and w.meta["pairs"] == 400
    with pytest.raises(ValueError, match="train-verifier"):
        Verifier.load(tmp_path / "missing")


def test_matcher_with_a_verifier_rejects_a_close_but_different_question(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = _synthetic(400, rng)
    v = train(x, y)
    idx = SemanticIndex(None, 10)
    e = unit(*rng.normal(size=8))
    idx.add("s", "is 7 a prime number", e, b"yes", ttl=60)
    m = SemanticMatcher(idx, min_similarity=0.5, verifier=v)
    assert m.match("s", "is 7 a prime number?", e).entry is not None
    miss = m.match("s", "is 8 a prime number", e)  # identical embedding, different number
    assert miss.entry is None and miss.probability is not None and miss.probability < v.threshold


class FakeEmbedder:
    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.calls = 0

    def require(self, who: str) -> str:
        return "emb"

    async def query(self, ctx: RequestContext) -> np.ndarray:
        self.calls += 1
        return self.vectors[ctx.query_text()]


class Answer(Step):
    name = "generate"
    reads = frozenset({"request"})
    writes = frozenset({"response", "stream"})

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, ctx: RequestContext) -> None:
        self.calls += 1
        ctx.response = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"a{self.calls}"},
                                     "finish_reason": "stop"}]}  # fmt: skip


VECS = {"What is the capital of France?": unit(1, 0.05, 0), "What's France's capital city?": unit(1, 0.1, 0),
        "What is the capital of Spain?": unit(0.6, 0.8, 0), "Tell me more": unit(0, 0, 1)}  # fmt: skip


async def ask(p: Pipeline, messages: list[dict[str, Any]], key: str = "k") -> RequestContext:
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": messages, "temperature": 0})
    ctx = RequestContext(request=req, request_id="r", model="m", caller={"key": key, "key_id": key})
    await p.run(ctx)
    return ctx


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def test_step_hits_a_paraphrase_and_misses_a_different_question() -> None:
    emb = FakeEmbedder(VECS)
    step = SemanticCacheStep(SemanticOptions(min_similarity=0.99), emb, None, None)
    gen = Answer()
    assert step.closer is not None
    p = Pipeline("t", [step, gen, step.closer])
    assert (await ask(p, user("What is the capital of France?"))).headers["x-portico-cache"] == "miss"
    hit = await ask(p, user("What's France's capital city?"))
    assert hit.headers["x-portico-cache"] == "semantic-hit" and hit.response is not None
    assert hit.response["choices"][0]["message"]["content"] == "a1"
    assert (await ask(p, user("What is the capital of Spain?"))).headers["x-portico-cache"] == "miss"
    assert (await ask(p, user("What's France's capital city?"), key="other")).headers["x-portico-cache"] == "miss"
    other_prompt = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert (await ask(p, other_prompt)).headers["x-portico-cache"] == "miss"  # a different system prompt
    follow_up = [{"role": "user", "content": "What is the capital of France?"},
                 {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Tell me more"}]  # fmt: skip
    assert (await ask(p, follow_up)).headers["x-portico-cache"] == "bypass"
    assert gen.calls == 5


def test_factory_validates_options() -> None:
    class S:
        embedder = FakeEmbedder({})
        metrics = None
        prices = None

    with pytest.raises(ValueError, match="min_similarity"):
        semantic_cache_step({"min_similarity": 3}, S())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="colour"):
        semantic_cache_step({"colour": "red"}, S())  # type: ignore[arg-type]


def test_a_lower_precision_embedder_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from portico.config.loader import validate
    from portico.observability.metrics import Metrics

    def services(precision: str):
        class S:
            embedder = FakeEmbedder({})
            metrics = Metrics([], [], set)
            prices = None
            cfg = validate({"models": [{"name": "emb", "type": "embedding",
                                        "deployments": [{"provider": "local", "precision": precision}]}]})  # fmt: skip

        return S()

    with caplog.at_level("WARNING", logger="portico.cache"):
        semantic_cache_step({}, services("float32"))  # type: ignore[arg-type]
        assert not caplog.records
        semantic_cache_step({}, services("int8"))  # type: ignore[arg-type]
    assert "precision int8" in caplog.records[0].getMessage() and "document_embedder" in caplog.records[0].getMessage()


def test_numpy_trees_match_sklearn_exactly() -> None:
    from portico.cache.verifier import Trees, _model

    rng = np.random.default_rng(3)
    x = rng.random((3000, 12))
    y = ((x[:, 0] > 0.5) & (x[:, 3] < 0.7) | (x[:, 6] > 0.9)).astype(int)
    model = _model(0).fit(x, y)
    probe = rng.random((200, 12))
    assert np.allclose(Trees.from_sklearn(model).probability(probe), model.predict_proba(probe)[:, 1], atol=1e-9)
