"""The flywheel: feedback labels → pairwise records (a boolean label bounds one side only), the shadow gate (never
promotes a router that is not better on held-out feedback), versioning, promotion and rollback, and the
route_preference step following a promotion."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from portico.routing import TrainConfig, train, versions
from portico.routing.flywheel import (
    Label,
    Settings,
    gate,
    held_out_targets,
    is_holdout,
    records,
    run_cycle,
    side,
    split,
    stratified_auc,
)
from portico.routing.store import load, save
from tests.unit.test_routing import chat_prompt, embed, math_prompt, synthetic

CFG = TrainConfig(k=7, folds=5)


def test_boolean_labels_bound_one_side_and_pairwise_ones_are_full_comparisons():
    cases = {  # (model, ok) → side: +1 strong may only have won or tied, -1 weak may only have won or tied
        ("big", True): 1, ("big", False): -1, ("small", True): -1, ("small", False): 1,
    }  # fmt: skip
    for (model, ok), want in cases.items():
        lab = Label(key="r", prompt="p", model=model, ok=ok)
        assert side(lab, "big", "small") == want
        recs = records([lab], "big", "small")
        # One tie and one win for the allowed side: target 0.75 or 0.25, never a certain win.
        assert sorted(r.winner for r in recs) == sorted(["tie", "model_a" if want == 1 else "model_b"])
        assert all((r.model_a, r.model_b) == ("big", "small") for r in recs)
        assert np.mean([r.target for r in recs]) == (0.75 if want == 1 else 0.25)
    # A model outside the pair teaches nothing about it.
    assert records([Label(key="r", prompt="p", model="other", ok=True)], "big", "small") == []
    # Pairwise: the verdict itself (twice: it weighs as much as a boolean label), whichever order the pair came in.
    pw = Label(key="a|b", prompt="p", model_a="small", model_b="big", winner="model_b")
    assert side(pw, "big", "small") == 1
    assert [r.winner for r in records([pw], "big", "small")] == ["model_a", "model_a"]
    tie = Label(key="c|d", prompt="p", model_a="big", model_b="small", winner="tie")
    assert side(tie, "big", "small") == 0 and [r.target for r in records([tie], "big", "small")] == [0.5, 0.5]
    assert side(Label(key="e|f", prompt="p", model_a="x", model_b="big", winner="tie"), "big", "small") is None


def test_holdout_split_is_by_request_id_and_stable():
    labels = [Label(key=f"req-{i}", prompt="p", model="big", ok=True) for i in range(2000)]
    train_part, held = split(labels, 0.2)
    assert 300 < len(held) < 500 and len(train_part) + len(held) == 2000
    assert split(list(reversed(labels)), 0.2)[1] == list(reversed(held))  # order does not matter
    assert all(is_holdout(lab.key, 0.2) for lab in held)


def test_stratified_auc_compares_labels_within_the_model_that_answered():
    # Strong-model labels are mostly strong-side and the serving router sent those prompts to strong: pooled, a
    # router that only knows which model answered would look good; within each stratum it is at chance.
    y = np.asarray([1, 1, 1, 0, 0, 1, 0, 0])
    strata = np.asarray(["strong"] * 4 + ["weak"] * 4, dtype=object)
    arm_only = np.asarray([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    assert stratified_auc(arm_only, y, strata) == 0.5
    perfect = np.asarray([0.9, 0.8, 0.7, 0.2, 0.1, 0.6, 0.3, 0.2])
    assert stratified_auc(perfect, y, strata) == 1.0
    assert stratified_auc(1 - perfect, y, strata) == 0.0


def test_gate_never_promotes_a_worse_or_equal_router():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    strata = np.asarray(rng.choice(["strong", "weak"], n), dtype=object)
    good = y + rng.normal(0, 0.8, n)
    bad = y + rng.normal(0, 3.0, n)
    st = Settings(min_holdout=30)
    up = gate(good, bad, y, strata, st)
    assert up.promote and up.candidate_auc > up.serving_auc and up.p_value < 0.05
    down = gate(bad, good, y, strata, st)
    assert not down.promote and down.diff < 0
    same = gate(good, good.copy(), y, strata, st)
    assert not same.promote  # no better is not better
    uniform = gate(good, bad, np.ones(n, dtype=int), strata, st)  # every label on one side: nothing to rank
    assert not uniform.promote and "nothing to compare" in uniform.reason
    small = gate(good[:20], bad[:20], y[:20], strata[:20], st)
    assert not small.promote and "only 20" in small.reason
    # Many noisy candidates of the same quality as the serving one: the gate lets through about alpha of them.
    serving = y + rng.normal(0, 1.0, n)
    passed = sum(gate(y + rng.normal(0, 1.0, n), serving, y, strata, Settings(resamples=300), seed=s).promote
                 for s in range(40))  # fmt: skip
    assert passed <= 6


def labels_for(n: int, start: int = 0) -> list[Label]:
    """Routed requests, half to each model: on math prompts the strong model is right and the weak one wrong; on
    chit-chat the weak one is right and the strong one (say, too long-winded) wrong."""
    out = []
    for i in range(start, start + n):
        for prompt, hard in ((math_prompt(i), True), (chat_prompt(i), False)):
            model = "big" if i % 2 else "small"
            ok = (model == "big") == hard
            out.append(Label(key=f"req-{i}-{hard}", prompt=prompt, model=model, ok=ok))
    return out


def p_math(m) -> float:
    return m.p_strong_wins(embed([math_prompt(999)])[0], math_prompt(999))


def test_a_cycle_promotes_a_better_candidate_and_records_the_gate(tmp_path):
    # Serving: a router that learned the opposite of the truth (chit-chat needs the strong model).
    wrong = train(
        [r.__class__(r.prompt, r.model_b, r.model_a, r.winner) for r in synthetic()],
        embed,
        config=CFG,
        strong="big",
        weak="small",
    )
    save(wrong, tmp_path, "r")
    assert p_math(load(tmp_path, "r")) < 0.5
    cyc = run_cycle(labels_for(150), root=tmp_path, name="r", embed_fn=embed, strong="big", weak="small",
                    settings=Settings(config=CFG), shares=(0.5,))  # fmt: skip
    assert cyc.candidate == 2 and cyc.serving == 1 and cyc.promoted
    assert cyc.gate.candidate_auc > 0.9 > cyc.gate.serving_auc
    m = versions.read(tmp_path, "r")
    assert m["current"] == 2 and m["gates"][-1]["candidate"] == 2 and m["gates"][-1]["promoted"]
    assert m["history"][-1]["gate"]["p_value"] < 0.05
    served = load(tmp_path, "r")  # no version: the promoted one
    assert served.info["version"] == 2 and p_math(served) > 0.5
    assert (tmp_path / "r" / "v2" / "calibration.json").exists()  # calibrated for the share asked for

    # More labels of the same world: the candidate is no better than the serving router on held-out feedback, so
    # it is trained, recorded, and not promoted.
    cyc = run_cycle(labels_for(150, start=500), root=tmp_path, name="r", embed_fn=embed, strong="big",
                    weak="small", settings=Settings(config=CFG))  # fmt: skip
    assert cyc.candidate == 3 and not cyc.promoted and cyc.gate.diff <= 0
    assert versions.current(tmp_path, "r") == 2 and load(tmp_path, "r").info["version"] == 2
    assert [g["candidate"] for g in versions.read(tmp_path, "r")["gates"]] == [2, 3]
    table = versions.table(tmp_path, "r")
    assert [(r["version"], r["serving"]) for r in table] == [(1, False), (2, True), (3, False)]
    assert table[1]["source"] == "feedback" and table[0]["source"] == "file"


def test_too_few_labels_make_no_candidate(tmp_path):
    save(train(synthetic(), embed, config=CFG), tmp_path, "r")
    cyc = run_cycle(labels_for(5), root=tmp_path, name="r", embed_fn=embed, strong="big", weak="small")
    assert cyc.candidate is None and not cyc.promoted and "training labels" in cyc.reason
    assert versions.current(tmp_path, "r") == 1


def test_promote_and_rollback(tmp_path):
    model = train(synthetic(), embed, config=CFG)
    for _ in range(3):
        save(model, tmp_path, "r")
    assert versions.current(tmp_path, "r") == 3  # no manifest: the latest serves (routers trained before)
    assert versions.pin(tmp_path, "r") == 3
    save(model, tmp_path, "r")
    assert versions.current(tmp_path, "r") == 3  # a new version does not serve by merely existing
    versions.promote(tmp_path, "r", 4)
    assert load(tmp_path, "r").info["version"] == 4
    assert versions.rollback(tmp_path, "r") == 3 and versions.current(tmp_path, "r") == 3
    versions.promote(tmp_path, "r", 1)
    assert versions.rollback(tmp_path, "r", to=4) == 4
    with pytest.raises(FileNotFoundError):
        versions.promote(tmp_path, "r", 9)
    fresh = tmp_path / "other"
    save(model, fresh, "r")
    versions.pin(fresh, "r")
    with pytest.raises(ValueError, match="no earlier"):
        versions.rollback(fresh, "r")
    actions = [h["action"] for h in versions.read(tmp_path, "r")["history"]]
    assert actions == ["promote", "rollback", "promote", "rollback"]


async def test_the_step_follows_a_promotion_and_a_rollback(tmp_path, monkeypatch):
    from tests.unit.test_routing import make_ctx, routed_runtime

    good = train(synthetic(), embed, config=CFG)
    wrong = train(
        [r.__class__(r.prompt, r.model_b, r.model_a, r.winner) for r in synthetic()],
        embed,
        config=CFG,
        strong="big",
        weak="small",
    )
    _, step = routed_runtime(wrong, tmp_path, monkeypatch)  # saves v1 = wrong, and builds the step on it
    step.options.reload_seconds = 0.01
    ctx = make_ctx(math_prompt(900))
    await step.run(ctx)
    assert ctx.target_model == "gpt-small" and ctx.state["trace.notes"]["route_preference"]["router"] == "r/v1"
    assert ctx.state["trace.notes"]["route_preference"]["router_pair"] == [wrong.strong, wrong.weak]
    versions.pin(tmp_path, "r")  # as the flywheel does before saving a candidate
    save(good, tmp_path, "r")  # v2 exists but is not promoted: v1 keeps serving
    time.sleep(0.02)
    await step.run(make_ctx(math_prompt(901)))
    await asyncio.sleep(0.2)
    assert step.serving.version == 1
    versions.promote(tmp_path, "r", 2)
    time.sleep(0.02)
    await step.run(make_ctx(math_prompt(902)))  # notices the manifest, loads v2 in a thread
    for _ in range(100):
        if step.serving.version == 2:
            break
        await asyncio.sleep(0.05)
    ctx = make_ctx(math_prompt(903))
    await step.run(ctx)
    assert ctx.target_model == "gpt-big" and ctx.state["trace.notes"]["route_preference"]["router"] == "r/v2"
    versions.rollback(tmp_path, "r")
    os.utime(versions.manifest_path(tmp_path, "r"))
    time.sleep(0.02)
    await step.run(make_ctx(math_prompt(904)))
    for _ in range(100):
        if step.serving.version == 1:
            break
        await asyncio.sleep(0.05)
    assert step.serving.version == 1


def test_held_out_targets_drop_ties_and_keep_strata():
    labs = [Label(key="a", prompt="p", model="big", ok=True), Label(key="b", prompt="p", model="small", ok=True),
            Label(key="c|d", prompt="p", model_a="big", model_b="small", winner="tie"),
            Label(key="e|f", prompt="p", model_a="big", model_b="small", winner="model_b")]  # fmt: skip
    kept, y, strata = held_out_targets(labs, "big", "small")
    assert [k.key for k in kept] == ["a", "b", "e|f"]
    assert list(y) == [1, 0, 0] and list(strata) == ["strong", "weak", "pairwise"]
