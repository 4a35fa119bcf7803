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


class Pipeline:
    def __init__(self, name: str, stages: Sequence[Stage]) -> None:
        self.name = name
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._check()

    def _check(self) -> None:
        known = _fields()
        available = set(INITIAL_FIELDS)
        for stage in self.stages:
            steps = stage.steps if isinstance(stage, Parallel) else (stage,)
            if isinstance(stage, Parallel):
                if len(steps) < 2:
                    raise PipelineError(f"{self.name}: a parallel group needs at least two steps")
                seen: dict[str, str] = {}
                for s in steps:
                    for w in s.writes:
                        if w in seen:
                            raise PipelineError(f"{self.name}: parallel steps {seen[w]} and {s.name} both write '{w}'")
                        seen[w] = s.name
            for s in steps:
                for f in s.reads | s.writes:
                    if f not in known:
                        raise PipelineError(f"{self.name}: step {s.name} declares unknown context field '{f}'")
                missing = s.reads - available
                if missing:
                    raise PipelineError(
                        f"{self.name}: step {s.name} reads {sorted(missing)} which no earlier step writes"
                    )
            for s in steps:
                available |= s.writes

    @property
    def step_names(self) -> list[str]:
        out: list[str] = []
        for st in self.stages:
            out.extend(s.name for s in (st.steps if isinstance(st, Parallel) else (st,)))
        return out

    async def run(self, ctx: RequestContext) -> RequestContext:
        for stage in self.stages:
            if isinstance(stage, Parallel):
                await self._run_parallel(stage, ctx)
            else:
                await _timed(stage, ctx)
            if ctx.answered_by is not None:
                break
        return ctx

    async def _run_parallel(self, group: Parallel, ctx: RequestContext) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for s in group.steps:
                    tg.create_task(_timed(s, ctx))
        except BaseExceptionGroup as eg:
            # Callers handle one failure (e.g. a PorticoError → its HTTP status), not a group.
            raise eg.exceptions[0] from None


async def _timed(step: Step, ctx: RequestContext) -> None:
    t0 = time.perf_counter()
    try:
        await step.run(ctx)
    except BaseException as e:
        ctx.timings.append(StepTiming(step.name, t0, time.perf_counter() - t0, type(e).__name__))
        raise
    ctx.timings.append(StepTiming(step.name, t0, time.perf_counter() - t0))
