"""``route_context``: an oversized prompt moves to the larger-context model, or is truncated by policy."""

from __future__ import annotations

from typing import Any

import pytest

from portico.config.loader import validate
from portico.pipeline import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import InvalidRequest
from portico.routing.context_length import context_windows, estimate_tokens
from portico.runtime import default_registry

DEAD = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}


class Services:
    def __init__(self) -> None:
        self.cfg = validate(
            {
                "models": [
                    {"name": "small", "deployments": [{**DEAD, "context_window": 1000}]},
                    {"name": "big", "deployments": [{**DEAD, "context_window": 10000}]},
                    {"name": "huge", "deployments": [{**DEAD, "context_window": 100000}]},
                    {"name": "unknown", "deployments": [DEAD]},
                ]
            }
        )


def build(**options: Any):
    return default_registry().get("route_context").factory({"model": "small", **options}, Services())


def ctx_for(messages: list[dict[str, Any]], **extra: Any) -> RequestContext:
    req = ChatCompletionRequest.model_validate({"model": "app", "messages": messages, **extra})
    return RequestContext(request=req, request_id="r", model="app", application="app")


def user(chars: int, tag: str = "u") -> dict[str, str]:
    return {"role": "user", "content": tag * chars}


def test_windows_and_estimate():
    assert context_windows(Services().cfg) == {"small": 1000, "big": 10000, "huge": 100000}
    ctx = ctx_for([user(400)])
    assert estimate_tokens(ctx.request.messages) == 104


async def test_fitting_prompt_stays():
    ctx = ctx_for([user(400)])
    await build(larger=["big"]).run(ctx)
    assert ctx.target_model is None
    assert ctx.state["trace.notes"]["route_context"]["decision"] == "fits"


async def test_oversized_prompt_moves_to_the_first_larger_model_that_fits():
    ctx = ctx_for([user(8000)])  # ~2004 tokens + 512 reserved > 1000
    await build(larger=["big", "huge"]).run(ctx)
    assert ctx.target_model == "big"
    note = ctx.state["trace.notes"]["route_context"]
    assert note["decision"] == "route" and note["tokens_needed"] > 1000 and note["window"] == 1000
    ctx = ctx_for([user(80000)])
    await build(larger=["big", "huge"]).run(ctx)
    assert ctx.target_model == "huge"


async def test_max_tokens_counts_and_target_model_from_an_earlier_step_is_checked():
    ctx = ctx_for([user(400)], max_tokens=5000)
    await build(larger=["big"]).run(ctx)
    assert ctx.target_model == "big"
    ctx = ctx_for([user(8000)])
    ctx.target_model = "big"  # set by a router before
    await build(larger=["huge"]).run(ctx)
    assert ctx.target_model == "big"


async def test_route_only_fails_when_nothing_fits():
    with pytest.raises(InvalidRequest) as e:
        await build(larger=["big"], on_overflow="route").run(ctx_for([user(80000)]))
    assert e.value.code == "context_length_exceeded"


async def test_truncate_drops_oldest_turns_and_keeps_system_and_last_user():
    msgs = [
        {"role": "system", "content": "be brief"},
        user(2000, "a"),
        {"role": "assistant", "content": "b" * 2000},
        user(400, "c"),
    ]
    ctx = ctx_for(msgs)
    await build(on_overflow="truncate").run(ctx)
    kept = ctx.request.messages
    assert [m.role for m in kept] == ["system", "user"] and kept[-1].text() == "c" * 400
    note = ctx.state["trace.notes"]["route_context"]
    assert note["decision"] == "truncate" and note["dropped"] == 2 and note["tokens_after"] <= 1000


async def test_truncate_cuts_a_single_long_message_from_its_start():
    ctx = ctx_for([{"role": "user", "content": "x" * 3000 + "THE QUESTION"}])
    await build(on_overflow="route_then_truncate").run(ctx)
    text = ctx.request.messages[-1].text()
    assert text.endswith("THE QUESTION") and len(text) < 3012
    assert ctx.state["trace.notes"]["route_context"]["tokens_after"] <= 1000


