"""Experiment assignment, intervals and the bandit's probability of being best; config validation."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from portico.config.schema import PorticoConfig
from portico.evaluation.experiments import Experiment, ExperimentService, bucket, probability_best, wilson
from portico.gateway.control import Caller
from portico.protocol.chat import ChatCompletionRequest

MODELS = [{"name": "m", "deployments": [{"provider": "openai", "model": "x", "base_url": "http://x/v1"}]}]


def cfg(**kw: object) -> PorticoConfig:
    return PorticoConfig.model_validate({"models": MODELS, "applications": [
        {"name": "a", "model": "m"}, {"name": "b", "model": "m"}], **kw})  # fmt: skip


EXP = {"name": "e", "application": "a", "variants": [{"name": "x", "application": "a", "weight": 1},
                                                     {"name": "y", "application": "b", "weight": 3}]}  # fmt: skip


def test_buckets_are_stable_uniform_and_per_experiment() -> None:
    assert bucket("e", "u1") == bucket("e", "u1") != bucket("f", "u1")
    points = [bucket("e", f"u{i}") for i in range(4000)]
    assert 0.47 < sum(points) / len(points) < 0.53 and all(0 <= p < 1 for p in points)


def test_choose_follows_shares_and_sticks() -> None:
    c = cfg(experiments=[EXP])
    exp = Experiment(c.experiments[0], {"x": None, "y": None})  # type: ignore[dict-item]
    req = lambda user: ChatCompletionRequest(model="a", messages=[{"role": "user", "content": "q"}], user=user)  # noqa: E731
    rng = random.Random(0)
    picks = [exp.choose(req(f"u{i}"), Caller(), rng) for i in range(2000)]
    assert 0.70 < sum(picks) / 2000 < 0.80  # y has weight 3 of 4
    assert len({exp.choose(req("same"), Caller(), rng) for _ in range(20)}) == 1
    exp.set_shares([1.0, 0.0])
    assert {exp.choose(req(f"u{i}"), Caller(), rng) for i in range(50)} == {0}


def test_wilson_and_probability_best() -> None:
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.404, abs=0.002) and hi == pytest.approx(0.596, abs=0.002)
    assert wilson(0, 0) == (0.0, 1.0)
    p = probability_best([(30, 10), (10, 30)])
    assert p[0] > 0.99 and sum(p) == pytest.approx(1.0)
    assert probability_best([(0, 0), (0, 0)])[0] == pytest.approx(0.5, abs=0.05)


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="variant names must be distinct"):
        cfg(experiments=[{**EXP, "variants": [{"name": "x", "application": "a"}, {"name": "x", "application": "b"}]}])
    with pytest.raises(ValidationError, match="already has an experiment"):
        cfg(experiments=[EXP, {**EXP, "name": "other"}])
    bad = cfg(
        experiments=[{**EXP, "variants": [{"name": "x", "application": "a"}, {"name": "y", "application": "zz"}]}]
    )
    with pytest.raises(ValueError, match="unknown application 'zz'"):
        ExperimentService.build(bad, {"a": None, "b": None}, None)  # type: ignore[arg-type,dict-item]
    bandit = cfg(metrics=[{"name": "stars", "type": "float"}],
                 experiments=[{**EXP, "bandit": {"metric": "stars"}}])  # fmt: skip
    with pytest.raises(ValueError, match="must be a configured boolean metric"):
        ExperimentService.build(bandit, {"a": None, "b": None}, None)  # type: ignore[arg-type,dict-item]
