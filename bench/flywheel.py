"""Flywheel benchmark: RouteLLM's golden-labelled MMLU replayed as a production stream. Writes
bench/results/flywheel.md.

Protocol. MMLU (contaminated prompts dropped) is split as in bench/routing.py (seed 0): the held-out 20 % is the
fixed slice every router is scored on (APGR, golden labels of both models); the training 80 % in a fixed random
order (seed 1) is the stream. A fresh deployment has no router: it routes at random with the target strong share
(50 %). Each prompt is answered by the model the serving router chose and the deployment then receives that
model's correctness (golden label) as boolean feedback — nothing about the other model. Every K labels the
flywheel turns with the functions ``portico router train --from-feedback`` uses (routing.flywheel.run_cycle:
labels → records, training, the shadow gate on held-out feedback, versioned save, promotion), in a temporary
router directory; the serving router is the promoted version, its threshold the one calibrated for the strong
share. The MMLU subject is each label's domain (an application per subject), as in bench/routing.py.

Reported beside the serving router at 250 … 5000 labels: a router trained offline on the same one-sided labels
(no gate, everything trained on), one trained on the same prompts with both models' golden outcomes, and the
offline router of bench/routing.py (the whole training split, both outcomes). A *gate regression* is a
promotion whose router scores lower on the held-out slice than the one it replaced.

The experiment: the flywheel's final router (50 % strong) against the weak model alone, on stream prompts no
router trained on; requests are split 50/50 and compared with Fisher's exact test (what the experiments report
uses) every 50 requests; "requests to detect" is the first look from which p stays < 0.05 to the end, median of 20
request orders (the same rule on an A/A split gives its false-positive rate). The bandit: Thompson sampling as
evaluation/experiments.py does it (shares = P(best) under Beta posteriors, floored at 5 %, refreshed every 50
requests); its regret (expected pass-rate shortfall against always serving the better variant) is divided by
that of the fixed 50/50 split.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import fisher_exact  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import routing_attempts as ex  # noqa: E402
import routing_data as data  # noqa: E402

from portico.evaluation.experiments import probability_best  # noqa: E402
from portico.routing.evaluation import apgr, random_apgr  # noqa: E402
from portico.routing.flywheel import Label, Settings, records, run_cycle  # noqa: E402
from portico.routing.preference import PreferenceModel, train  # noqa: E402
from portico.routing.store import load, load_threshold  # noqa: E402
from portico.routing.versions import current  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "flywheel.md"
K = int(os.environ.get("FLYWHEEL_K", "250"))  # labels between retrains
LABELS = int(os.environ.get("FLYWHEEL_LABELS", "5000"))
CHECKPOINTS = (250, 500, 1000, 2000, 5000)
SHARE = 0.5  # the deployment's strong-call share
LOOSE_ALPHA = 0.2
STRONG, WEAK = data.STRONG, data.WEAK
NAME = "mmlu"


class Replay:
    def __init__(self) -> None:
        self.g = data.load_golden("mmlu")
        self.tr, self.te = ex.split(len(self.g.prompts))
        self.stream = np.random.default_rng(1).permutation(self.tr)
        self.subjects = [str(s) for s in self.g.subjects]
        self.refresh()

    def refresh(self) -> None:
        """(Re)read the embeddings: a partial cache may have grown while the stream ran."""
        self.em = self._embeddings()
        self.lookup = {self.g.prompts[i]: self.em[i] for i in np.flatnonzero(self.have)}

    def _embeddings(self) -> np.ndarray:
        """The cached MiniLM embeddings of bench/routing.py, or (on a busy machine) a partial cache embedded in the
        order this bench needs them: the held-out slice, then the stream (see ``embed_in_order``)."""
        n = len(self.g.prompts)
        partial = data.CACHE / "mmlu-flywheel-partial.npz"
        if not any(data.CACHE.glob("mmlu-*.npy")) and partial.exists():
            with np.load(partial) as z:
                em = np.zeros((n, z["emb"].shape[1]), dtype=np.float32)
                em[z["idx"]] = z["emb"]
                self.have = np.zeros(n, dtype=bool)
                self.have[z["idx"]] = True
            return em
        self.have = np.ones(n, dtype=bool)
        return data.embed_cached("mmlu", self.g.prompts, [])

    @property
    def stream_available(self) -> int:
        """Stream prompts embedded (all of them with the full cache)."""
        return int(np.argmin(self.have[self.stream])) if not self.have[self.stream].all() else len(self.stream)

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.lookup[t] for t in texts])

    def p(self, m: PreferenceModel, idx: np.ndarray) -> np.ndarray:
        return m.p_strong_wins_batch(self.em[idx], [self.g.prompts[i] for i in idx], [self.subjects[i] for i in idx])

    def held_apgr(self, m: PreferenceModel | None) -> float:
        if m is None:
            return random_apgr(self.g.weak_ok[self.te], self.g.strong_ok[self.te])
        return apgr(self.p(m, self.te), self.g.weak_ok[self.te], self.g.strong_ok[self.te])

    def label(self, i: int, strong: bool) -> Label:
        ok = self.g.strong_ok[i] if strong else self.g.weak_ok[i]
        return Label(key=f"req-{i}", prompt=self.g.prompts[i], domain=self.subjects[i],
                     model=STRONG if strong else WEAK, ok=bool(ok))  # fmt: skip

    def golden_router(self, idx: np.ndarray) -> PreferenceModel:
        """A router trained offline on both models' golden outcomes of these prompts."""
        return train(ex.golden_records(self.g, idx, np.asarray(self.subjects)), self.embed)