def test_unknown_models_fail_at_build_time():
    with pytest.raises(ValueError, match="not configured"):
        build(larger=["nope"])


@pytest.fixture
async def local_gateway():
    """A real gateway with the packaged SmolLM2 (llama.cpp) as 'tiny' and an HTTP model as 'wide'."""
    from portico.gateway.gateway import Gateway

    cfg = validate(
        {
            "models": [
                {"name": "tiny", "deployments": [{"provider": "local", "n_ctx": 512, "n_threads": 1}]},
                {"name": "wide", "deployments": [{**DEAD, "context_window": 100000}]},
            ]
        }
    )
    gw = Gateway(cfg)
    await gw.start()
    yield cfg, gw
    await gw.close()


class LocalServices:
    def __init__(self, cfg: Any, gateway: Any) -> None:
        self.cfg, self.gateway = cfg, gateway


def local_context_step(cfg: Any, gateway: Any, options: dict[str, Any]) -> Any:
    return default_registry().get("route_context").factory(options, LocalServices(cfg, gateway))


@pytest.mark.slow
async def test_local_model_is_counted_with_its_own_tokenizer(local_gateway):
    cfg, gw = local_gateway
    step = local_context_step(cfg, gw, {"model": "tiny", "larger": ["wide"], "reserve_output": 100})
    (backend,) = [h.backend for h in gw.models["tiny"].handles]
    # "7 7 7 …": about one token per two characters, so the 4-characters-a-token estimate says it fits
    # (375 + 4 + 100 ≤ 512) while the real tokenizer says it does not.
    text = "7 " * 750
    assert estimate_tokens(ctx_for([{"role": "user", "content": text}]).request.messages) + 100 <= 512
    ctx = ctx_for([{"role": "user", "content": text}])
    await step.run(ctx)
    note = ctx.state["trace.notes"]["route_context"]
    exact = backend.count_tokens([{"role": "user", "content": text}])
    assert note["tokenizer"] == "llama.cpp" and note["tokens_needed"] == exact + 100 > 512
    assert note["decision"] == "route" and ctx.target_model == "wide" and note["tokenizer_target"] == "estimate"
    # A short prompt fits, counted by the same tokenizer (the chat template's framing included).
    ctx = ctx_for([{"role": "user", "content": "Hello there"}])
    await step.run(ctx)
    note = ctx.state["trace.notes"]["route_context"]
    assert note["decision"] == "fits" and note["tokenizer"] == "llama.cpp"
    assert note["tokens_needed"] - 100 == backend.count_tokens([{"role": "user", "content": "Hello there"}]) > 2


@pytest.mark.slow
async def test_truncation_under_a_tokenizer_fits_the_window(local_gateway):
    cfg, gw = local_gateway
    step = local_context_step(cfg, gw, {"model": "tiny", "on_overflow": "truncate", "reserve_output": 100})
    ctx = ctx_for([{"role": "user", "content": "7 " * 2000 + "THE QUESTION"}])
    await step.run(ctx)
    note = ctx.state["trace.notes"]["route_context"]
    assert note["decision"] == "truncate" and note["tokenizer"] == "llama.cpp"
    assert 400 <= note["tokens_after"] <= 512  # cut to fit, not far below the window
    assert ctx.request.messages[-1].text().endswith("THE QUESTION")


async def test_a_local_model_not_loaded_yet_falls_back_to_the_estimate():
    from portico.gateway.gateway import Gateway

    cfg = validate({"models": [{"name": "tiny", "deployments": [{"provider": "local", "n_ctx": 512}]}]})
    step = local_context_step(cfg, Gateway(cfg), {"model": "tiny"})
    ctx = ctx_for([user(40)])
    await step.run(ctx)
    note = ctx.state["trace.notes"]["route_context"]
    assert note["tokenizer"] == "estimate" and note["tokens_needed"] == 10 + 4 + 512
