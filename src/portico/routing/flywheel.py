"""The flywheel: production feedback → a candidate router → a shadow gate → promotion (or not).

**Labels.** Two kinds of feedback teach the preference router:

- a *pairwise* judgement between two requests with the same prompt (one answered by each model of the pair) is a
  full comparison: it becomes the record it says (strong won, weak won, tie);
- a *boolean* judgement of a routed request only tells about the model that answered. It bounds the comparison on
  one side and no more: when the weak model was right, the strong one cannot have beaten it (a tie or a weak win);
  when it was wrong, the strong one cannot have lost. Mirrored for the strong model: right → a tie or a strong win,
  wrong → a tie or a weak win. The label is recorded as the midpoint of what is known — one tie and one win for
  the side it allows (target 0.75 or 0.25, never 1 or 0) — so nothing is claimed about the unserved model beyond
  the bound. A pairwise judgement is recorded twice, so it weighs as much as a boolean label's two records.

**Held-out feedback.** A label belongs to the held-out part when a hash of its request id falls under
``holdout`` (20 % by default): it is never trained on, by any candidate, so every gate scores routers on feedback
none of them saw.

**The shadow gate.** The candidate and the serving router both score the held-out labels. The score is a
stratified AUC: within the labels of the strong model, within those of the weak model and within the pairwise ones
(each stratum separately, so the serving router is not credited for the fact that the labels of the model it chose
differ from those of the other), how often a strong-side label gets a higher P(strong wins) than a weak-side label.
The candidate is promoted only when it is better and a paired bootstrap over the held-out labels says so at
``alpha`` (one-sided), with at least ``min_holdout`` held-out labels. Every decision and its numbers go to the
router's manifest (versions.py), promoted or not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from portico.routing import versions
from portico.routing.calibration import threshold_for_share
from portico.routing.preference import PairwiseRecord, PreferenceModel, TrainConfig, train
from portico.routing.store import load, save, save_threshold, version_dir

EmbedFn = Callable[[list[str]], np.ndarray]
STRATA = ("strong", "weak", "pairwise")


@dataclass(frozen=True, slots=True)
class Label:
    """One piece of routing feedback. ``key`` (the request id, or both ids of a pair) decides held-out or not."""

    key: str
    prompt: str
    domain: str | None = None
    # boolean: the router's name of the model that answered, and whether its answer was good
    model: str | None = None
    ok: bool | None = None
    # pairwise: the router's names of both models, and the winner (model_a | model_b | tie)
    model_a: str | None = None
    model_b: str | None = None
    winner: str | None = None

    @property
    def pairwise(self) -> bool:
        return self.winner is not None


@dataclass
class Settings:
    holdout: float = 0.2  # share of labels (by request-id hash) kept for the gate
    alpha: float = 0.05  # the bootstrap's one-sided p below which the candidate counts as better
    min_holdout: int = 30  # fewer held-out labels: no promotion (too little to tell)
    min_train: int = 20  # fewer training labels: no candidate
    resamples: int = 1000
    config: TrainConfig = field(default_factory=TrainConfig)


def is_holdout(key: str, share: float) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split(labels: Sequence[Label], share: float) -> tuple[list[Label], list[Label]]:
    """(training labels, held-out labels)."""
    train_part, held = [], []
    for lab in labels:
        (held if is_holdout(lab.key, share) else train_part).append(lab)
    return train_part, held


def side(lab: Label, strong: str, weak: str) -> int | None:
    """+1 strong-side (the strong model can only have won or tied), -1 weak-side, 0 a pairwise tie, None when the
    label is not about this pair."""
    if lab.pairwise:
        if {lab.model_a, lab.model_b} != {strong, weak}:
            return None
        if lab.winner == "tie":
            return 0
        won = lab.model_a if lab.winner == "model_a" else lab.model_b
        return 1 if won == strong else -1
    if lab.model == strong:
        return 1 if lab.ok else -1
    if lab.model == weak:
        return -1 if lab.ok else 1
    return None


def records(labels: Sequence[Label], strong: str, weak: str) -> list[PairwiseRecord]:
    """The pairwise training records of ``labels`` (see the module docstring for the encoding)."""
    out: list[PairwiseRecord] = []
    for lab in labels:
        s = side(lab, strong, weak)
        if s is None:
            continue
        verdict = {1: "model_a", -1: "model_b", 0: "tie"}[s]
        if lab.pairwise:
            out += [PairwiseRecord(lab.prompt, strong, weak, verdict, lab.domain)] * 2
        else:
            out += [PairwiseRecord(lab.prompt, strong, weak, "tie", lab.domain),
                    PairwiseRecord(lab.prompt, strong, weak, verdict, lab.domain)]  # fmt: skip
    return out


# ---- the shadow gate ----
def _stratum(lab: Label, strong: str) -> str:
    return "pairwise" if lab.pairwise else ("strong" if lab.model == strong else "weak")


def _auc_parts(scores: np.ndarray, y: np.ndarray, strata: np.ndarray) -> tuple[float, float]:
    """(concordant pairs, comparable pairs) summed over strata; ties in score count half (Mann-Whitney)."""
    from scipy.stats import rankdata

    good = total = 0.0
    for s in STRATA:
        sel = strata == s
        pos, neg = int(np.sum(y[sel] == 1)), int(np.sum(y[sel] == 0))
        if pos == 0 or neg == 0:
            continue
        ranks = rankdata(scores[sel])
        good += float(ranks[y[sel] == 1].sum()) - pos * (pos + 1) / 2
        total += pos * neg
    return good, total


def stratified_auc(scores: np.ndarray, y: np.ndarray, strata: np.ndarray) -> float:
    good, total = _auc_parts(np.asarray(scores, dtype=np.float64), np.asarray(y), np.asarray(strata))
    return good / total if total else 0.5


@dataclass
class GateResult:
    promote: bool
    reason: str
    candidate_auc: float
    serving_auc: float
    diff: float
    p_value: float
    ci: tuple[float, float]
    holdout: int  # held-out labels with a side (pairwise ties dropped)


def gate(cand: np.ndarray, serving: np.ndarray, y: np.ndarray, strata: np.ndarray, settings: Settings,
         seed: int = 0) -> GateResult:  # fmt: skip
    """Promote the candidate only if its stratified AUC beats the serving router's, significantly (paired
    bootstrap over held-out labels, one-sided ``alpha``)."""
    cand, serving = np.asarray(cand, dtype=np.float64), np.asarray(serving, dtype=np.float64)
    y, strata = np.asarray(y), np.asarray(strata)
    a, b = stratified_auc(cand, y, strata), stratified_auc(serving, y, strata)
    n = len(y)
    if _auc_parts(cand, y, strata)[1] == 0:
        return GateResult(False, f"nothing to compare in {n} held-out labels (each model's labels all agree)", a, b,
                          0.0, 1.0, (float("nan"), float("nan")), n)  # fmt: skip
    if n < settings.min_holdout:
        return GateResult(False, f"only {n} held-out labels (need {settings.min_holdout})", a, b, a - b, 1.0,
                          (float("nan"), float("nan")), n)  # fmt: skip
    rng = np.random.default_rng(seed)
    diffs = np.empty(settings.resamples)
    for i in range(settings.resamples):
        idx = rng.integers(0, n, size=n)
        ga, ta = _auc_parts(cand[idx], y[idx], strata[idx])
        gb, tb = _auc_parts(serving[idx], y[idx], strata[idx])
        diffs[i] = (ga / ta if ta else 0.5) - (gb / tb if tb else 0.5)
    p = float(np.mean(diffs <= 0))
    ci = (float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975)))
    better = a > b and p < settings.alpha
    reason = (f"better: AUC {a:.3f} vs {b:.3f} (p={p:.3f})" if better
              else f"not better at alpha={settings.alpha}: AUC {a:.3f} vs {b:.3f} (p={p:.3f})")  # fmt: skip
    return GateResult(better, reason, a, b, a - b, p, ci, n)


def shadow_scores(model: PreferenceModel | None, labels: Sequence[Label], embed_fn: EmbedFn) -> np.ndarray:
    """P(strong wins) of each label's prompt under ``model`` (0.5 everywhere without a serving router)."""
    if model is None or not labels:
        return np.full(len(labels), 0.5)
    texts = [lab.prompt for lab in labels]
    return model.p_strong_wins_batch(np.asarray(embed_fn(texts)), texts, [lab.domain for lab in labels])


