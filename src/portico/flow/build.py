"""An application's ``steps:`` (and the named ``pipelines:`` they call) → the stages of its Pipeline, once at start.

Besides ``{use: <kind>, …options}`` and ``{use: parallel, steps: […]}``, a step may be::

    - branch:                                   # first arm whose condition is true runs; else the else arm
        - when: 'request.metadata.tier == "gold"'
          steps: [{use: system_prompt, text: "You are the gold desk."}]
        - else: [{use: system_prompt, text: "You are the standard desk."}]
    - loop: {until: 'output.checks.passed', max_iterations: 3, steps: […]}
    - call: shared-rag                          # a named pipeline from the top-level pipelines:
    - use: generate                             # the model call, placed explicitly (optionally model: …)

Without an explicit ``generate`` the model call goes where it always went: after the steps that run before it,
before those that check its answer (a construct must then hold steps of one side only). With one, the steps run
exactly as listed, and every path must reach a generate (checked here, like every read/write contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from portico.flow.conditions import Condition, ConditionError
from portico.flow.constructs import Arm, Branch, Call, Loop, members
from portico.flow.generate import generate_step
from portico.gateway import GenerateStep
from portico.pipeline import Parallel, Pipeline, PipelineError, Step
from portico.pipeline.runner import Stage

MAX_ITERATIONS = 10  # the global cap on any loop's max_iterations: a loop of model calls is never unbounded
# Step kinds that answer in place of the model call (their own loop makes the calls): with one and no explicit
# generate, no generate is added.
ANSWERING = frozenset({"agent"})
CONSTRUCTS = ("branch", "loop", "call")

# make_step(where, {use: kind, …}) → (phase, step): the runtime's registry lookup.
MakeStep = Callable[[str, dict[str, Any]], tuple[str, Step]]


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: str
    steps: list[dict[str, Any]]


class _LoopSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: str | None = None
    max_iterations: int = Field(ge=1, le=MAX_ITERATIONS)
    steps: list[dict[str, Any]] = Field(min_length=1)


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


class Builder:
    def __init__(self, app: str, app_model: str, pipelines: dict[str, list[dict[str, Any]]], make_step: MakeStep,
                 services: Any) -> None:  # fmt: skip
        self.app = app
        self.app_model = app_model
        self.pipelines = pipelines
        self.make_step = make_step
        self.services = services
        self.explicit_generate = False
        self.answering = False  # an ANSWERING step is listed somewhere

    def fail(self, where: str, message: str) -> ValueError:
        return ValueError(f"applications '{self.app}' {where}: {message}")

    def sequence(self, prefix: str, specs: list[Any], stack: tuple[str, ...]) -> list[tuple[set[str], Stage]]:
        return [self.item(f"{prefix}[{i}]", spec, stack) for i, spec in enumerate(specs)]

    def item(self, where: str, spec: Any, stack: tuple[str, ...]) -> tuple[set[str], Stage]:
        """(the phases it holds, the stage)."""
        if not isinstance(spec, dict):
            raise self.fail(where, f"each step must be a mapping, not {spec!r}")
        kinds = [k for k in CONSTRUCTS if k in spec]
        if kinds:
            if len(spec) != 1:
                extra = sorted(set(spec) - {kinds[0]})
                raise self.fail(where, f"'{kinds[0]}' takes no sibling keys (got {extra})")
            return getattr(self, kinds[0])(where, spec[kinds[0]], stack)
        use = spec.get("use")
        if use == "parallel":
            specs = spec.get("steps")
            if not isinstance(specs, list) or set(spec) - {"use", "steps"}:
                raise self.fail(where, "a parallel group is {use: parallel, steps: [...]}")
            phases: set[str] = set()
            group: list[Step] = []
            for j, m in enumerate(specs):
                p, st = self.item(f"{where}.steps[{j}]", m, stack)
                if isinstance(st, Parallel):
                    raise self.fail(f"{where}.steps[{j}]", "a parallel group cannot hold another")
                if any(isinstance(x, Loop) for x in members([st])):
                    # the iteration count is one per request: two loops at once would share it
                    raise self.fail(f"{where}.steps[{j}]", "a loop cannot run inside a parallel group")
                phases |= p
                group.append(st)
            if len(phases) > 1:
                raise self.fail(where, "a parallel group must hold steps of one phase")
            return phases, Parallel(*group)
        if use == "generate":
            self.explicit_generate = True
            try:
                step = generate_step({k: v for k, v in spec.items() if k != "use"}, self.services, self.app_model)
            except ValueError as e:
                raise self.fail(where, f"(generate) {e}") from None
            step.path = where
            return set(), step
        self.answering |= use in ANSWERING
        phase, step = self.make_step(f"applications '{self.app}' {where}", spec)
        step.path = where  # type: ignore[attr-defined]  # for contract errors that name the place
        return {phase}, step

    def condition(self, where: str, text: Any) -> Condition:
        try:
            return Condition(text)
        except ConditionError as e:
            raise self.fail(where, str(e)) from None

    def branch(self, where: str, arms: Any, stack: tuple[str, ...]) -> tuple[set[str], Stage]:
        if not isinstance(arms, list) or not arms:
            raise self.fail(where, "branch is a list of arms: {when: <condition>, steps: [...]} and one {else: [...]}")
        built: list[Arm] = []
        phases: set[str] = set()
        for i, arm in enumerate(arms):
            if isinstance(arm, dict) and set(arm) == {"else"}:
                if i != len(arms) - 1:
                    raise self.fail(f"{where}.else", "the else arm must come last")
                path, cond, steps = f"{where}.else", None, arm["else"]
                if not isinstance(steps, list):
                    raise self.fail(path, "else takes a list of steps")
            else:
                path = f"{where}.when[{i}]"
                try:
                    w = _When.model_validate(arm)
                except ValidationError as e:
                    raise self.fail(path, _first_error(e)) from None
                cond, steps = self.condition(path, w.when), w.steps
            items = self.sequence(f"{path}.steps" if cond is not None else path, steps, stack)
            phases |= set().union(*(p for p, _ in items)) if items else set()
            built.append(Arm(path, cond, tuple(s for _, s in items)))
        return phases, Branch(where, built)

    def loop(self, where: str, spec: Any, stack: tuple[str, ...]) -> tuple[set[str], Stage]:
        try:
            o = _LoopSpec.model_validate(spec)
        except ValidationError as e:
            msg = _first_error(e)
            if "max_iterations" in msg and "less than or equal" in msg:
                msg += f" (the global cap on loops is {MAX_ITERATIONS})"
            raise self.fail(f"{where}.loop", msg) from None
        until = self.condition(f"{where}.loop.until", o.until) if o.until is not None else None
        items = self.sequence(f"{where}.loop.steps", o.steps, stack)
        return set().union(*(p for p, _ in items)), Loop(where, [s for _, s in items], until, o.max_iterations)

    def call(self, where: str, name: Any, stack: tuple[str, ...]) -> tuple[set[str], Stage]:
        if not isinstance(name, str) or name not in self.pipelines:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise self.fail(where, f"call: unknown pipeline {name!r} (pipelines: {known})")
        if name in stack:
            cycle = " → ".join((*stack[stack.index(name) :], name))
            raise self.fail(where, f"call: pipelines call each other in a cycle ({cycle})")
        items = self.sequence(f"pipelines.{name}.steps", self.pipelines[name], (*stack, name))
        return set().union(*(p for p, _ in items)) if items else set(), Call(where, name, [s for _, s in items])


def build_application(app: Any, pipelines: dict[str, list[Any]], make_step: MakeStep, services: Any) -> Pipeline:
    """The application's Pipeline; a ValueError/PipelineError naming the application and the path when broken."""
    specs = {name: [_spec(s) for s in steps] for name, steps in pipelines.items()}
    b = Builder(app.name, app.model, specs, make_step, services)
    items = b.sequence("steps", [_spec(s) for s in app.steps], ())
    if b.explicit_generate:
        stages = [s for _, s in items]
        produces = frozenset({"response"})
    else:
        before: list[Stage] = []
        after: list[Stage] = []
        for i, (phases, stage) in enumerate(items):
            if len(phases) > 1:
                raise b.fail(f"steps[{i}]", "holds steps that run before the model call and steps that check its "
                                            "answer; place the model call yourself with {use: generate}")  # fmt: skip
            (after if "after" in phases else before).append(stage)
        answer = [] if b.answering else [GenerateStep(services.gateway, app.model)]
        stages = [*before, *answer, *after]
        produces = frozenset()
    closers: list[Step] = []
    for s in members(stages):
        if s.closer is not None and all(c is not s.closer for c in closers):
            closers.append(s.closer)
    try:
        return Pipeline(app.name, [*stages, *closers], produces=produces)
    except PipelineError as e:  # "<app>: steps[2].when[0]: …" → "applications '<app>': …", like config errors
        raise PipelineError(f"applications '{app.name}'{str(e).removeprefix(app.name)}") from None


def _spec(step: Any) -> dict[str, Any]:
    """A StepConfig (``use`` plus its options) or a plain mapping → one mapping."""
    if isinstance(step, BaseModel):  # options as written: an explicit null (clarification: null) is kept
        out = dict(step.model_extra or {})
        if getattr(step, "use", None) is not None:
            out["use"] = step.use
        return out
    return step
