"""What branches and loops cost a request, and that a linear pipeline pays nothing for them.

Runs Pipeline.run plus the trace's span assembly (build_spans) for a linear pipeline of three no-op steps, in
this process's Portico (PYTHONPATH picks the tree), and, when the tree has portico.flow, the same with a branch
and with a two-iteration loop. ``make``-less on purpose: run it per tree and compare, e.g.

    for t in /work/main $PWD; do PYTHONPATH=$t/src python bench/flow_overhead.py --label $t; done

Prints one line per pipeline: microseconds per request (median of 7 rounds of 20,000 requests)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from portico.observability.spans import build_spans
from portico.pipeline import Pipeline, RequestContext, Step
from portico.protocol.chat import ChatCompletionRequest

REQ = ChatCompletionRequest.model_validate(
    {"model": "app", "messages": [{"role": "user", "content": "hi"}], "metadata": {"tier": "gold"}}
)


class Noop(Step):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    async def run(self, ctx: RequestContext) -> None:
        return None


def pipelines() -> dict[str, Pipeline]:
    out = {"linear (3 steps)": Pipeline("t", [Noop("a"), Noop("b"), Noop("c")])}
    try:
        from portico.flow.conditions import Condition
        from portico.flow.constructs import Arm, Branch, Loop
    except ImportError:
        return out  # a tree without branches and loops
    cond = Condition('request.metadata.tier == "gold"')
    branch = Branch("steps[1]", [Arm("steps[1].when[0]", cond, (Noop("b"),)), Arm("steps[1].else", None, (Noop("x"),))])
    out["branch (3 steps, 1 condition)"] = Pipeline("t", [Noop("a"), branch, Noop("c")])
    loop = Loop("steps[1]", [Noop("b")], Condition("iteration >= 2"), 3)
    out["loop (2 iterations)"] = Pipeline("t", [Noop("a"), loop, Noop("c")])
    return out


async def one_round(p: Pipeline, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        ctx = RequestContext(request=REQ, request_id="r", model="app")
        await p.run(ctx)
        build_spans("chat app", {}, False, ctx.timings, ctx.attempts, "chat", ctx.started, time.perf_counter())
    return (time.perf_counter() - t0) / n * 1e6


async def main(label: str, n: int, rounds: int) -> None:
    results: dict[str, list[float]] = {}
    ps = pipelines()
    for _ in range(rounds):  # interleaved, so drift in machine load hits every pipeline alike
        for name, p in ps.items():
            results.setdefault(name, []).append(await one_round(p, n))
    for name, us in results.items():
        print(f"{label}\t{name}\t{statistics.median(us):.2f} us/request\t(rounds: {', '.join(f'{u:.2f}' for u in us)})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="this tree")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    a: Any = ap.parse_args()
    asyncio.run(main(a.label, a.n, a.rounds))