def held_out_targets(labels: Sequence[Label], strong: str, weak: str) -> tuple[list[Label], np.ndarray, np.ndarray]:
    """The held-out labels that have a side (pairwise ties dropped), their y (1 strong-side) and their stratum."""
    kept, y, strata = [], [], []
    for lab in labels:
        s = side(lab, strong, weak)
        if s in (1, -1):
            kept.append(lab)
            y.append(1 if s == 1 else 0)
            strata.append(_stratum(lab, strong))
    return kept, np.asarray(y, dtype=np.int64), np.asarray(strata, dtype=object)


# ---- one turn of the wheel ----
@dataclass
class Cycle:
    labels: int
    trained_on: int
    candidate: int | None  # the version written (None: too few labels)
    serving: int | None  # the version that served during the gate
    gate: GateResult | None
    promoted: bool
    reason: str

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        if self.gate is not None:
            out["gate"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self.gate).items()}
        return out


def run_cycle(labels: Sequence[Label], *, root: str | Path, name: str, embed_fn: EmbedFn, strong: str, weak: str,
              settings: Settings | None = None, promote: bool = True, source: str = "feedback",
              embedder: str | None = None, shares: Sequence[float] = ()) -> Cycle:  # fmt: skip
    """Train a candidate on the training labels, gate it against the serving version on the held-out ones, save
    it as the next version, record the decision, and promote it when the gate passes (and ``promote``). The
    candidate gets a threshold for each of ``shares`` and for each share the serving version was calibrated for."""
    st = settings or Settings()
    train_part, held = split(labels, st.holdout)
    serving_v = versions.pin(root, name)  # from here on a new version serves only once promoted
    train_records = records(train_part, strong, weak)
    if len(train_part) < st.min_train or not train_records:
        reason = f"only {len(train_part)} training labels (need {st.min_train})"
        return Cycle(len(labels), len(train_part), None, serving_v, None, False, reason)
    candidate = train(train_records, embed_fn, strong=strong, weak=weak, config=st.config)
    candidate.info.update(source=source, labels=len(train_part), holdout=len(held))
    if embedder:
        candidate.info["embedder"] = embedder
    serving = load(root, name, serving_v) if serving_v is not None else None
    kept, y, strata = held_out_targets(held, strong, weak)
    result = gate(shadow_scores(candidate, kept, embed_fn), shadow_scores(serving, kept, embed_fn), y, strata, st)
    path = save(candidate, root, name)
    version = int(path.name[1:])
    _calibrate_like(root, name, serving_v, version, candidate, [lab.prompt for lab in labels],
                    [lab.domain for lab in labels], embed_fn, shares)  # fmt: skip
    promoted = result.promote and promote
    cycle = Cycle(len(labels), len(train_part), version, serving_v, result, promoted,
                  result.reason if promote else result.reason + " (not promoted: --no-promote)")  # fmt: skip
    versions.record_gate(root, name, {"candidate": version, **cycle.summary()})
    if promoted:
        versions.promote(root, name, version, reason="gate", gate=cycle.summary()["gate"])
    return cycle


def _calibrate_like(root: str | Path, name: str, serving: int | None, version: int, model: PreferenceModel,
                    texts: list[str], domains: list[str | None], embed_fn: EmbedFn,
                    extra: Sequence[float] = ()) -> None:  # fmt: skip
    """Give the candidate a threshold for every strong share the serving version was calibrated for (on the
    feedback's prompts), so a route_preference step configured with ``strong_share`` can serve it."""
    wanted = {float(s) for s in extra}
    path = version_dir(root, name, serving) / "calibration.json" if serving is not None else None
    if path is not None and path.exists():
        wanted |= {float(s) for s in json.loads(path.read_text(encoding="utf-8"))["thresholds"]}
    if not wanted or not texts:
        return
    p = model.p_strong_wins_batch(np.asarray(embed_fn(texts)), texts, domains)
    for share in sorted(wanted):
        save_threshold(root, name, share, threshold_for_share(p, share), len(texts), version)
