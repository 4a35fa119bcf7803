"""The ``prompt_cache`` step: ask the provider to cache the request's stable prefix.

Anthropic only caches what the request marks with ``cache_control``; this step tells the Anthropic translation
to mark the tools, the system prompt and the earlier turns once each prefix is long enough (``min_tokens``).
OpenAI and Gemini cache long prefixes on their own: there is nothing to mark, and their cached-token counts are
reported and priced either way (``usage.prompt_tokens_details.cached_tokens``, ``price.cached_input``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options
from portico.pipeline.services import Services
from portico.pipeline.step import Step


class PromptCacheOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_tokens: int = Field(default=1024, ge=1)


class PromptCacheStep(Step):
    name = "prompt_cache"
    reads = frozenset({"request"})
    writes = frozenset({"request"})

    def __init__(self, opts: PromptCacheOptions) -> None:
        self.flag = {"min_tokens": opts.min_tokens}

    async def run(self, ctx: RequestContext) -> None:
        ext = {**(ctx.request.portico or {}), "prompt_cache": self.flag}
        ctx.request = ctx.request.model_copy(update={"portico": ext})


def prompt_cache_step(options: dict[str, Any], services: Services) -> PromptCacheStep:
    return PromptCacheStep(parse_options(PromptCacheOptions, options))
