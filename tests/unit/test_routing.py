"""Preference router: training learns an obvious preference, versioned save/load is exact, threshold calibration
hits its share, and the ``route_preference`` step sets the target model and notes its decision."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from portico.pipeline import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.routing import PairwiseRecord, TrainConfig, strong_share, threshold_for_share, train
from portico.routing.evaluation import apgr, cost_quality_curve
from portico.routing.store import load, save, save_threshold, versions
from portico.runtime import default_registry

DIM = 64


def embed(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words embedding (crc32 buckets), unit length: similar words → similar vectors."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % DIM] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def math_prompt(i: int) -> str:
    return f"Compute the integral of x^{i % 7 + 2} times {i * 13 % 97} from 0 to {i % 11 + 1} and solve for the value"


def chat_prompt(i: int) -> str:
    return f"hello there friend number {i}, how are you doing today? tell me something nice please"


def synthetic(n: int = 60) -> list[PairwiseRecord]:
    """The strong model wins math prompts; chit-chat is a tie or a weak win (it is cheaper and friendlier)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        out.append(PairwiseRecord(math_prompt(i), "big", "small", "model_a" if rng.random() < 0.9 else "tie"))
        w = "tie" if rng.random() < 0.6 else "model_a"  # small is model_a here: orientation must not matter
        out.append(PairwiseRecord(chat_prompt(i), "small", "big", w))
    return out


CFG = TrainConfig(k=7, folds=5)


@pytest.fixture(scope="module")
def model():
    return train(synthetic(), embed, config=CFG)


def p(model, text: str) -> float:
    return model.p_strong_wins(embed([text])[0], text)


def test_learns_the_obvious_preference(model):
    assert (model.strong, model.weak) == ("big", "small")
    assert model.p_bt("big", "small") > 0.5
    math_p = [p(model, math_prompt(i)) for i in range(100, 110)]
    chat_p = [p(model, chat_prompt(i)) for i in range(100, 110)]
    assert min(math_p) > 0.6
    assert max(chat_p) < min(math_p)
    # p_wins is symmetric: P(a beats b) + P(b beats a) = 1 (ties count half each way).
    e, t = embed([math_prompt(3)])[0], math_prompt(3)
    assert model.p_wins("big", "small", e, t) + model.p_wins("small", "big", e, t) == pytest.approx(1.0)


def test_prompt_aware_beats_constant_on_golden_labels(model):
    texts = [math_prompt(i) for i in range(200, 240)] + [chat_prompt(i) for i in range(200, 240)]
    strong_ok = np.array([1.0] * 40 + [1.0] * 40)
    weak_ok = np.array([0.0] * 40 + [1.0] * 40)
    scores = model.p_strong_wins_batch(embed(texts), texts)
    # Half the prompts gain from the strong model: the perfect order recovers the gap at share 0.5 → APGR 0.75.
    assert apgr(scores, weak_ok, strong_ok) == pytest.approx(0.75, abs=0.01)
    assert apgr(np.zeros(80), weak_ok, strong_ok) < 0.6


def test_batch_and_single_predictions_agree(model):
    texts = [math_prompt(7), chat_prompt(7), "something unrelated entirely"]
    batch = model.p_strong_wins_batch(embed(texts), texts)
    single = [p(model, t) for t in texts]
    np.testing.assert_allclose(batch, single, rtol=1e-6, atol=1e-9)


def test_save_load_is_versioned_and_exact(model, tmp_path):
    first = save(model, tmp_path, "demo")
    second = save(model, tmp_path, "demo")
    assert (first.name, second.name) == ("v1", "v2")
    assert (first / "model.npz").is_file() and (first / "meta.json").is_file()
    assert versions(tmp_path, "demo") == [1, 2]
    texts = [math_prompt(i) for i in range(5)] + [chat_prompt(i) for i in range(5)]
    for loaded in (load(tmp_path, "demo"), load(tmp_path, "demo", version=1), load(tmp_path, "demo")):
        assert [p(loaded, t) for t in texts] == [p(model, t) for t in texts]
    assert load(tmp_path, "demo").info["version"] == 2
    with pytest.raises(FileNotFoundError):
        load(tmp_path, "demo", version=9)
    with pytest.raises(FileNotFoundError):
        load(tmp_path, "missing")


