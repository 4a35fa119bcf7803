"""Branches, loops and calls (portico.flow): build-time errors with their paths, the read/write contract across
arms, condition evaluation on every field type, loop caps, nesting, early answers and the spans that show the path.
Steps are small test kinds registered next to the real ones; the config has HTTP deployments only (no model loads)."""

from __future__ import annotations

from typing import Any

import pytest

from portico.config.loader import ConfigError, validate
from portico.flow.conditions import FIELDS, LOOP_KEY, Condition, ConditionError, referenced
from portico.observability.spans import build_spans
from portico.pipeline import PipelineError, RequestContext, Step
from portico.pipeline.options import stock_answer
from portico.protocol.chat import ChatCompletionRequest
from portico.runtime import Runtime, default_registry

DEAD = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}


def make_ctx(metadata: dict[str, str] | None = None, text: str = "hi") -> RequestContext:
    req = ChatCompletionRequest.model_validate(
        {"model": "app", "messages": [{"role": "user", "content": text}], "metadata": metadata}
    )
    return RequestContext(request=req, request_id="rid-1", model="app", application="app", caller={"key": "alice"})


class Mark(Step):
    """Logs its label; ``writes`` what it is told to (so contracts can be tested); may answer or set scores."""

    name = "mark"

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.label = options.get("label", "mark")
        self.scores = options.get("scores")
        self.answer = options.get("answer")
        self.writes = frozenset(options.get("writes", []))  # type: ignore[misc]
        self.reads = frozenset(options.get("reads", []))  # type: ignore[misc]

    async def run(self, ctx: RequestContext) -> None:
        ctx.state.setdefault("log", []).append(self.label)
        if self.scores is not None:
            ctx.documents = [{"id": str(i), "score": s} for i, s in enumerate(self.scores)]
        if self.answer is not None:
            stock_answer(ctx, self.label, self.answer)


class Check(Step):
    """An output check stand-in: passes from the ``pass_at`` iteration of the innermost loop on."""

    name = "output_checks"

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.pass_at = options.get("pass_at", 1)

    async def run(self, ctx: RequestContext) -> None:
        i = (ctx.state.get(LOOP_KEY) or [0])[-1]
        ctx.note("output_checks", decision="pass" if i >= self.pass_at else "fail",
                 failed=[] if i >= self.pass_at else ["must_match"])  # fmt: skip


def registry() -> Any:
    reg = default_registry()
    reg.register("mark", Mark)
    reg.register("late", Mark, phase="after")
    reg.register("check", Check, phase="after")
    return reg


def runtime(steps: list[Any], pipelines: dict[str, Any] | None = None) -> Runtime:
    cfg = validate({
        "models": [{"name": "chat-a", "deployments": [DEAD]}, {"name": "chat-b", "deployments": [DEAD]},
                   {"name": "emb", "type": "embedding", "deployments": [DEAD]}],
        "applications": [{"name": "app", "model": "chat-a", "steps": steps}],
        "pipelines": pipelines or {},
        "cache": {"enabled": False},
    })  # fmt: skip
    return Runtime(cfg, registry())


def build_error(steps: list[Any], pipelines: dict[str, Any] | None = None) -> str:
    with pytest.raises((ValueError, PipelineError)) as e:
        runtime(steps, pipelines)
    return str(e.value)


async def run(steps: list[Any], ctx: RequestContext | None = None, **kw: Any) -> RequestContext:
    rt = runtime(steps, **kw)
    pipeline = rt.pipeline_for("app")[0]
    # The tests' pipelines hold no model call, so leave out the implicit generate (it would call DEAD).
    pipeline.stages = tuple(s for s in pipeline.stages if s.name != "generate")
    return await pipeline.run(ctx or make_ctx())


def mark(label: str, **kw: Any) -> dict[str, Any]:
    return {"use": "mark", "label": label, **kw}


def late(label: str) -> dict[str, Any]:
    """A step that runs after the model call (like output checks), so it may share a loop with ``check``."""
    return {"use": "late", "label": label}


TIERS = [{"branch": [
    {"when": 'request.metadata.tier == "gold"', "steps": [mark("gold")]},
    {"when": 'has(request.metadata.tier) && request.metadata.tier == "silver"', "steps": [mark("silver")]},
    {"else": [mark("standard")]},
]}]  # fmt: skip


# ---- the issue's shape and branch semantics ------------------------------------------------------------------


