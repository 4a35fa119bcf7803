"""Run a request context through ordered stages; a stage is one step or a parallel group of steps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

from portico.pipeline.context import INITIAL_FIELDS, RequestContext, StepTiming
from portico.pipeline.step import Step


class PipelineError(Exception):
    """The pipeline definition is inconsistent (raised at build time, never per request)."""


@dataclass(frozen=True, slots=True)
class Parallel:
    """Steps that run concurrently (e.g. input guardrails ∥ routing). If one fails, the others are cancelled."""

    steps: tuple[Step, ...]

    def __init__(self, *steps: Step) -> None:
        object.__setattr__(self, "steps", tuple(steps))


Stage = Step | Parallel


def _fields() -> frozenset[str]:
    return frozenset(f.name for f in fields(RequestContext))


class Flow(Step):
    """A step made of steps (a branch, a loop, a call; see portico.flow). The build-time check asks it for its
    read/write contract instead of reading ``reads``/``writes``; a linear pipeline never meets one."""

    path: str | None = None  # where it is declared (``steps[3]``), for error messages and spans

    def contract(self, pipeline: str, available: set[str], known: frozenset[str]) -> set[str]:
        """Check the steps inside against ``available``; return what is available after this step on every path."""
        raise NotImplementedError  # pragma: no cover - abstract

    def possible_writes(self) -> frozenset[str]:
        """Every field some path through it may write (parallel groups must not share one)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def children(self) -> list[Step]:
        """Every step inside, nested constructs included (their closers run at the pipeline's end)."""
        raise NotImplementedError  # pragma: no cover - abstract


def _where(s: Step) -> str:
    path = getattr(s, "path", None)
    return f"{path} ({s.name})" if path else f"step {s.name}"


def check_stages(name: str, stages: Sequence[Stage], available: set[str], known: frozenset[str]) -> set[str]:
    """The read/write contract of ordered stages: every read is written earlier on every path. Returns the fields
    available after them (``note:<step>`` marks that a step ran, for conditions that read its decision)."""
    for stage in stages:
        steps = stage.steps if isinstance(stage, Parallel) else (stage,)
        if isinstance(stage, Parallel):
            if len(steps) < 2:
                raise PipelineError(f"{name}: a parallel group needs at least two steps")
            seen: dict[str, str] = {}
            for s in steps:
                for w in s.possible_writes() if isinstance(s, Flow) else s.writes:
                    if w in seen:
                        raise PipelineError(f"{name}: parallel steps {seen[w]} and {s.name} both write '{w}'")
                    seen[w] = s.name
        after = set(available)
        for s in steps:
            if isinstance(s, Flow):
                after |= s.contract(name, set(available), known)
                continue
            for f in s.reads | s.writes:
                if f not in known:
                    raise PipelineError(f"{name}: {_where(s)} declares unknown context field '{f}'")
            missing = s.reads - available
            if missing:
                raise PipelineError(f"{name}: {_where(s)} reads {sorted(missing)} which no earlier step writes")
            after |= s.writes | {f"note:{s.name}"}
        available = after
    return available


async def run_stages(stages: Sequence[Stage], ctx: RequestContext) -> None:
    """Run stages in order until one answers the request (the body of a branch arm, a loop, a call)."""
    for stage in stages:
        if isinstance(stage, Parallel):
            await run_parallel(stage, ctx)
        else:
            await timed(stage, ctx)
        if ctx.answered_by is not None:
            return


class Pipeline:
    def __init__(self, name: str, stages: Sequence[Stage], produces: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.stages: tuple[Stage, ...] = tuple(stages)
        self.produces = produces  # fields every path must write (an application that places generate itself)
        self._check()

    def _check(self) -> None:
        available = check_stages(self.name, self.stages, set(INITIAL_FIELDS), _fields())
        missing = self.produces - available
        if missing:
            raise PipelineError(f"{self.name}: not every path through the steps writes {sorted(missing)} "
                                "(a branch needs a generate step in every arm, else included)")  # fmt: skip

    @property
    def step_names(self) -> list[str]:
        out: list[str] = []
        for st in self.stages:
            out.extend(s.name for s in (st.steps if isinstance(st, Parallel) else (st,)))
        return out

    async def run(self, ctx: RequestContext) -> RequestContext:
        for stage in self.stages:  # run_stages, inlined: the request path of every pipeline
            if isinstance(stage, Parallel):
                await run_parallel(stage, ctx)
            else:
                await timed(stage, ctx)
            if ctx.answered_by is not None:
                break
        return ctx


async def run_parallel(group: Parallel, ctx: RequestContext) -> None:
    try:
        async with asyncio.TaskGroup() as tg:
            for s in group.steps:
                tg.create_task(timed(s, ctx))
    except BaseExceptionGroup as eg:
        # Callers handle one failure (e.g. a PorticoError → its HTTP status), not a group.
        raise eg.exceptions[0] from None


async def timed(step: Step, ctx: RequestContext) -> None:
    t0 = time.perf_counter()
    try:
        await step.run(ctx)
    except BaseException as e:
        ctx.timings.append(StepTiming(step.name, t0, time.perf_counter() - t0, type(e).__name__))
        raise
    ctx.timings.append(StepTiming(step.name, t0, time.perf_counter() - t0))