def test_same_data_trains_the_same_model():
    a = train(synthetic(30), embed, config=CFG)
    b = train(list(reversed(synthetic(30))), embed, config=CFG)
    assert p(a, math_prompt(1)) == pytest.approx(p(b, math_prompt(1)), abs=1e-9)


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_threshold_hits_the_target_share(share):
    sample = np.random.default_rng(1).random(1000)
    t = threshold_for_share(sample, share)
    assert strong_share(sample, t) == pytest.approx(share, abs=1e-3)


def test_threshold_rejects_bad_share():
    with pytest.raises(ValueError):
        threshold_for_share(np.array([0.5]), 1.5)


def test_curve_endpoints_and_random_is_half():
    rng = np.random.default_rng(2)
    weak_ok = (rng.random(4000) < 0.6).astype(float)
    strong_ok = np.maximum(weak_ok, rng.random(4000) < 0.5).astype(float)
    curve = cost_quality_curve(rng.random(4000), weak_ok, strong_ok)
    assert curve.accuracy[0] == pytest.approx(weak_ok.mean())
    assert curve.accuracy[-1] == pytest.approx(strong_ok.mean())
    assert curve.apgr == pytest.approx(0.5, abs=0.05)
    oracle = cost_quality_curve(strong_ok - weak_ok, weak_ok, strong_ok)
    assert oracle.apgr > 0.8 and oracle.share_for(1.0) < 0.5


# ---- the pipeline step --------------------------------------------------------------------------------------


class FakeEmbedder:
    def __init__(self) -> None:
        self.calls = 0

    def require(self, who: str) -> str:
        return "embed"

    async def query(self, ctx: RequestContext) -> np.ndarray:
        self.calls += 1
        return embed([ctx.query_text()])[0]


class FakeServices:
    def __init__(self) -> None:
        self.embedder = FakeEmbedder()
        self.gateway = type("G", (), {"models": {"gpt-big": object(), "gpt-small": object()}})()
        self.cfg = self.metrics = self.db = self.state = None


def make_ctx(text: str) -> RequestContext:
    req = ChatCompletionRequest.model_validate({"model": "app", "messages": [{"role": "user", "content": text}]})
    return RequestContext(request=req, request_id="rid", model="app", application="app")


def build(options: dict[str, Any], services: Any = None):
    kind = default_registry().get("route_preference")
    assert kind.phase == "before"
    return kind.factory(options, services or FakeServices())


async def test_step_routes_and_notes_its_decision(model, tmp_path):
    save(model, tmp_path, "r")
    services = FakeServices()
    step = build({"strong": "gpt-big", "weak": "gpt-small", "router": "r", "dir": str(tmp_path)}, services)
    hard, easy = make_ctx(math_prompt(500)), make_ctx(chat_prompt(500))
    await step.run(hard)
    await step.run(easy)
    assert (hard.target_model, easy.target_model) == ("gpt-big", "gpt-small")
    assert services.embedder.calls == 2
    note = hard.state["trace.notes"]["route_preference"]
    assert note["decision"] == "strong" and note["threshold"] == 0.5 and note["router"] == "r/v1"
    assert note["p_strong"] == pytest.approx(p(model, math_prompt(500)), abs=1e-5)
    assert easy.state["trace.notes"]["route_preference"]["decision"] == "weak"
    json.dumps(hard.state["trace.notes"])  # notes must be JSON-able


