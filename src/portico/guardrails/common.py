"""What every guardrail step shares: option parsing, decision counters, stock answers, message text edits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portico.protocol.chat import ChatCompletionRequest, Message, TextPart


class GuardMetrics:
    """``portico_guardrail_decisions_total{guardrail, decision}``: every guardrail decision is counted."""

    def __init__(self, metrics: Any) -> None:
        self.decisions = (
            metrics.counter("guardrail_decisions", "Guardrail decisions", ("guardrail", "decision"))
            if metrics is not None
            else None
        )

    def count(self, guardrail: str, decision: str) -> None:
        if self.decisions is not None:
            self.decisions.labels(guardrail, decision).inc()


def map_message_texts(req: ChatCompletionRequest, fn: Callable[[Message, str], str]) -> ChatCompletionRequest:
    """A copy of the request whose message texts went through ``fn(message, text)`` (other parts unchanged)."""
    messages: list[Message] = []
    changed = False
    for m in req.messages:
        if isinstance(m.content, str):
            new = fn(m, m.content)
            if new != m.content:
                m = m.model_copy(update={"content": new})
                changed = True
        elif m.content:
            parts = []
            for p in m.content:
                if isinstance(p, TextPart):
                    new = fn(m, p.text)
                    if new != p.text:
                        p = p.model_copy(update={"text": new})
                        changed = True
                parts.append(p)
            m = m.model_copy(update={"content": parts})
        messages.append(m)
    return req.model_copy(update={"messages": messages}) if changed else req


def answer_texts(response: dict[str, Any]) -> list[str]:
    return [((c.get("message") or {}).get("content") or "") for c in response.get("choices", [])]