def run_stream(r: Replay, root: Path, settings: Settings) -> dict:
    rng = np.random.default_rng(2)
    labels: list[Label] = []
    serving: PreferenceModel | None = None
    serving_apgr = r.held_apgr(None)
    curve, cycles, regressions = {}, [], 0
    t_train = 0.0
    for start in range(0, LABELS, K):
        chunk = r.stream[start : start + K]
        if serving is None:
            strong = rng.random(len(chunk)) < SHARE
        else:
            strong = r.p(serving, chunk) >= load_threshold(root, NAME, SHARE, serving.info["version"])
        labels += [r.label(int(i), bool(s)) for i, s in zip(chunk, strong, strict=True)]
        t0 = time.perf_counter()
        cyc = run_cycle(labels, root=root, name=NAME, embed_fn=r.embed, strong=STRONG, weak=WEAK,
                        settings=settings, shares=(SHARE,))  # fmt: skip
        t_train += time.perf_counter() - t0
        cand_apgr = r.held_apgr(load(root, NAME, cyc.candidate)) if cyc.candidate else float("nan")
        if cyc.promoted:
            new = load(root, NAME, current(root, NAME))
            new_apgr = r.held_apgr(new)
            regressions += new_apgr < serving_apgr
            serving, serving_apgr = new, new_apgr
        g = cyc.gate
        cycles.append({"labels": len(labels), "strong_share": float(np.mean(strong)), "candidate": cyc.candidate,
                       "cand_apgr": cand_apgr, "serving_apgr": serving_apgr, "promoted": cyc.promoted,
                       "auc": (g.candidate_auc, g.serving_auc, g.p_value, g.holdout) if g else None})  # fmt: skip
        print(f"{len(labels):5d} labels: candidate {cand_apgr:.3f} serving {serving_apgr:.3f} "
              f"{'PROMOTED' if cyc.promoted else 'kept'} {cyc.reason}", file=sys.stderr)  # fmt: skip
        if len(labels) in CHECKPOINTS:
            curve[len(labels)] = serving_apgr
    return {"curve": curve, "cycles": cycles, "regressions": regressions, "labels": labels, "serving": serving,
            "train_s": t_train}  # fmt: skip