async def test_step_threshold_extremes_and_calibrated_share(model, tmp_path):
    save(model, tmp_path, "r")
    opts = {"strong": "gpt-big", "weak": "gpt-small", "router": "r", "dir": str(tmp_path)}
    always = build({**opts, "threshold": 0.0})
    never = build({**opts, "threshold": 1.0})
    ctx = make_ctx(chat_prompt(1))
    await always.run(ctx)
    assert ctx.target_model == "gpt-big"
    ctx = make_ctx(chat_prompt(1))
    await never.run(ctx)
    assert ctx.target_model == "gpt-small"
    with pytest.raises(ValueError, match="not calibrated"):
        build({**opts, "strong_share": 0.5})
    sample = [math_prompt(i) for i in range(300, 320)] + [chat_prompt(i) for i in range(300, 320)]
    t = threshold_for_share(model.p_strong_wins_batch(embed(sample), sample), 0.5)
    save_threshold(tmp_path, "r", 0.5, t, len(sample))
    half = build({**opts, "strong_share": 0.5})
    assert half.threshold == t
    routed = []
    for text in sample:
        c = make_ctx(text)
        await half.run(c)
        routed.append(c.target_model)
    assert routed.count("gpt-big") == 20 and routed[:20] == ["gpt-big"] * 20


def test_step_rejects_bad_config(model, tmp_path):
    save(model, tmp_path, "r")
    opts = {"strong": "gpt-big", "weak": "gpt-small", "router": "r", "dir": str(tmp_path)}
    with pytest.raises(ValueError, match="not configured"):
        build({**opts, "strong": "nope"})
    with pytest.raises(ValueError, match="either threshold or strong_share"):
        build({**opts, "threshold": 0.4, "strong_share": 0.3})
    with pytest.raises(KeyError):
        build({**opts, "router_strong": "unknown-model"})
    with pytest.raises(FileNotFoundError):
        build({**opts, "router": "absent"})


def routed_runtime(model, tmp_path, monkeypatch):
    """A Runtime whose application ``routed`` starts with route_preference; returns (pipeline, that step)."""
    from portico.config.loader import validate
    from portico.runtime import Runtime

    save(model, tmp_path, "r")
    dead = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}
    cfg = validate(
        {
            "models": [
                {"name": "gpt-big", "deployments": [dead]},
                {"name": "gpt-small", "deployments": [dead]},
                {"name": "emb", "type": "embedding", "deployments": [dead]},
            ],
            "applications": [
                {
                    "name": "routed",
                    "model": "gpt-small",
                    "steps": [
                        {
                            "use": "route_preference",
                            "strong": "gpt-big",
                            "weak": "gpt-small",
                            "router": "r",
                            "dir": str(tmp_path),
                            "threshold": 0.5,
                        }
                    ],
                }
            ],
        }
    )
    rt = Runtime(cfg)

    async def fake_query(ctx):
        return embed([ctx.query_text()])[0]

    monkeypatch.setattr(rt.embedder, "query", fake_query)
    pipeline, application = rt.pipeline_for("routed")
    assert application == "routed"
    return pipeline, next(s for s in pipeline.stages if getattr(s, "name", "") == "route_preference")


async def test_runtime_builds_and_runs_a_routed_application(model, tmp_path, monkeypatch):
    pipeline, step = routed_runtime(model, tmp_path, monkeypatch)
    assert pipeline.step_names[0] == "route_preference" and pipeline.step_names[-1] == "generate"
    hard, easy = make_ctx(math_prompt(900)), make_ctx(chat_prompt(900))
    await step.run(hard)
    await step.run(easy)
    assert (hard.target_model, easy.target_model) == ("gpt-big", "gpt-small")