async def test_issue_shape_builds_and_runs() -> None:
    steps = [
        {"branch": [
            {"when": 'request.metadata.tier == "gold"',
             "steps": [{"use": "system_prompt", "text": "You are the gold desk."}]},
            {"else": [{"use": "system_prompt", "text": "You are the standard desk."}]},
        ]},
        {"loop": {"until": "output.checks.passed", "max_iterations": 3,
                  "steps": [{"use": "generate"}, {"use": "check", "pass_at": 2}]}},
        {"call": "shared"},
    ]  # fmt: skip
    rt = runtime(steps, {"shared": [mark("shared")]})
    p = rt.pipeline_for("app")[0]
    assert [s.name for s in p.stages] == ["branch steps[0]", "loop steps[1]", "call shared"]  # no implicit generate
    gold = make_ctx({"tier": "gold"})
    await p.stages[0].run(gold)
    assert gold.request.messages[0].content == "You are the gold desk."
    plain = make_ctx()
    await p.stages[0].run(plain)  # tier missing: the first condition errors (false), the else arm runs
    assert plain.request.messages[0].content == "You are the standard desk."


@pytest.mark.parametrize(("metadata", "taken"), [({"tier": "gold"}, "gold"), ({"tier": "silver"}, "silver"),
                                                 ({"tier": "bronze"}, "standard"), (None, "standard")])  # fmt: skip
async def test_first_true_arm_runs_else_otherwise(metadata: dict[str, str] | None, taken: str) -> None:
    ctx = await run(TIERS, make_ctx(metadata))
    assert ctx.state["log"] == [taken]


async def test_branch_without_else_may_run_nothing_and_says_so() -> None:
    ctx = await run([{"branch": [{"when": "request.stream", "steps": [mark("s")]}]}, mark("after")])
    assert ctx.state["log"] == ["after"]
    span = next(t for t in ctx.timings if t.step == "steps[0] (no arm)")
    assert span.attributes["portico.flow.value"] is False
    assert span.attributes["portico.flow.false"] == ["steps[0].when[0]"]


async def test_early_answer_inside_an_arm_ends_the_request() -> None:
    steps = [{"branch": [{"when": "true", "steps": [mark("a", answer="stop"), mark("b")]}]}, mark("c")]
    ctx = await run(steps)
    assert ctx.state["log"] == ["a"]
    assert ctx.answered_by == "a"
    assert ctx.response["choices"][0]["message"]["content"] == "stop"


# ---- loops ------------------------------------------------------------------------------------------------------


async def test_loop_runs_until_the_condition_and_counts_iterations() -> None:
    steps = [{"loop": {"until": "output.checks.passed", "max_iterations": 5,
                       "steps": [late("gen"), {"use": "check", "pass_at": 3}]}}]  # fmt: skip
    ctx = await run(steps)
    assert ctx.state["log"] == ["gen", "gen", "gen"]
    iters = [t for t in ctx.timings if "iteration" in t.step]
    assert [t.attributes["portico.flow.value"] for t in iters] == [False, False, True]
    assert [t.attributes["portico.flow.iteration"] for t in iters] == [1, 2, 3]
    assert ctx.state[LOOP_KEY] == []  # popped: iteration is 0 again after the loop


async def test_loop_stops_at_max_iterations_and_marks_exhaustion() -> None:
    steps = [{"loop": {"until": "output.checks.passed", "max_iterations": 2,
                       "steps": [late("gen"), {"use": "check", "pass_at": 9}]}}, late("fallback")]  # fmt: skip
    ctx = await run(steps)
    assert ctx.state["log"] == ["gen", "gen", "fallback"]
    last = [t for t in ctx.timings if "iteration" in t.step][-1]
    assert last.attributes["portico.flow.exhausted"] is True


async def test_iteration_is_visible_to_conditions_inside_the_body() -> None:
    steps = [{"loop": {"max_iterations": 3, "steps": [
        {"branch": [{"when": "iteration == 2", "steps": [mark("second")]}, {"else": [mark("other")]}]}]}}]  # fmt: skip
    ctx = await run(steps)
    assert ctx.state["log"] == ["other", "second", "other"]


async def test_early_answer_inside_a_loop_ends_it() -> None:
    steps = [{"loop": {"until": "false", "max_iterations": 5, "steps": [mark("x", answer="done")]}}, mark("after")]
    ctx = await run(steps)
    assert ctx.state["log"] == ["x"]
    assert ctx.answered_by == "x"


@pytest.mark.parametrize("n", [0, 11])
def test_loop_bounds_are_checked(n: int) -> None:
    msg = build_error([{"loop": {"until": "true", "max_iterations": n, "steps": [mark("a")]}}])
    assert "applications 'app' steps[0].loop: max_iterations" in msg
    if n > 10:
        assert "global cap on loops is 10" in msg


