"""The pipeline runner (order, parallel groups, short-circuit, build-time checks, timings) and Runtime's
application building, with a config of HTTP deployments only so no model ever loads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from portico.config.loader import validate
from portico.config.schema import PorticoConfig
from portico.context.system_prompt import SystemPromptStep
from portico.pipeline import Parallel, Pipeline, PipelineError, RequestContext, Step
from portico.pipeline.registry import StepRegistry
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest, ModelNotFound
from portico.runtime import Runtime, default_registry

DEAD = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}


def make_ctx(messages: list[dict[str, Any]] | None = None, model: str = "m") -> RequestContext:
    req = ChatCompletionRequest.model_validate(
        {"model": model, "messages": messages or [{"role": "user", "content": "hi"}]}
    )
    return RequestContext(request=req, request_id="rid-1", model=model)


class Recorder(Step):
    """Appends its name to ``ctx.state['log']`` when it runs."""

    name = "recorder"

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    async def run(self, ctx: RequestContext) -> None:
        ctx.state.setdefault("log", []).append(self.name)


def step(
    name: str,
    run: Callable[[RequestContext], Any] | None = None,
    reads: frozenset[str] = frozenset(),
    writes: frozenset[str] = frozenset(),
) -> Step:
    """A step class made on the fly, so ``reads``/``writes`` stay class attributes as in real steps."""

    async def _run(self: Step, ctx: RequestContext) -> None:
        ctx.state.setdefault("log", []).append(name)
        if run is not None:
            await run(ctx)

    cls = type(f"Step_{name}", (Step,), {"name": name, "reads": reads, "writes": writes, "run": _run})
    return cls()


# ---- ordering and short-circuit --------------------------------------------------------------------------


async def test_stages_run_in_order() -> None:
    p = Pipeline("t", [Recorder("a"), Recorder("b"), Recorder("c")])
    ctx = await p.run(make_ctx())
    assert ctx.state["log"] == ["a", "b", "c"]
    assert ctx.answered_by is None


async def test_run_returns_the_same_context() -> None:
    ctx = make_ctx()
    assert await Pipeline("t", [Recorder("a")]).run(ctx) is ctx


async def test_step_names_flatten_parallel_groups() -> None:
    p = Pipeline("t", [Recorder("a"), Parallel(Recorder("b"), Recorder("c")), Recorder("d")])
    assert p.step_names == ["a", "b", "c", "d"]


async def test_parallel_group_runs_concurrently() -> None:
    a_ready, b_ready = asyncio.Event(), asyncio.Event()

    async def a(ctx: RequestContext) -> None:
        a_ready.set()
        await b_ready.wait()  # deadlocks if b only starts after a finished

    async def b(ctx: RequestContext) -> None:
        b_ready.set()
        await a_ready.wait()

    p = Pipeline("t", [Parallel(step("a", a), step("b", b)), Recorder("after")])
    ctx = await asyncio.wait_for(p.run(make_ctx()), 5)
    assert sorted(ctx.state["log"][:2]) == ["a", "b"]
    assert ctx.state["log"][2] == "after"


async def test_short_circuit_stops_later_stages() -> None:
    answer = {"id": "x", "object": "chat.completion", "choices": []}

    async def block(ctx: RequestContext) -> None:
        ctx.short_circuit("guard", response=answer)

    later = Parallel(Recorder("n1"), Recorder("n2"))
    p = Pipeline("t", [Recorder("a"), step("guard", block), Recorder("never"), later])
    ctx = await p.run(make_ctx())
    assert ctx.state["log"] == ["a", "guard"]
    assert ctx.answered_by == "guard"
    assert ctx.response is answer
    assert ctx.stream is None


async def test_short_circuit_in_parallel_group_lets_sibling_finish_and_stops_after() -> None:
    async def hit(ctx: RequestContext) -> None:
        ctx.short_circuit("cache", response={"cached": True})

    p = Pipeline("t", [Parallel(step("cache", hit), Recorder("sibling")), Recorder("never")])
    ctx = await p.run(make_ctx())
    assert sorted(ctx.state["log"]) == ["cache", "sibling"]
    assert ctx.answered_by == "cache"
    assert ctx.response == {"cached": True}


async def test_short_circuit_with_stream() -> None:
    async def chunks() -> Any:
        yield {"x": 1}

    async def answer(ctx: RequestContext) -> None:
        ctx.short_circuit("canned", stream=chunks())

    ctx = await Pipeline("t", [step("canned", answer), Recorder("never")]).run(make_ctx())
    assert ctx.answered_by == "canned"
    assert ctx.response is None
    assert ctx.stream is not None
    assert [c async for c in ctx.stream] == [{"x": 1}]


# ---- failures -----------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_failing_sequential_step_raises_and_stops() -> None:
    async def fail(ctx: RequestContext) -> None:
        raise Boom("no")

    p = Pipeline("t", [step("bad", fail), Recorder("never")])
    ctx = make_ctx()
    with pytest.raises(Boom, match="no"):
        await p.run(ctx)
    assert ctx.state["log"] == ["bad"]


async def test_failing_parallel_step_raises_its_own_exception_and_cancels_sibling() -> None:
    started = asyncio.Event()
    sibling_cancelled = asyncio.Event()

    async def slow(ctx: RequestContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise
        ctx.state["slow_finished"] = True

    async def fail(ctx: RequestContext) -> None:
        await started.wait()
        raise Boom("guardrail failed")

    p = Pipeline("t", [Parallel(step("slow", slow), step("bad", fail)), Recorder("never")])
    ctx = make_ctx()
    with pytest.raises(Boom, match="guardrail failed") as exc:
        await asyncio.wait_for(p.run(ctx), 5)
    assert type(exc.value) is Boom  # not an ExceptionGroup
    assert sibling_cancelled.is_set()
    assert "slow_finished" not in ctx.state
    assert "never" not in ctx.state["log"]


async def test_portico_error_in_parallel_group_keeps_its_status() -> None:
    async def fail(ctx: RequestContext) -> None:
        raise InvalidRequest("blocked", param="messages", code="blocked")

    p = Pipeline("t", [Parallel(step("bad", fail), Recorder("ok"))])
    with pytest.raises(InvalidRequest) as exc:
        await p.run(make_ctx())
    assert exc.value.status == 400
    assert exc.value.code == "blocked"


# ---- timings -------------------------------------------------------------------------------------------------


async def test_timings_recorded_per_step_in_order() -> None:
    ctx = await Pipeline("t", [Recorder("a"), Recorder("b")]).run(make_ctx())
    assert [t.step for t in ctx.timings] == ["a", "b"]
    assert all(t.error is None for t in ctx.timings)
    assert all(t.duration >= 0 for t in ctx.timings)
    assert ctx.timings[0].started <= ctx.timings[1].started


async def test_timings_record_error_name_on_failure() -> None:
    async def fail(ctx: RequestContext) -> None:
        raise Boom("x")

    ctx = make_ctx()
    with pytest.raises(Boom):
        await Pipeline("t", [Recorder("a"), step("bad", fail)]).run(ctx)
    assert [(t.step, t.error) for t in ctx.timings] == [("a", None), ("bad", "Boom")]


async def test_timings_of_parallel_failure_include_cancelled_sibling() -> None:
    started = asyncio.Event()

    async def slow(ctx: RequestContext) -> None:
        started.set()
        await asyncio.sleep(60)

    async def fail(ctx: RequestContext) -> None:
        await started.wait()
        raise Boom("x")

    ctx = make_ctx()
    with pytest.raises(Boom):
        await asyncio.wait_for(Pipeline("t", [Parallel(step("slow", slow), step("bad", fail))]).run(ctx), 5)
    assert sorted((t.step, t.error) for t in ctx.timings) == [("bad", "Boom"), ("slow", "CancelledError")]


async def test_timings_skip_stages_after_short_circuit() -> None:
    async def hit(ctx: RequestContext) -> None:
        ctx.short_circuit("hit", response={})

    ctx = await Pipeline("t", [step("hit", hit), Recorder("never")]).run(make_ctx())
    assert [t.step for t in ctx.timings] == ["hit"]


# ---- build-time checks ---------------------------------------------------------------------------------------


def test_read_of_unwritten_field_is_rejected() -> None:
    with pytest.raises(PipelineError, match=r"t: step late reads \['response'\] which no earlier step writes"):
        Pipeline("t", [step("late", reads=frozenset({"response"}))])


def test_read_of_field_written_only_later_is_rejected() -> None:
    with pytest.raises(PipelineError, match="step reader reads"):
        Pipeline("t", [step("reader", reads=frozenset({"usage"})), step("writer", writes=frozenset({"usage"}))])


def test_read_of_field_written_earlier_is_accepted() -> None:
    p = Pipeline("t", [step("writer", writes=frozenset({"usage"})), step("reader", reads=frozenset({"usage"}))])
    assert p.step_names == ["writer", "reader"]


def test_initial_fields_are_readable() -> None:
    reads = frozenset({"request", "request_id", "model", "application", "caller"})
    assert Pipeline("t", [step("s", reads=reads)]).step_names == ["s"]


def test_parallel_sibling_write_is_not_visible_to_sibling() -> None:
    group = Parallel(step("w", writes=frozenset({"usage"})), step("r", reads=frozenset({"usage"})))
    with pytest.raises(PipelineError, match="step r reads"):
        Pipeline("t", [group])


def test_parallel_group_writes_are_visible_after_the_group() -> None:
    group = Parallel(step("w", writes=frozenset({"usage"})), step("x"))
    assert Pipeline("t", [group, step("r", reads=frozenset({"usage"}))]).step_names == ["w", "x", "r"]


@pytest.mark.parametrize("kind", ["reads", "writes"])
def test_unknown_context_field_is_rejected(kind: str) -> None:
    s = step("typo", **{kind: frozenset({"respnse"})})
    with pytest.raises(PipelineError, match="t: step typo declares unknown context field 'respnse'"):
        Pipeline("t", [s])


def test_parallel_steps_writing_same_field_are_rejected() -> None:
    group = Parallel(step("a", writes=frozenset({"usage"})), step("b", writes=frozenset({"usage"})))
    with pytest.raises(PipelineError, match="t: parallel steps a and b both write 'usage'"):
        Pipeline("t", [group])


@pytest.mark.parametrize("n", [0, 1])
def test_parallel_group_needs_two_steps(n: int) -> None:
    group = Parallel(*[Recorder(f"s{i}") for i in range(n)])
    with pytest.raises(PipelineError, match="a parallel group needs at least two steps"):
        Pipeline("t", [group])


def test_sequential_steps_may_write_same_field() -> None:
    p = Pipeline("t", [step("a", writes=frozenset({"usage"})), step("b", writes=frozenset({"usage"}))])
    assert p.step_names == ["a", "b"]


# ---- registry --------------------------------------------------------------------------------------------------


def test_registry_rejects_duplicate_kind() -> None:
    reg = StepRegistry()
    reg.register("x", lambda o, s: Recorder("x"))
    with pytest.raises(ValueError, match="step kind 'x' is registered twice"):
        reg.register("x", lambda o, s: Recorder("x"))


def test_registry_unknown_kind_lists_known() -> None:
    reg = StepRegistry()
    reg.register("b", lambda o, s: Recorder("b"))
    reg.register("a", lambda o, s: Recorder("a"), phase="after")
    assert reg.names() == ["a", "b"]
    assert reg.get("a").phase == "after"
    with pytest.raises(KeyError, match=r"unknown step 'zz' \(known: a, b\)"):
        reg.get("zz")


def test_default_registry_has_the_built_in_steps() -> None:
    reg = default_registry()
    assert {"system_prompt", "cache"} <= set(reg.names())
    assert reg.get("system_prompt").phase == "before"


# ---- SystemPromptStep ----------------------------------------------------------------------------------------


CONVERSATION = [
    {"role": "system", "content": "client system"},
    {"role": "developer", "content": "client developer"},
    {"role": "user", "content": "hi"},
]


async def test_system_prompt_prepend_keeps_client_messages() -> None:
    ctx = make_ctx(CONVERSATION)
    await SystemPromptStep({"text": "Be terse."}).run(ctx)
    got = [(m.role, m.content) for m in ctx.request.messages]
    assert got == [("system", "Be terse."), *[(m["role"], m["content"]) for m in CONVERSATION]]


async def test_system_prompt_replace_drops_client_system_and_developer() -> None:
    ctx = make_ctx(CONVERSATION)
    await SystemPromptStep({"text": "Be terse.", "mode": "replace"}).run(ctx)
    assert [(m.role, m.content) for m in ctx.request.messages] == [("system", "Be terse."), ("user", "hi")]


async def test_system_prompt_does_not_mutate_original_request() -> None:
    ctx = make_ctx(CONVERSATION)
    original = ctx.request
    await SystemPromptStep({"text": "Be terse.", "mode": "replace"}).run(ctx)
    assert ctx.request is not original
    assert len(original.messages) == 3


def test_system_prompt_options_are_validated() -> None:
    with pytest.raises(ValueError):
        SystemPromptStep({"text": "x", "mode": "append"})
    with pytest.raises(ValueError):
        SystemPromptStep({})


# ---- Runtime ------------------------------------------------------------------------------------------------


def config(applications: list[dict[str, Any]] | None = None) -> PorticoConfig:
    return validate(
        {
            "models": [
                {"name": "chat-a", "deployments": [DEAD]},
                {"name": "emb", "type": "embedding", "deployments": [DEAD]},
            ],
            "applications": applications or [],
        }
    )


def app(*steps: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "helper", "model": "chat-a", "steps": list(steps)}]


def test_runtime_builds_application_pipeline() -> None:
    rt = Runtime(config(app({"use": "system_prompt", "text": "You are terse."})))
    pipeline, application = rt.pipeline_for("helper")
    assert application == "helper"
    assert pipeline.name == "helper"
    assert pipeline.step_names == ["system_prompt", "generate"]


def test_runtime_application_without_steps_is_generate_only() -> None:
    rt = Runtime(config([{"name": "bare", "model": "chat-a"}]))
    pipeline, application = rt.pipeline_for("bare")
    assert application == "bare"
    assert pipeline.step_names == ["generate"]
    assert pipeline is not rt.minimal


def test_runtime_plain_model_gets_shared_minimal_pipeline() -> None:
    rt = Runtime(config(app({"use": "system_prompt", "text": "x"})))
    pipeline, application = rt.pipeline_for("chat-a")
    assert application is None
    assert pipeline is rt.minimal
    assert pipeline.step_names == ["cache", "generate", "cache_write"]
    assert rt.pipeline_for("chat-a")[0] is pipeline


def test_runtime_minimal_pipeline_without_cache_is_generate_only() -> None:
    cfg = config(app({"use": "system_prompt", "text": "x"}))
    rt = Runtime(cfg.model_copy(update={"cache": cfg.cache.model_copy(update={"enabled": False})}))
    assert rt.minimal.step_names == ["generate"]


def test_application_cache_step_gets_its_closer_last() -> None:
    rt = Runtime(config(app({"use": "cache", "ttl_seconds": 5}, {"use": "system_prompt", "text": "x"})))
    assert rt.pipeline_for("helper")[0].step_names == ["cache", "system_prompt", "generate", "cache_write"]


def test_application_cache_step_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        Runtime(config(app({"use": "cache", "ttl_seconds": -1})))


def test_runtime_unknown_model_is_model_not_found() -> None:
    rt = Runtime(config())
    with pytest.raises(ModelNotFound) as exc:
        rt.pipeline_for("unknown")
    assert exc.value.status == 404
    assert exc.value.code == "model_not_found"
    assert exc.value.param == "model"
    assert "'unknown'" in exc.value.message


def test_runtime_embedding_model_is_invalid_request() -> None:
    rt = Runtime(config())
    with pytest.raises(InvalidRequest) as exc:
        rt.pipeline_for("emb")
    assert exc.value.status == 400
    assert exc.value.param == "model"
    assert "/v1/embeddings" in exc.value.message


def test_runtime_unknown_step_kind_names_application_and_index() -> None:
    cfg = config(app({"use": "system_prompt", "text": "x"}, {"use": "pii_redact"}))
    with pytest.raises(ValueError) as exc:
        Runtime(cfg)
    assert str(exc.value).startswith("applications 'helper' steps[1] (pii_redact): ")
    assert "unknown step 'pii_redact'" in str(exc.value)


def test_runtime_bad_step_options_name_application_and_index() -> None:
    with pytest.raises(ValueError, match=r"applications 'helper' steps\[0\] \(system_prompt\)"):
        Runtime(config(app({"use": "system_prompt", "mode": "prepend"})))


def test_runtime_model_names_lists_models_then_applications() -> None:
    rt = Runtime(config(app({"use": "system_prompt", "text": "x"})))
    assert rt.model_names() == [("chat-a", "chat"), ("emb", "embedding"), ("helper", "application")]


def custom_registry(log: list[str]) -> StepRegistry:
    """Step kinds for Runtime tests: ``mark`` records, ``answer`` short-circuits with the messages it sees."""

    def mark(options: dict[str, Any], services: Any) -> Step:
        label = options["label"]

        async def run(ctx: RequestContext) -> None:
            log.append(label)

        return step(label, run)

    def answer(options: dict[str, Any], services: Any) -> Step:
        async def run(ctx: RequestContext) -> None:
            seen = [(m.role, m.content) for m in ctx.request.messages]
            ctx.short_circuit("answer", response={"seen": seen})

        return step("answer", run)

    reg = default_registry()
    reg.register("mark", mark, phase="before")
    reg.register("post", mark, phase="after")
    reg.register("answer", answer, phase="before")
    return reg


def test_runtime_places_after_steps_after_generate() -> None:
    steps = [{"use": "post", "label": "audit"}, {"use": "mark", "label": "m1"}]
    rt = Runtime(config(app(*steps)), registry=custom_registry([]))
    assert rt.applications["helper"].step_names == ["m1", "generate", "audit"]


def test_runtime_parallel_group() -> None:
    group = {"use": "parallel", "steps": [{"use": "mark", "label": "p1"}, {"use": "mark", "label": "p2"}]}
    rt = Runtime(config(app({"use": "system_prompt", "text": "x"}, group)), registry=custom_registry([]))
    pipeline = rt.applications["helper"]
    assert pipeline.step_names == ["system_prompt", "p1", "p2", "generate"]
    assert isinstance(pipeline.stages[1], Parallel)


def test_runtime_parallel_group_of_mixed_phases_is_rejected() -> None:
    group = {"use": "parallel", "steps": [{"use": "mark", "label": "p1"}, {"use": "post", "label": "p2"}]}
    with pytest.raises(ValueError, match=r"applications 'helper' steps\[0\]: a parallel group must hold steps of one"):
        Runtime(config(app(group)), registry=custom_registry([]))


def test_runtime_parallel_group_step_without_use_is_rejected() -> None:
    group = {"use": "parallel", "steps": [{"use": "mark", "label": "p1"}, {"label": "p2"}]}
    with pytest.raises(ValueError, match=r"applications 'helper' steps\[0\]\.steps\[1\]: each step needs 'use'"):
        Runtime(config(app(group)), registry=custom_registry([]))


def test_runtime_parallel_group_non_mapping_entry_names_application() -> None:
    group = {"use": "parallel", "steps": ["system_prompt", {"use": "mark", "label": "p2"}]}
    with pytest.raises(ValueError, match=r"applications 'helper' steps\[0\]"):
        Runtime(config(app(group)), registry=custom_registry([]))


def test_runtime_application_pipeline_is_checked() -> None:
    class ReadsResponse(Step):
        name = "reads_response"
        reads: ClassVar[frozenset[str]] = frozenset({"response"})

        def __init__(self, options: dict[str, Any], services: Any) -> None:
            pass

        async def run(self, ctx: RequestContext) -> None:
            pass

    reg = default_registry()
    reg.register("reads_response", ReadsResponse, phase="before")
    with pytest.raises(PipelineError, match=r"applications 'helper': steps\[0\] \(reads_response\) reads"):
        Runtime(config(app({"use": "reads_response"})), registry=reg)


async def test_runtime_application_runs_system_prompt_before_later_steps() -> None:
    log: list[str] = []
    steps = [{"use": "mark", "label": "first"}, {"use": "system_prompt", "text": "Be terse."}, {"use": "answer"}]
    rt = Runtime(config(app(*steps)), registry=custom_registry(log))
    pipeline, _ = rt.pipeline_for("helper")
    ctx = await pipeline.run(make_ctx([{"role": "user", "content": "hi"}], model="helper"))
    assert log == ["first"]
    assert ctx.answered_by == "answer"
    assert ctx.response == {"seen": [("system", "Be terse."), ("user", "hi")]}
    assert [t.step for t in ctx.timings] == ["first", "system_prompt", "answer"]  # generate never ran
    assert ctx.attempts == []
