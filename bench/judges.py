"""Judge validation: agreement of Portico's pairwise LLM judge with human pairwise labels, beside its
position-swap consistency, in the MT-Bench paper's format (agreement with ties = 3-way a/b/tie, and without ties).
Writes bench/results/judges.md (its last line is the one-line summary).

Human labels (../shared/data/preference or $PORTICO_DATA/preference): PRD's Vicuna-80 ratings (three crowd
reviewers on most pairs, ties allowed) and PRD's LFQA expert preferences (one to three experts, no ties). The
MT-Bench human judgements are not on this machine (SOURCES.md: HF only), so the paper's own figures are quoted.

The judge is evaluation.judges.PairwiseJudge (both orders asked; a verdict only when they agree, otherwise a tie)
calling a model through Portico's in-process pipeline, as `portico eval run` does. Default: the embedded local
model (SmolLM2-135M through llama.cpp), a floor. JUDGE_BASE_URL (+ JUDGE_MODEL, JUDGE_API_KEY) puts any
OpenAI-compatible model there instead. A fixed, seeded sample of pairs (prefix-stable: a larger JUDGES_N keeps the
smaller run's pairs) keeps the local run near 15 minutes on 2 cores; CIs are a bootstrap over pairs.

Env: JUDGES_N (pairs, half from each set), JUDGES_MAX_TOKENS (judge reply budget), JUDGES_CONCURRENCY,
JUDGES_SEED, JUDGES_THREADS (local model), JUDGES_RUBRIC (default: the pairwise judge's own default rubric),
JUDGES_OUT (results file), JUDGES_DUMP (a JSONL file of every reply).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from portico.commands.eval_targets import InProcessTarget
from portico.config.loader import validate
from portico.evaluation.agreement import Agreement, agreement, swap_stats
from portico.evaluation.datasets import Item
from portico.evaluation.judges import PairwiseJudge
from portico.evaluation.outcome import Outcome
from portico.evaluation.spec import PairwiseSpec
from portico.runtime import Runtime

OUT = Path(os.environ.get("JUDGES_OUT") or Path(__file__).resolve().parent / "results" / "judges.md")
DATA = Path(os.environ.get("PORTICO_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data") / "preference"
N = int(os.environ.get("JUDGES_N", "40"))
SEED = int(os.environ.get("JUDGES_SEED", "0"))
REMOTE = os.environ.get("JUDGE_BASE_URL")
MAX_TOKENS = int(os.environ.get("JUDGES_MAX_TOKENS", "320" if REMOTE else "64"))
CONCURRENCY = int(os.environ.get("JUDGES_CONCURRENCY", "8" if REMOTE else "1"))
RUBRIC = os.environ.get("JUDGES_RUBRIC")
# llama.cpp threads spin at each barrier: with another process busy on one of this machine's 2 cores, 2 threads
# judged a pair in 92-121 s and 1 thread in 20-37 s. 0: llama.cpp's default (every core).
THREADS = int(os.environ.get("JUDGES_THREADS", "1"))
# MT-Bench paper (Zheng et al., 2023): Table 2, MT-bench human judgements; Table 1, position-swap consistency.
PAPER = {"gpt4_ties": 0.66, "gpt4_no_ties": 0.85, "human_ties": 0.63, "human_no_ties": 0.81, "gpt4_swap": 0.65}


def load_vicuna() -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Pairs with both answers (bard, claude, gpt35, gpt4, vicuna-13b), and every rated pair's human votes
    (guanaco answers are not in the data, but their ratings still measure human-human agreement)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    with gzip.open(DATA / "prd_vicuna80_human" / "human_pairwise_ratings.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            groups[(r["question_id"], r["model_1"], r["model_2"])].append(r)
    vote = {"model_1": "a", "model_2": "b", "tie": "tie"}
    items, all_votes = [], []
    for key in sorted(groups):
        rs = groups[key]
        votes = [vote[r["winner"]] for r in rs]
        all_votes.append(votes)
        r = rs[0]
        if r["answer_1"] and r["answer_2"]:
            items.append({"set": "vicuna80", "id": f"v{key[0]}-{key[1]}-{key[2]}", "question": r["question"],
                          "a": r["answer_1"], "b": r["answer_2"], "humans": votes})  # fmt: skip
    return items, all_votes


def load_lfqa() -> tuple[list[dict[str, Any]], list[list[str]]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for line in (DATA / "prd_lfqa_expert" / "experts_pairwise_human_preferences.jsonl").read_text().splitlines():
        r = json.loads(line)
        groups[(r["question"], r["answer_a"], r["answer_b"])].append(r)
    items = []
    for k, (q, a, b) in enumerate(sorted(groups)):
        # overall_preference -1: answer_a preferred, +1: answer_b (the experts' justifications say so)
        votes = ["a" if r["overall_preference"] < 0 else "b" for r in groups[(q, a, b)]]
        items.append({"set": "lfqa", "id": f"l{k}", "question": _clean(q), "a": _clean(a), "b": _clean(b),
                      "humans": votes})  # fmt: skip
    return items, [it["humans"] for it in items]


def _clean(text: str) -> str:
    return text.replace("<br />", "\n").replace("<br/>", "\n")


def sample(items: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order[:n]]


def judge_config(state_dir: str) -> dict[str, Any]:
    if REMOTE:
        dep: dict[str, Any] = {"provider": "openai", "base_url": REMOTE, "model": os.environ.get("JUDGE_MODEL")}
        if os.environ.get("JUDGE_API_KEY"):
            dep["api_key"] = os.environ["JUDGE_API_KEY"]
        dep = {k: v for k, v in dep.items() if v}
    else:
        dep = {"provider": "local", "n_ctx": 8192}  # Vicuna-80 pairs run to ~3k tokens with the prompt
        if THREADS:
            dep["n_threads"] = THREADS
    return {"state_dir": state_dir, "logging": {"level": "WARNING"},
            "models": [{"name": "judge", "type": "chat", "deployments": [dep]}]}  # fmt: skip


def judge_name() -> str:
    if REMOTE:
        return f"{os.environ.get('JUDGE_MODEL') or 'judge'} at {REMOTE} (OpenAI-compatible, via Portico)"
    return "local SmolLM2-135M-Instruct Q4_1 (llama.cpp, the embedded default), via Portico"


def short_name() -> str:
    return (os.environ.get("JUDGE_MODEL") or "remote") if REMOTE else "local-smollm2-135m"


async def run_judge(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    tmp = tempfile.mkdtemp(prefix="bench-judges-")
    rt = Runtime(validate(judge_config(tmp), "bench-judges"))
    await rt.start()
    target = InProcessTarget(rt)
    spec = PairwiseSpec(model="judge", variants=["a", "b"], max_tokens=MAX_TOKENS,
                        **({"rubric": RUBRIC} if RUBRIC else {}))  # fmt: skip
    judge = PairwiseJudge(spec, target.judge)
    sem = asyncio.Semaphore(CONCURRENCY)
    done = 0
    t0 = time.perf_counter()

    async def one(it: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        async with sem:
            t = time.perf_counter()
            try:
                item = Item(id=it["id"], messages=[{"role": "user", "content": it["question"]}])
                winner, details = await judge.compare(item, Outcome(text=it["a"]), Outcome(text=it["b"]))
                res = {**it, "winner": winner, "verdicts": details["verdicts"], "replies": details["replies"]}
            except Exception as e:  # a failed call is reported, not silently a tie
                res = {**it, "winner": None, "verdicts": [None, None], "replies": [], "error": repr(e)[:300]}
            done += 1
            res["seconds"] = time.perf_counter() - t
            print(f"[{done}/{len(items)}] {it['id']} humans={it['humans']} judge={res['winner']} "
                  f"verdicts={res['verdicts']} {res['seconds']:.1f}s", flush=True)  # fmt: skip
            return res

    try:
        results = await asyncio.gather(*(one(it) for it in items))
    finally:
        await target.close()
        await rt.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return list(results), time.perf_counter() - t0


def _fmt(a: Agreement) -> str:
    if not a.total:
        return "n/a"
    return f"{a.rate:.3f} [{a.ci[0]:.2f}, {a.ci[1]:.2f}] ({a.agree}/{a.total})"


def _longer(it: dict[str, Any]) -> str:
    return "a" if len(it["a"]) >= len(it["b"]) else "b"


def report(results: list[dict[str, Any]], wall: float, pools: dict[str, list[list[str]]]) -> tuple[list[str], str]:
    ok = [r for r in results if r["winner"] is not None]
    errors = len(results) - len(ok)
    lines = [
        "# LLM judge validation: agreement with human pairwise labels",
        "",
        f"Judge: {judge_name()}; Portico's pairwise judge (evaluation/judges.py) asks both orders at temperature 0, "
        f"a verdict counts only when the two orders agree and anything else is a tie; reply budget {MAX_TOKENS} "
        f"tokens; {f'llama.cpp threads {THREADS}; ' if THREADS and not REMOTE else ''}"
        f"rubric: {'JUDGES_RUBRIC' if RUBRIC else 'the pairwise judge default'}.",
        "",
        f"Sample: {len(results)} pairs (seed {SEED}, JUDGES_N={N}: half PRD Vicuna-80 pairs with both answers, half "
        f"PRD LFQA expert pairs), {errors} judge call(s) failed and are left out. Agreement as in the MT-Bench paper: "
        "every (judge vote, human vote) on the same pair counts once; 'with ties' is 3-way (a / b / tie), 'without "
        "ties' drops comparisons where either side voted tie. Human-human: every pair of distinct humans on the "
        "same pair. 95% bootstrap CI over pairs, then (agreeing / compared votes).",
        "",
        "| set | judge | vs | agreement with ties | agreement without ties |",
        "|---|---|---|---|---|",
    ]
    summary: dict[str, Agreement] = {}
    for name, subset in (("Vicuna-80", "vicuna80"), ("LFQA experts", "lfqa"), ("both", None)):
        rs = [r for r in ok if subset is None or r["set"] == subset]
        if not rs:
            continue
        humans = [r["humans"] for r in rs]
        rows = [
            (short_name(), "human", [[r["winner"]] for r in rs]),
            (f"{short_name()}, one order only (a shown first)", "human",
             [[r["verdicts"][0] or "tie"] for r in rs]),
            ("longer answer wins (baseline)", "human", [[_longer(r)] for r in rs]),
            ("human", "human (same pairs)", None),
        ]  # fmt: skip
        for judge, vs, votes in rows:
            wt, nt = agreement(votes, humans, ties=True), agreement(votes, humans, ties=False)
            if judge == short_name():
                summary[f"{subset or 'all'}_ties"], summary[f"{subset or 'all'}_no_ties"] = wt, nt
            lines.append(f"| {name} | {judge} | {vs} | {_fmt(wt)} | {_fmt(nt)} |")
    lines.append("| Vicuna-80 + LFQA | random (expected) | human | 0.333 | 0.500 |")
    for name, votes in pools.items():
        wt, nt = agreement(None, votes, ties=True), agreement(None, votes, ties=False)
        summary[f"hh_{name}_ties"], summary[f"hh_{name}_no_ties"] = wt, nt
        lines.append(f"| {name}, every pair rated more than once | human | human | {_fmt(wt)} | {_fmt(nt)} |")
    lines += [
        f"| MT-Bench human judgements (paper, Table 2) | GPT-4 pairwise | human | {PAPER['gpt4_ties']:.2f} | "
        f"{PAPER['gpt4_no_ties']:.2f} |",
        f"| MT-Bench human judgements (paper, Table 2) | human | human | {PAPER['human_ties']:.2f} | "
        f"{PAPER['human_no_ties']:.2f} |",
        "",
        "Ties among the human votes in the sample: "
        + ", ".join(f"{k} {v}" for k, v in sorted(Counter(h for r in ok for h in r["humans"]).items()))
        + "; the judge's verdicts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["winner"] for r in ok).items()))
        + ".",
        "",
        "## Position-swap consistency",
        "",
        "| set | pairs | consistent (same verdict in both orders) | first shown wins both | second shown wins both | "
        "no verdict in a reply | other (one order a tie) |",
        "|---|---|---|---|---|---|---|",
    ]
    swap_all = None
    for name, subset in (("Vicuna-80", "vicuna80"), ("LFQA experts", "lfqa"), ("both", None)):
        rs = [r for r in ok if subset is None or r["set"] == subset]
        if not rs:
            continue
        s = swap_stats([r["verdicts"] for r in rs])
        swap_all = s if subset is None else swap_all
        other = s.n - s.consistent - s.first - s.second - s.unparsed
        cells = " | ".join(f"{k / s.n:.3f} ({k})" for k in (s.consistent, s.first, s.second, s.unparsed, other))
        lines.append(f"| {name} | {s.n} | {cells} |")
    lines.append(f"| MT-Bench paper, GPT-4 (Table 1) | | {PAPER['gpt4_swap']:.2f} | | | | |")
    secs = [r["seconds"] for r in results]
    lines += [
        "",
        f"Time: {wall:.0f} s wall for {len(results)} pairs (2 judge calls each, concurrency {CONCURRENCY}); "
        f"median {float(np.median(secs)):.1f} s per pair.",
        "",
        "Not measured: the MT-Bench human judgements themselves (not on this machine); the table quotes the "
        "paper's figures for them.",
        "",
        "Example judge replies (first pair, both orders):",
        "",
    ]
    first = next((r for r in ok if r["replies"]), None)
    if first:
        for k, rep in enumerate(first["replies"]):
            lines.append(f"- order {k + 1}: `{' '.join(rep.split())[:300]}`")
    lines += ["", "Machine: " + _machine(), ""]
    agree_t, agree_n = summary.get("all_ties"), summary.get("all_no_ties")
    hh_t = agreement(None, [v for vs in pools.values() for v in vs], ties=True)
    hh_n = agreement(None, [v for vs in pools.values() for v in vs], ties=False)
    line = (
        f"judges model={short_name()} n={len(ok)} "
        f"agree_ties={agree_t.rate:.3f} agree_no_ties={agree_n.rate:.3f} "
        f"human_human={hh_t.rate:.3f} human_human_no_ties={hh_n.rate:.3f} "
        f"swap_consistency={swap_all.consistency:.3f}"
        if agree_t and agree_n and swap_all
        else f"judges model={short_name()} n=0 failed={errors}"
    )
    return lines, line


def _machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    import llama_cpp

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, llama-cpp-python "
        f"{llama_cpp.__version__}, {platform.platform()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ("
        + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        + ")"
    )


def main() -> None:
    vicuna, vicuna_votes = load_vicuna()
    lfqa, lfqa_votes = load_lfqa()
    items = sample(vicuna, (N + 1) // 2, SEED) + sample(lfqa, N // 2, SEED)
    results, wall = asyncio.run(run_judge(items))
    lines, line = report(results, wall, {"Vicuna-80": vicuna_votes, "LFQA experts": lfqa_votes})
    OUT.write_text("\n".join(lines) + "\n" + line + "\n")
    if os.environ.get("JUDGES_DUMP"):  # every pair's replies, for reading (the data's licences: not for the repo)
        with open(os.environ["JUDGES_DUMP"], "w") as f:
            for r in results:
                f.write(json.dumps({k: r.get(k) for k in ("id", "humans", "winner", "verdicts", "replies")}) + "\n")
    print("\n".join(lines))
    print(line)


if __name__ == "__main__":
    main()