def test_loop_needs_max_iterations() -> None:
    assert "steps[0].loop: max_iterations: Field required" in build_error([{"loop": {"steps": [mark("a")]}}])


# ---- calls ------------------------------------------------------------------------------------------------------


async def test_call_runs_a_named_pipeline_in_place_and_nests() -> None:
    pipes = {"rag": [mark("retrieve"), {"call": "pack"}], "pack": [mark("pack")]}
    ctx = await run([mark("first"), {"call": "rag"}, mark("last")], pipelines=pipes)
    assert ctx.state["log"] == ["first", "retrieve", "pack", "last"]
    assert {"call rag", "call pack"} <= {t.step for t in ctx.timings}


def test_recursion_between_named_pipelines_is_refused() -> None:
    msg = build_error([{"call": "a"}], {"a": [{"call": "b"}], "b": [mark("x"), {"call": "a"}]})
    assert "applications 'app' pipelines.b.steps[1]: call: pipelines call each other in a cycle (a → b → a)" in msg


def test_unknown_pipeline_is_refused() -> None:
    assert "steps[0]: call: unknown pipeline 'nope' (pipelines: none)" in build_error([{"call": "nope"}])


# ---- build-time errors ----------------------------------------------------------------------------------------


def test_condition_that_does_not_parse_names_its_path() -> None:
    msg = build_error([{"branch": [{"when": "true", "steps": []}, {"when": "output.text ==", "steps": []}]}])
    assert "applications 'app' steps[0].when[1]: 'output.text ==' does not parse" in msg


def test_unknown_field_names_its_path_and_the_field() -> None:
    msg = build_error([mark("a"), {"branch": [{"when": "retrieval.best > 0.5", "steps": []}]}])
    assert "applications 'app' steps[1].when[0]: unknown field 'retrieval.best'" in msg
    assert "retrieval.top_score" in msg  # the fields that exist under that root


def test_loop_is_a_reserved_word_with_a_hint() -> None:
    msg = build_error([{"loop": {"until": "loop.iteration > 2", "max_iterations": 3, "steps": [mark("a")]}}])
    assert "steps[0].loop.until" in msg and "use 'iteration'" in msg


def test_field_below_a_scalar_is_refused() -> None:
    assert "output.text is a string" in build_error([{"branch": [{"when": "output.text.size > 1", "steps": []}]}])


def test_condition_reading_what_no_earlier_step_writes() -> None:
    msg = build_error([{"branch": [{"when": "retrieval.top_score < 0.5", "steps": [mark("a")]}]}])
    assert "applications 'app': steps[0].when[0]: condition 'retrieval.top_score < 0.5' reads " in msg
    assert "'retrieval.top_score', which needs documents to run earlier" in msg


def test_field_is_available_after_a_branch_only_if_every_arm_writes_it() -> None:
    docs = mark("r", writes=["documents"])
    reader = mark("reader", reads=["documents"])
    ok = [{"branch": [{"when": "true", "steps": [docs]}, {"else": [docs]}]}, reader]
    runtime(ok)  # every arm (else included) writes documents
    one_arm = [{"branch": [{"when": "true", "steps": [docs]}, {"else": [mark("n")]}]}, reader]
    assert "steps[1] (mark) reads ['documents'] which no earlier step writes" in build_error(one_arm)
    no_else = [{"branch": [{"when": "true", "steps": [docs]}]}, reader]
    assert "steps[1] (mark) reads ['documents']" in build_error(no_else)


def test_reads_inside_an_arm_are_checked_with_their_path() -> None:
    msg = build_error([{"branch": [{"when": "true", "steps": [mark("x", reads=["documents"])]}]}])
    assert "applications 'app': steps[0].when[0].steps[0] (mark) reads ['documents']" in msg


def test_parallel_groups_may_hold_branches_and_conflicts_are_found() -> None:
    arm = {"branch": [{"when": "true", "steps": [mark("x", writes=["documents"])]}]}
    rt = runtime([{"use": "parallel", "steps": [arm, mark("y")]}])
    assert rt.pipeline_for("app")[0].stages[0].steps[0].name == "branch steps[0].steps[0]"
    clash = [{"use": "parallel", "steps": [arm, mark("y", writes=["documents"])]}]
    assert "both write 'documents'" in build_error(clash)


def test_loops_may_not_run_in_parallel_groups() -> None:
    loop = {"loop": {"max_iterations": 2, "steps": [mark("x")]}}
    nested = {"branch": [{"when": "true", "steps": [loop]}]}
    msg = build_error([{"use": "parallel", "steps": [mark("y"), nested]}])
    assert "steps[0].steps[1]: a loop cannot run inside a parallel group" in msg