def test_per_model_factors_learn_which_model_suits_which_prompt(tmp_path):
    """Two models that each win one kind of prompt: the ratings tie, only per-model prompt factors tell them apart."""
    recs = []
    for i in range(40):
        recs.append(PairwiseRecord(math_prompt(i), "coder", "chatty", "model_a"))
        recs.append(PairwiseRecord(chat_prompt(i), "coder", "chatty", "model_b"))
    m = train(recs, embed, config=TrainConfig(k=7, factor_dims=4, factor_l2=1.0))
    assert abs(m.p_bt("coder", "chatty") - 0.5) < 0.05
    e_math, e_chat = embed([math_prompt(99)])[0], embed([chat_prompt(99)])[0]
    assert m.p_wins("coder", "chatty", e_math, math_prompt(99)) > 0.7
    assert m.p_wins("coder", "chatty", e_chat, chat_prompt(99)) < 0.3
    assert m.p_wins("chatty", "coder", e_chat, chat_prompt(99)) > 0.7
    save(m, tmp_path, "f")
    again = load(tmp_path, "f")
    assert again.p_wins("coder", "chatty", e_math, math_prompt(99)) == m.p_wins(
        "coder", "chatty", e_math, math_prompt(99)
    )


def test_tied_ratings_stay_symmetric():
    recs = [PairwiseRecord(math_prompt(i), "x", "y", "model_a" if i % 2 else "model_b") for i in range(20)]
    m = train(recs, embed, config=TrainConfig(k=3))
    e, t = embed([math_prompt(5)])[0], math_prompt(5)
    assert m.p_wins("x", "y", e, t) + m.p_wins("y", "x", e, t) == pytest.approx(1.0)


def test_prompt_features_by_name():
    from portico.routing.features import FEATURE_NAMES, prompt_features

    text = "Compute 12 + 30 = ?\nA. 42\nB. 41"
    full = prompt_features(text)
    assert full.shape == (len(FEATURE_NAMES),)
    some = prompt_features(text, ("log_numbers", "log_chars"))
    assert list(some) == [full[FEATURE_NAMES.index("log_numbers")], full[FEATURE_NAMES.index("log_chars")]]
    assert full[FEATURE_NAMES.index("options")] > 0 and full[FEATURE_NAMES.index("math_ops")] > 0
    with pytest.raises(ValueError, match="unknown prompt features"):
        train(synthetic(10), embed, config=TrainConfig(features=("nope",)))


async def test_step_rejects_an_embedding_of_another_size(model, tmp_path):
    from portico.protocol.errors import PorticoError

    save(model, tmp_path, "r")
    assert model.embedding_dim == DIM
    services = FakeServices()

    async def other_size(ctx):
        return np.ones(DIM + 1, dtype=np.float32) / np.sqrt(DIM + 1)

    services.embedder.query = other_size
    step = build({"strong": "gpt-big", "weak": "gpt-small", "router": "r", "dir": str(tmp_path)}, services)
    with pytest.raises(PorticoError, match="trained on 64-dimensional embeddings but the embedding model gives 65"):
        await step.run(make_ctx(math_prompt(1)))


async def test_step_keeps_a_model_an_earlier_step_chose(model, tmp_path):
    save(model, tmp_path, "r")
    services = FakeServices()
    step = build({"strong": "gpt-big", "weak": "gpt-small", "router": "r", "dir": str(tmp_path)}, services)
    ctx = make_ctx(chat_prompt(3))
    ctx.target_model = "billing-model"  # e.g. set by route_intent
    await step.run(ctx)
    assert ctx.target_model == "billing-model" and services.embedder.calls == 0
    assert ctx.state["trace.notes"]["route_preference"]["decision"] == "kept"