def offline(r: Replay, labels: list[Label]) -> dict[int, tuple[float, float]]:
    """Per checkpoint: (trained on the same one-sided labels, trained on the same prompts' golden outcomes)."""
    out = {}
    for n in CHECKPOINTS:
        if n > len(labels):
            continue
        same = train(records(labels[:n], STRONG, WEAK), r.embed)
        full = r.golden_router(r.stream[:n])
        out[n] = (r.held_apgr(same), r.held_apgr(full))
    return out


def experiment(r: Replay, router: PreferenceModel | None, root: Path, orders: int = 20, look: int = 50) -> dict:
    """The final router (B) against the weak model alone (A) on stream prompts past the replayed ones."""
    idx = r.stream[LABELS : r.stream_available]
    if router is None:  # nothing was promoted: B routes at random with the same share
        b_strong = np.random.default_rng(3).random(len(idx)) < SHARE
    else:
        b_strong = r.p(router, idx) >= load_threshold(root, NAME, SHARE, router.info["version"])
    ok_a = r.g.weak_ok[idx]
    ok_b = np.where(b_strong, r.g.strong_ok[idx], r.g.weak_ok[idx])
    mu = (float(ok_a.mean()), float(ok_b.mean()))
    detect, false_pos, ratios = [], 0, []
    for seed in range(orders):
        rng = np.random.default_rng(100 + seed)
        order = rng.permutation(len(idx))
        arm = rng.random(len(idx)) < 0.5
        detect.append(_first_stable(ok_a[order], ok_b[order], arm, look))
        aa = _first_stable(ok_a[order], ok_a[order], arm, look)
        false_pos += aa is not None
        ratios.append(_bandit_regret(ok_a[order], ok_b[order], mu, rng) / (len(idx) * abs(mu[1] - mu[0]) / 2))
    found = [d for d in detect if d is not None]
    return {"n": len(idx), "pass_a": mu[0], "pass_b": mu[1], "strong_share_b": float(b_strong.mean()),
            "detect_median": float(np.median(found)) if len(found) == len(detect) else None,
            "detect_all": detect, "aa_false_positives": false_pos, "orders": orders,
            "bandit_ratio": float(np.mean(ratios)), "bandit_ratios": ratios}  # fmt: skip


def _first_stable(a: np.ndarray, b: np.ndarray, arm: np.ndarray, look: int) -> int | None:
    """Requests after which Fisher's p stays < 0.05 at every later look (None: not by the end)."""
    first = None
    for n in range(look, len(a) + 1, look):
        sa, sb = a[:n][~arm[:n]], b[:n][arm[:n]]
        p = fisher_exact([[int(sa.sum()), len(sa) - int(sa.sum())], [int(sb.sum()), len(sb) - int(sb.sum())]]).pvalue
        first = (first or n) if p < 0.05 else None
    return first


def _bandit_regret(a: np.ndarray, b: np.ndarray, mu: tuple[float, float], rng: np.random.Generator,
                   refresh: int = 50, floor: float = 0.05) -> float:  # fmt: skip
    """Thompson sampling as shares (evaluation/experiments.py), refreshed every ``refresh`` requests."""
    counts = [[0, 0], [0, 0]]
    share_b, regret, best = 0.5, 0.0, max(mu)
    for t in range(len(a)):
        if t and t % refresh == 0:
            pbest = probability_best([tuple(c) for c in counts], seed=t)  # type: ignore[misc]
            share_b = floor + (1 - 2 * floor) * pbest[1]
        v = int(rng.random() < share_b)
        ok = (a, b)[v][t]
        counts[v][0 if ok else 1] += 1
        regret += best - mu[v]
    return regret


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    r = Replay()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        res = run_stream(r, root, settings)
        off = offline(r, res["labels"])
        r.refresh()
        offline_prompts = r.stream[: r.stream_available]
        full = r.held_apgr(r.golden_router(offline_prompts))
        exp = experiment(r, res["serving"], root)
    # Sensitivity (not the headline, which keeps the default fixed before the first run): a looser gate.
    with tempfile.TemporaryDirectory() as tmp:
        loose = run_stream(r, Path(tmp), Settings(alpha=LOOSE_ALPHA))
    res["loose"] = loose
    write(r, res, off, (full, len(offline_prompts)), exp, settings, time.perf_counter() - t0)