def test_explicit_generate_must_be_on_every_path() -> None:
    steps = [{"branch": [{"when": "true", "steps": [{"use": "generate"}]}, {"else": [mark("n")]}]}]
    assert "not every path through the steps writes ['response']" in build_error(steps)
    runtime([{"branch": [{"when": "true", "steps": [{"use": "generate", "model": "chat-b"}]},
                         {"else": [{"use": "generate"}]}]}])  # fmt: skip


def test_generate_model_must_exist() -> None:
    assert "(generate) model: 'nope' is not a configured chat model" in build_error(
        [{"use": "generate", "model": "nope"}]
    )


def test_construct_mixing_phases_without_explicit_generate_is_refused() -> None:
    msg = build_error([{"branch": [{"when": "true", "steps": [mark("a"), {"use": "late"}]}]}])
    assert "steps[0]: holds steps that run before the model call and steps that check its answer" in msg


def test_implicit_generate_keeps_todays_order() -> None:
    rt = runtime([{"use": "late"}, {"branch": [{"when": "true", "steps": [mark("a")]}]}])
    assert [s.name for s in rt.pipeline_for("app")[0].stages] == ["branch steps[1]", "generate", "mark"]


def test_malformed_constructs() -> None:
    assert "'branch' takes no sibling keys" in build_error([{"branch": [], "use": "mark"}])
    assert "the else arm must come last" in build_error([{"branch": [{"else": []}, {"when": "true", "steps": []}]}])
    assert "steps[0].when[0]: steps: Field required" in build_error([{"branch": [{"when": "true"}]}])
    with pytest.raises(ConfigError, match="each step needs 'use'"):
        runtime([{"label": "x"}])


# ---- conditions over the view ---------------------------------------------------------------------------------


def test_referenced_fields() -> None:
    assert referenced('request.metadata.tier == "gold" && size(output.text) > 2') == {"request.metadata", "output.text"}
    assert referenced("retrieval.scores.exists(s, s > 0.5) && iteration < 3") == {"retrieval.scores", "iteration"}
    assert referenced('output.text.contains("a.b c") || type(tokens.input) == int') == {"output.text", "tokens.input"}
    with pytest.raises(ConditionError):
        referenced("nope == 1")


def full_ctx() -> RequestContext:
    ctx = make_ctx({"tier": "gold"}, text="x" * 400)
    ctx.target_model = "chat-b"
    ctx.headers["x-portico-cache"] = "miss"
    ctx.documents = [{"id": "a", "score": 0.8}, {"id": "b", "score": 0.3}]
    ctx.response = {"choices": [{"message": {"role": "assistant", "content": "Answer: 42"}}]}
    ctx.usage = {"prompt_tokens": 120, "completion_tokens": 7}
    ctx.note("route_intent", intent="billing", confidence=0.91, decision="route")
    ctx.note("pii", decision="mask")
    ctx.note("injection", decision="pass")
    ctx.note("output_checks", decision="fail", failed=["must_match"], judge_score=0.4)
    ctx.state[LOOP_KEY] = [2]
    return ctx


@pytest.mark.parametrize(("expr", "expected"), [
    ('request.metadata.tier == "gold"', True),  # map(string, string)
    ('request.model == "app" && !request.stream && request.message_count == 1', True),  # string, bool, int
    ('request.text.startsWith("xxx")', True),
    ('caller.key == "alice" && application == "app"', True),  # map(string, dyn), string
    ('intent.name == "billing" && intent.confidence > 0.9 && intent.decision == "route"', True),  # double
    ('route == "chat-b"', True),
    ('cache.status == "miss"', True),
    ('guardrails.findings == ["pii", "output_checks"]', True),  # list(string)
    ('guardrails.decisions.injection == "pass"', True),
    ("retrieval.count == 2 && retrieval.top_score == 0.8", True),  # int, double
    ("retrieval.scores.exists(s, s < 0.5)", True),  # list(double)
    ('output.text.contains("42")', True),
    ('!output.checks.passed && "must_match" in output.checks.failed', True),  # bool, list
    ("output.checks.judge_score < 0.5", True),
    ("tokens.input == 120 && tokens.output == 7", True),
    ("iteration == 2", True),
])  # fmt: skip
def test_condition_evaluation_per_field_type(expr: str, expected: bool) -> None:
    assert Condition(expr).evaluate(full_ctx()) == (expected, None)