def test_word_expert_serving_matches_scikit_learns_tfidf():
    """The vectorised serving path (word ids, bigram keys, numpy dot) against scikit-learn's TF-IDF of the same
    vocabulary: sublinear tf, smoothed idf, l2 norm, word uni- and bigrams."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from portico.routing.experts import WordExpert

    train_texts = [math_prompt(i) for i in range(30)] + [chat_prompt(i) for i in range(30)]
    y = np.linspace(-1, 1, len(train_texts))
    expert = WordExpert.fit(None, train_texts, y, alpha=1.0)
    tfidf = TfidfVectorizer(vocabulary=expert.vocab, ngram_range=(1, 2), sublinear_tf=True).fit(train_texts)
    probes = [math_prompt(77), chat_prompt(5) + " hello hello there there", "unknown words only zzz", "", "x y z"]
    expected = tfidf.transform(probes) @ expert.weights + expert.intercept
    got = [expert.score(None, t) for t in probes]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got[2] == got[3] == expert.intercept  # nothing known: the intercept alone


def test_domain_calibration_learns_what_the_prompt_cannot_show(tmp_path):
    """The same kind of prompt in two applications: the strong model wins in 'legal' and ties in 'support'. Only the
    domain tells them apart; an unknown or absent domain gets the overall mean, and save/load keeps the table."""
    rng = np.random.default_rng(1)
    recs = []
    for i in range(100, 200):  # prompts of one kind and length in both domains
        recs.append(PairwiseRecord(chat_prompt(i), "big", "small", "model_a" if rng.random() < 0.9 else "tie", "legal"))
        recs.append(PairwiseRecord(chat_prompt(i + 100), "big", "small", "tie", "support"))
    m = train(recs, embed, config=CFG)
    e, t = embed([chat_prompt(500)])[0], chat_prompt(500)
    legal, support, unknown = (m.p_strong_wins(e, t, d) for d in ("legal", "support", "elsewhere"))
    assert legal > unknown > support and legal - support > 0.2, (legal, unknown, support)
    assert m.p_strong_wins(e, t) == unknown  # no domain: the overall mean
    assert m.p_strong_wins_batch(e[None], [t], ["legal"])[0] == pytest.approx(legal)
    save(m, tmp_path, "d")
    assert load(tmp_path, "d").p_strong_wins(e, t, "legal") == legal
    assert (
        PairwiseRecord.from_dict({"prompt": "q", "model_a": "x", "model_b": "y", "winner": "x", "domain": 7}).domain
        == "7"
    )
    # Records without domains train the router as before: no domain column in the stack.
    assert train(synthetic(), embed, config=CFG).domain_means is None


def test_calibration_prompts_carry_their_domain(tmp_path):
    from portico.routing.datafiles import load_prompts_with_domains

    path = tmp_path / "prompts.jsonl"
    rows = [
        '"plain"',
        '{"prompt": "with a domain", "domain": "legal"}',
        '{"messages": [{"role": "user", "content": "m"}]}',
    ]
    path.write_text("\n".join(rows) + "\n")
    assert load_prompts_with_domains(path) == (["plain", "with a domain", "m"], [None, "legal", None])


async def test_step_passes_the_application_as_domain(tmp_path):
    rng = np.random.default_rng(1)
    recs = []
    for i in range(100, 200):
        recs.append(PairwiseRecord(chat_prompt(i), "big", "small", "model_a" if rng.random() < 0.9 else "tie", "app"))
        recs.append(PairwiseRecord(chat_prompt(i + 100), "big", "small", "tie", "other"))
    m = train(recs, embed, config=CFG)
    save(m, tmp_path, "r")
    e, t = embed([chat_prompt(500)])[0], chat_prompt(500)
    cut = (m.p_strong_wins(e, t, "app") + m.p_strong_wins(e, t)) / 2
    opts = {"strong": "gpt-big", "weak": "gpt-small", "router": "r", "dir": str(tmp_path), "threshold": cut}
    with_domain, without = make_ctx(t), make_ctx(t)  # both come through the application "app"
    await build(opts).run(with_domain)
    await build({**opts, "domain": "none"}).run(without)
    assert (with_domain.target_model, without.target_model) == ("gpt-big", "gpt-small")
    # The trace says what the router knew of the request's domain.
    noted = with_domain.state["trace.notes"]["route_preference"]
    assert noted["domain"] == "app" and noted["calibration"] == m.calibration("app") != "shared"
    assert without.state["trace.notes"]["route_preference"]["calibration"] == "shared"


def _numbers_prompt(i: int, n: int) -> str:
    prices = " and ".join(str((i * 7 + j * 13) % 90 + 10) for j in range(n))
    return f"Order {i}: a shop sells items at prices {prices}."


def _length_records() -> list[PairwiseRecord]:
    """Two applications with opposite difficulty signs: in 'chat' (three times the records) the strong model wins
    the short prompts; in 'math' it wins the long ones (more numbers, more steps). Same words in both."""
    rng = np.random.default_rng(2)
    recs = []
    for i in range(300):
        n = int(rng.integers(2, 13))
        recs.append(PairwiseRecord(_numbers_prompt(i, n), "big", "small", "model_a" if n <= 5 else "tie", "chat"))
    for i in range(300, 400):
        n = int(rng.integers(2, 13))
        recs.append(PairwiseRecord(_numbers_prompt(i, n), "big", "small", "model_a" if n >= 8 else "tie", "math"))
    return recs


def test_per_domain_correction_reweighs_a_domain_whose_difficulty_shows_differently(tmp_path):
    """The shared stack learns 'long = easy' from the larger domain; a per-domain correction lets 'math' rank its
    long prompts first again, leaves a domain below the threshold alone, and survives save/load."""
    from scipy.stats import spearmanr

    recs = _length_records()
    cfg = TrainConfig(k=7, features=("log_chars", "log_words"), domain_correction_min=90, domain_correction_alpha=10)
    shared, corrected = train(recs, embed, config=replace(CFG, domain_correction_min=0)), train(recs, embed, config=cfg)
    assert shared.domain_corrections is None and set(corrected.domain_corrections) == {"chat", "math"}
    texts = [_numbers_prompt(1000 + i, n) for i, n in enumerate(range(2, 13))]
    e = embed(texts)
    rho = {
        name: spearmanr(range(2, 13), m.p_strong_wins_batch(e, texts, ["math"] * len(texts))).statistic
        for name, m in (("shared", shared), ("corrected", corrected))
    }
    assert rho["shared"] < 0 < 0.8 < rho["corrected"], rho
    single = [corrected.p_strong_wins(e[i], t, "math") for i, t in enumerate(texts)]
    assert single == pytest.approx(list(corrected.p_strong_wins_batch(e, texts, ["math"] * len(texts))))
    # An unknown domain gets no correction: the same score as with no domain at all.
    assert corrected.p_strong_wins(e[0], texts[0], "elsewhere") == corrected.p_strong_wins(e[0], texts[0])
    assert [corrected.calibration(d) for d in ("math", "elsewhere", None)] == ["corrected", "shared", "shared"]
    assert shared.calibration("math") == "domain"
    save(corrected, tmp_path, "c")
    assert load(tmp_path, "c").p_strong_wins(e[3], texts[3], "math") == single[3]
    few = TrainConfig(k=7, domain_correction_min=150)  # 'math' has 100 prompts: below it, only 'chat' is corrected
    assert set(train(recs, embed, config=few).domain_corrections) == {"chat"}


def test_a_domain_whose_residual_is_noise_keeps_the_shared_score():
    """A correction is kept only when it lowers the domain's squared error out of fold: where the winners are coin
    flips (nothing in the prompt predicts them) no domain gets one, though both are above the size threshold."""
    rng = np.random.default_rng(5)
    recs = [
        PairwiseRecord(
            _numbers_prompt(i, int(rng.integers(2, 13))), "big", "small", str(rng.choice(["model_a", "tie"])), d
        )
        for d, start in (("a", 0), ("b", 1000))
        for i in range(start, start + 150)
    ]
    cfg = TrainConfig(k=7, features=("log_chars", "log_words"), domain_correction_min=90, domain_correction_alpha=10)
    assert train(recs, embed, config=cfg).domain_corrections == {}