def write(r: Replay, res: dict, off: dict, offline_full: tuple[float, int], exp: dict, st: Settings,
          wall: float) -> None:  # fmt: skip
    full, n_full = offline_full
    curve = res["curve"]
    loose = res["loose"]
    rows = [f"| {n} | {curve[n]:.3f} | {loose['curve'][n]:.3f} | {off[n][0]:.3f} | {off[n][1]:.3f} |"
            for n in CHECKPOINTS if n in curve]  # fmt: skip
    cyc_rows = []
    for c in res["cycles"]:
        auc = c["auc"]
        gate = f"{auc[0]:.3f} / {auc[1]:.3f}, p={auc[2]:.3f}, n={auc[3]}" if auc else "—"
        cyc_rows.append(f"| {c['labels']} | {c['strong_share']:.2f} | {gate} | {c['cand_apgr']:.3f} | "
                        f"{'yes' if c['promoted'] else 'no'} | {c['serving_apgr']:.3f} |")  # fmt: skip
    promotions = sum(c["promoted"] for c in res["cycles"])
    missed = sum(1 for c in res["cycles"] if not c["promoted"] and c["cand_apgr"] > c["serving_apgr"] + 0.01)
    det = exp["detect_median"]
    lines = [
        "# Flywheel: routers that learn from production feedback",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}; {wall:.0f} s wall "
        f"({res['train_s']:.0f} s in {len(res['cycles'])} flywheel turns). Protocol: bench/flywheel.py's docstring.",
        "",
        f"RouteLLM MMLU, {len(r.g.prompts)} prompts ({r.g.dropped} contaminated dropped); held-out slice "
        f"{len(r.te)} prompts (bench/routing.py's 20 %), stream = the other {len(r.tr)} in a fixed random order, "
        f"first {LABELS} replayed. Strong {STRONG}, weak {WEAK}. Retrain every K={K} labels; shadow gate: "
        f"{st.holdout:.0%} of labels held out by request-id hash, stratified AUC, paired bootstrap "
        f"({st.resamples} resamples), one-sided alpha {st.alpha}, at least {st.min_holdout} held-out labels.",
        "",
        "## Learning curve (APGR on the held-out slice)",
        "",
        f"| labels | online: serving router (gate alpha {st.alpha}) | online, looser gate (alpha {LOOSE_ALPHA}) | "
        "offline, same one-sided labels | offline, same prompts, both outcomes |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Offline router, bench/routing.py's recipe (both outcomes) on {n_full} of the {len(r.tr)} training-split "
        f"prompts{' (all)' if n_full == len(r.tr) else ' (those embedded in time: see below)'}: **{full:.3f}** "
        f"(apgr_offline; bench/routing.py reports 0.673 with all of them). Random routing: "
        f"{random_apgr(r.g.weak_ok[r.te], r.g.strong_ok[r.te]):.3f}.",
        "",
        *(
            [
                f"The machine was shared by several sessions: {n_full} stream prompts were embedded in time "
                f"(held-out slice first, then the stream in order), so the offline router and the experiment use "
                f"those; the online loop and the held-out slice are complete.",
                "",
            ]
            if n_full < len(r.tr)
            else []
        ),
        "A boolean label tells about the model that answered only; it is recorded as the half of the comparison "
        "it bounds (routing/flywheel.py). The 'same one-sided labels' column trains on exactly the labels the "
        "online loop had, without the gate or a held-out part; the last column shows what the same prompts would "
        "teach with both models' outcomes known (the information a single served answer cannot give). The looser "
        "gate promotes earlier but serves worse routers at times, and once a router decides who answers, each "
        "model's labels come from the prompts it was sent, which slows what later labels can teach.",
        "",
        "## Every turn of the wheel",
        "",
        "| labels | strong share served | gate: held-out AUC candidate / serving | candidate APGR | promoted | "
        "serving APGR after |",
        "|---|---|---|---|---|---|",
        *cyc_rows,
        "",
        f"Promotions: {promotions}; gate regressions (a promoted router scoring below the one it replaced on the "
        f"held-out slice): **{res['regressions']}**; candidates turned down although ≥ 0.01 APGR better: {missed}. "
        f"With the looser gate (alpha {LOOSE_ALPHA}): {sum(c['promoted'] for c in loose['cycles'])} promotions, "
        f"{loose['regressions']} gate regressions.",
        "",
        "## Experiment and bandit (stream prompts past the replayed ones)",
        "",
        f"{exp['n']} requests. Variant A: the weak model alone, pass rate {exp['pass_a']:.3f}. Variant B: the "
        f"flywheel's final router at the 50 % share ({exp['strong_share_b']:.0%} strong), pass rate "
        f"{exp['pass_b']:.3f}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests until B's lead is significant (Fisher p < 0.05, stays so), median of {exp['orders']} orders "
        f"| {det if det is None else int(det)} |",
        f"| range over orders | {min(d for d in exp['detect_all'] if d)}-{max(d for d in exp['detect_all'] if d)} |"
        if any(exp["detect_all"])
        else "| range over orders | — |",
        f"| A/A splits flagged by the same rule | {exp['aa_false_positives']} of {exp['orders']} |",
        f"| Thompson-sampling regret / fixed 50/50 regret (mean of {exp['orders']} orders) | "
        f"{exp['bandit_ratio']:.3f} |",
        "",
    ]
    a = {n: curve.get(n, float("nan")) for n in CHECKPOINTS}
    reached = [n for n in CHECKPOINTS if n in curve and curve[n] >= full - 0.005]
    lines += [
        "## Verdict",
        "",
        f"Goal: the online loop reaches the offline router ({full:.3f}) by 2000 labels — "
        + (
            "met."
            if reached and reached[0] <= 2000
            else f"NOT met (serving {a[2000]:.3f} at 2000 labels, {a[5000]:.3f} at 5000). A boolean label gives one "
            f"model's outcome, so even trained offline on the same labels the router reaches {off[2000][0]:.3f} at "
            f"2000 and {off[5000][0]:.3f} at 5000, against {off[2000][1]:.3f} / {off[5000][1]:.3f} with both outcomes; "
            "and the gate, which must tell a better router from noise on held-out one-sided labels, first promoted "
            f"at {next((c['labels'] for c in res['cycles'] if c['promoted']), 'never')} labels."
        )
        + f" Gate regressions: {res['regressions']} (goal 0 — "
        + ("met)." if res["regressions"] == 0 else "NOT met).")
        + f" The known-better variant (+{exp['pass_b'] - exp['pass_a']:.3f} pass rate) is detected after "
        f"{det if det is None else int(det)} requests (median); the bandit's regret is "
        f"{exp['bandit_ratio']:.0%} of the fixed split's.",
        "",
    ]
    lines.append(
        f"flywheel apgr_250={a[250]:.3f} apgr_1000={a[1000]:.3f} apgr_2000={a[2000]:.3f} apgr_offline={full:.3f} "
        f"gate_regressions={res['regressions']} ab_requests_to_detect={det if det is None else int(det)} "
        f"bandit_regret_ratio={exp['bandit_ratio']:.3f}"
    )
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(lines[-1])


if __name__ == "__main__":
    main()
