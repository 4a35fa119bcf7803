"""``feedback`` step: before a loop regenerates, show the model its failed answer and why it failed.

In ``loop: {until: output.checks.passed, steps: [{use: feedback}, {use: generate}, {use: output_checks, …}]}`` the
first iteration has no answer yet and the step does nothing; later ones append the previous answer (as the
assistant's turn) and a user turn naming the failed checks, so the next generation can correct itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options
from portico.pipeline.step import Step
from portico.protocol.chat import Message


class FeedbackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # {failed}: the failed checks' names, comma-separated.
    text: str = Field(
        default="Your previous answer failed these checks: {failed}. Write a new answer that passes them.",
        min_length=1,
    )


class FeedbackStep(Step):
    name = "feedback"
    reads = frozenset({"request"})  # and the answer and output_checks' note, when an earlier iteration left them
    writes = frozenset({"request"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.text = parse_options(FeedbackOptions, options).text

    async def run(self, ctx: RequestContext) -> None:
        note = ctx.state.get("trace.notes", {}).get("output_checks", {})
        failed = note.get("failed") if note.get("decision") == "fail" else None
        choices = (ctx.response or {}).get("choices") or []
        if not failed or not choices:
            return
        answer = (choices[0].get("message") or {}).get("content") or ""
        messages = [*ctx.request.messages, Message(role="assistant", content=answer),
                    Message(role="user", content=self.text.format(failed=", ".join(failed)))]  # fmt: skip
        ctx.request = ctx.request.model_copy(update={"messages": messages})
        ctx.note(self.name, failed=list(failed), messages=len(messages))
