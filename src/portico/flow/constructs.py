"""Branches, loops and calls: steps made of steps, so the runner and a linear pipeline stay as they are.

Each is a ``Flow`` step. Its own span covers the whole construct; inside it, the arm a branch took and every loop
iteration get a span of their own carrying the condition and its value (``portico.flow.*`` attributes), so the
trace's waterfall shows the path a request took. An early answer inside ends the request as anywhere else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portico.flow.conditions import LOOP_KEY, Condition
from portico.pipeline.context import RequestContext, StepTiming
from portico.pipeline.runner import Flow, Parallel, PipelineError, Stage, check_stages, run_stages
from portico.pipeline.step import Step


def members(stages: Sequence[Stage]) -> list[Step]:
    out: list[Step] = []
    for st in stages:
        for s in st.steps if isinstance(st, Parallel) else (st,):
            out.append(s)
            if isinstance(s, Flow):
                out.extend(s.children())
    return out


def _writes(stages: Sequence[Stage]) -> frozenset[str]:
    out: set[str] = set()
    for s in members(stages):
        if not isinstance(s, Flow):
            out |= s.writes
    return frozenset(out)


def check_condition(pipeline: str, path: str, cond: Condition, available: set[str]) -> None:
    for field, needs in cond.needs:
        if not needs & available:
            writers = " or ".join(sorted(n.removeprefix("note:") for n in needs))
            raise PipelineError(f"{pipeline}: {path}: condition {cond.text!r} reads '{field}', which needs "
                                f"{writers} to run earlier on every path")  # fmt: skip


def _span(ctx: RequestContext, name: str, t0: float, attributes: dict[str, Any], error: str | None = None) -> None:
    ctx.timings.append(StepTiming(name, t0, time.perf_counter() - t0, error, attributes))


@dataclass(frozen=True, slots=True)
class Arm:
    path: str  # steps[0].when[1] or steps[0].else
    condition: Condition | None  # None: the else arm
    stages: tuple[Stage, ...]


class Branch(Flow):
    """Ordered arms; the first whose condition is true runs, else the ``else`` arm (if any), else nothing."""

    def __init__(self, path: str, arms: Sequence[Arm]) -> None:
        self.path = path
        self.name = f"branch {path}"
        self.arms = tuple(arms)
        self.has_else = any(a.condition is None for a in self.arms)

    def contract(self, pipeline: str, available: set[str], known: frozenset[str]) -> set[str]:
        outs = []
        for arm in self.arms:
            if arm.condition is not None:
                check_condition(pipeline, arm.path, arm.condition, available)
            outs.append(check_stages(pipeline, arm.stages, set(available), known))
        if not self.has_else:
            outs.append(set(available))  # no arm may run: nothing new is certain
        return set.intersection(*outs)

    def possible_writes(self) -> frozenset[str]:
        return _writes([s for a in self.arms for s in a.stages])

    def children(self) -> list[Step]:
        return members([s for a in self.arms for s in a.stages])

    async def run(self, ctx: RequestContext) -> None:
        t0 = time.perf_counter()
        false: list[str] = []
        errors: list[str] = []
        for arm in self.arms:
            if arm.condition is not None:
                value, error = arm.condition.evaluate(ctx)
                if error:
                    errors.append(f"{arm.path}: {error}")
                if not value:
                    false.append(arm.path)
                    continue
            attrs = _attrs("branch", arm.condition, True, false=false, errors=errors)
            t1 = time.perf_counter()
            try:
                await run_stages(arm.stages, ctx)
            except BaseException as e:
                _span(ctx, arm.path, t1, attrs, type(e).__name__)
                raise
            _span(ctx, arm.path, t1, attrs)
            return
        _span(ctx, f"{self.path} (no arm)", t0, _attrs("branch", None, False, false=false, errors=errors))


class Loop(Flow):
    """Runs its body, then checks ``until``; again while it is false, at most ``max_iterations`` times. The body
    always runs once, so what it writes is available after the loop. ``iteration`` counts from 1."""

    def __init__(self, path: str, body: Sequence[Stage], until: Condition | None, max_iterations: int) -> None:
        self.path = path
        self.name = f"loop {path}"
        self.body = tuple(body)
        self.until = until
        self.max_iterations = max_iterations

    def contract(self, pipeline: str, available: set[str], known: frozenset[str]) -> set[str]:
        after = check_stages(pipeline, self.body, set(available), known)
        if self.until is not None:
            check_condition(pipeline, f"{self.path}.until", self.until, after)
        return after

    def possible_writes(self) -> frozenset[str]:
        return _writes(self.body)

    def children(self) -> list[Step]:
        return members(self.body)

    async def run(self, ctx: RequestContext) -> None:
        counts: list[int] = ctx.state.setdefault(LOOP_KEY, [])
        counts.append(0)
        try:
            for i in range(1, self.max_iterations + 1):
                counts[-1] = i
                t0 = time.perf_counter()
                try:
                    await run_stages(self.body, ctx)
                except BaseException as e:
                    _span(ctx, f"{self.path} iteration {i}", t0, {"portico.flow.iteration": i}, type(e).__name__)
                    raise
                if ctx.answered_by is not None:
                    _span(ctx, f"{self.path} iteration {i}", t0,
                          {"portico.flow.iteration": i, "portico.flow.answered_by": ctx.answered_by})  # fmt: skip
                    return
                value, error = self.until.evaluate(ctx) if self.until is not None else (False, None)
                attrs = _attrs("loop", self.until, value, errors=[error] if error else [])
                attrs["portico.flow.iteration"] = i
                if not value and i == self.max_iterations:
                    attrs["portico.flow.exhausted"] = True  # stopped by max_iterations, not by the condition
                _span(ctx, f"{self.path} iteration {i}", t0, attrs)
                if value:
                    return
        finally:
            counts.pop()


class Call(Flow):
    """A named sub-pipeline (``pipelines:``), run in place; its span is named after it."""

    def __init__(self, path: str, target: str, stages: Sequence[Stage]) -> None:
        self.path = path
        self.target = target
        self.name = f"call {target}"
        self.stages = tuple(stages)

    def contract(self, pipeline: str, available: set[str], known: frozenset[str]) -> set[str]:
        return check_stages(pipeline, self.stages, available, known)

    def possible_writes(self) -> frozenset[str]:
        return _writes(self.stages)

    def children(self) -> list[Step]:
        return members(self.stages)

    async def run(self, ctx: RequestContext) -> None:
        await run_stages(self.stages, ctx)


def _attrs(kind: str, cond: Condition | None, value: bool, *, false: Sequence[str] = (),
           errors: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"portico.flow.kind": kind, "portico.flow.value": value}
    if cond is not None:
        out["portico.flow.condition"] = cond.text
    else:
        out["portico.flow.arm"] = "else" if kind == "branch" and value else "none"
    if false:
        out["portico.flow.false"] = list(false)  # the arms checked before, whose conditions were false
    if errors:
        out["portico.flow.errors"] = list(errors)
    return out