def test_every_documented_field_evaluates_on_an_empty_context() -> None:
    ctx = make_ctx()
    for field in FIELDS.values():
        field.get(ctx)  # no step ran: every getter still answers (defaults), none raises
    assert Condition("tokens.input > 100").evaluate(make_ctx(text="y" * 800)) == (True, None)  # the estimate
    assert Condition("iteration == 0").evaluate(ctx) == (True, None)


def test_evaluation_errors_are_false_and_reported() -> None:
    value, error = Condition('request.metadata.vip == "x"').evaluate(make_ctx({}))
    assert value is False and error
    value, error = Condition("retrieval.count").evaluate(make_ctx())
    assert value is False and error.startswith("not a boolean")


def test_view_holds_only_the_named_fields() -> None:
    assert Condition('cache.status == "hit"').view(full_ctx()) == {"cache": {"status": "miss"}}


# ---- traces show the path ---------------------------------------------------------------------------------------


async def test_spans_show_the_arm_taken_with_its_condition() -> None:
    ctx = await run(TIERS, make_ctx({"tier": "silver"}))
    spans = build_spans("chat app", {}, False, ctx.timings, [], "chat", ctx.started, ctx.started + 1)
    by_name = {s.name: s for s in spans}
    arm = by_name["steps[0].when[1]"]
    assert arm.attributes["portico.flow.condition"].endswith('request.metadata.tier == "silver"')
    assert arm.attributes["portico.flow.value"] is True
    assert arm.attributes["portico.flow.false"] == ["steps[0].when[0]"]
    assert "branch steps[0]" in by_name and "mark" in by_name
    assert by_name["branch steps[0]"].start_ms <= arm.start_ms <= by_name["mark"].start_ms


# ---- feedback and `portico pipeline show` ---------------------------------------------------------------------


async def test_feedback_appends_the_failed_answer_and_the_checks() -> None:
    from portico.flow.feedback import FeedbackStep

    step = FeedbackStep({"text": "Failed: {failed}."}, None)
    ctx = make_ctx()
    await step.run(ctx)  # first iteration: nothing to show yet
    assert len(ctx.request.messages) == 1
    ctx.response = {"choices": [{"message": {"role": "assistant", "content": "draft"}}]}
    ctx.note("output_checks", decision="fail", failed=["must_match", "pii"])
    await step.run(ctx)
    assert [(m.role, m.content) for m in ctx.request.messages[1:]] == [
        ("assistant", "draft"), ("user", "Failed: must_match, pii.")]  # fmt: skip
    ctx.note("output_checks", decision="pass")  # the old 'failed' stays in the note; a pass is a pass
    await step.run(ctx)
    assert len(ctx.request.messages) == 3
    assert Condition("output.checks.failed == []").evaluate(ctx) == (True, None)


def test_pipeline_show_prints_the_tree(tmp_path: Any) -> None:
    import yaml
    from typer.testing import CliRunner

    from portico.cli import app as cli

    cfg = {
        "state_dir": str(tmp_path / "state"),
        "models": [{"name": "chat-a", "deployments": [DEAD]}, {"name": "chat-b", "deployments": [DEAD]}],
        "pipelines": {"shared": [{"use": "system_prompt", "text": "ctx"}]},
        "applications": [{"name": "app", "model": "chat-a", "steps": [
            {"branch": [{"when": 'request.metadata.tier == "gold"', "steps": [{"use": "generate", "model": "chat-b"}]},
                        {"else": [{"call": "shared"}, {"use": "generate"}]}]},
            {"loop": {"until": "output.checks.passed", "max_iterations": 2, "steps": [
                {"use": "feedback"}, {"use": "generate"}, {"use": "output_checks", "on_fail": {"record": True}}]}},
        ]}],
    }  # fmt: skip
    path = tmp_path / "portico.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = CliRunner().invoke(cli, ["pipeline", "show", "app", "--config", str(path)], terminal_width=120)
    assert out.exit_code == 0, out.output
    lines = [line.rstrip() for line in out.output.splitlines()]
    assert lines[0] == "app → chat-a (version 1)"
    assert '│   ├── when[0] request.metadata.tier == "gold"' in lines
    assert "│   │   └── generate (model chat-b)" in lines
    assert "│       ├── call shared" in lines
    assert "└── loop steps[1] until output.checks.passed, at most 2" in lines
    cfg["applications"][0]["steps"][1]["loop"]["until"] = "output.passed"
    path.write_text(yaml.safe_dump(cfg))
    out = CliRunner().invoke(cli, ["pipeline", "show", "app", "--config", str(path)], terminal_width=200)
    assert out.exit_code == 2
    assert "steps[1].loop.until: unknown field 'output.passed'" in out.output
