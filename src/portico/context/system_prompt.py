"""``system_prompt`` step: an application's instructions, put in front of (or instead of) the client's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.chat import Message


class SystemPromptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    mode: Literal["prepend", "replace"] = "prepend"


class SystemPromptStep(Step):
    name = "system_prompt"
    reads = frozenset({"request"})
    writes = frozenset({"request"})

    def __init__(self, options: dict[str, Any], services: Any = None) -> None:
        self.options = SystemPromptOptions.model_validate(options)
        self._message = Message(role="system", content=self.options.text)

    async def run(self, ctx: RequestContext) -> None:
        messages = ctx.request.messages
        if self.options.mode == "replace":
            messages = [m for m in messages if m.role not in ("system", "developer")]
        ctx.request = ctx.request.model_copy(update={"messages": [self._message, *messages]})
