"""Provider prompt caching: Anthropic cache_control marks from the prompt_cache step, and pricing of cached and
cache-written tokens."""

from __future__ import annotations

from typing import Any

import pytest

from portico.cache.prompt_cache import PromptCacheOptions, PromptCacheStep, prompt_cache_step
from portico.config.schema import AnthropicDeployment, Price
from portico.gateway.pricing import cost_usd, resolve_price
from portico.gateway.providers.anthropic import translate as T
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest

LONG = "You are the support assistant of Example Corp. " * 200  # ~2,000 tokens of stable system prompt
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
DEP = AnthropicDeployment(provider="anthropic", model="claude-sonnet-4", api_key="sk")


async def marked(messages: list[dict[str, Any]], min_tokens: int = 1024, **kw: Any) -> dict[str, Any]:
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **kw})
    ctx = RequestContext(request=req, request_id="r", model="m")
    await PromptCacheStep(PromptCacheOptions(min_tokens=min_tokens)).run(ctx)
    return T.chat_body(ctx.request, DEP, stream=False)


def marks(body: dict[str, Any]) -> list[str]:
    out = [f"tools[{i}]" for i, t in enumerate(body.get("tools") or []) if "cache_control" in t]
    out += [f"system[{i}]" for i, b in enumerate(body.get("system") or []) if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list):
            out += [f"messages[{i}]" for b in m["content"] if "cache_control" in b]
    return out


async def test_long_system_prompt_and_history_are_marked() -> None:
    convo = [
        {"role": "system", "content": LONG},
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "Which order number?"},
        {"role": "user", "content": "A-1234"},
    ]
    body = await marked(convo, tools=TOOLS)
    # The tools alone are too short to cache; the system prompt crosses the minimum; the history before the
    # newest turn is marked so the next turn reads it from the cache.
    assert marks(body) == ["system[0]", "messages[1]"]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in str(body["messages"][-1])


async def test_short_prompts_are_not_marked_and_without_the_step_nothing_is() -> None:
    assert marks(await marked([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])) == []
    plain = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "hi"}]}
    )
    assert marks(T.chat_body(plain, DEP, stream=False)) == []


async def test_min_tokens_is_configurable() -> None:
    body = await marked([{"role": "system", "content": "Be brief. " * 30}, {"role": "user", "content": "hi"}], 50)
    assert marks(body) == ["system[0]"]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="min_tokens"):
        prompt_cache_step({"min_tokens": 0}, None)  # type: ignore[arg-type]


def test_cached_and_cache_written_tokens_are_priced_at_their_rates() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    usage = {"prompt_tokens": 1000, "completion_tokens": 100,
             "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300}}  # fmt: skip
    expected = (100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 100 * 15.0) / 1e6
    assert cost_usd(price, usage) == pytest.approx(expected)
    no_cache = {"prompt_tokens": 1000, "completion_tokens": 100}
    assert cost_usd(price, no_cache) == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6)


def test_claude_list_prices_include_the_cache_write_premium() -> None:
    p = resolve_price(None, "claude-sonnet-4-20250514", "anthropic")
    assert p is not None and p.cache_write == pytest.approx(3.75) and p.cached_input == pytest.approx(0.30)
    gpt = resolve_price(None, "gpt-4o-mini-2024-07-18", "openai")
    assert gpt is not None and gpt.cache_write is None
