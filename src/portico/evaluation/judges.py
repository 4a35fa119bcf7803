"""LLM judges: any configured model (or application) grades answers.

Pointwise: a rubric and a 1..scale score, normalised to [0, 1]. Pairwise: two answers to the same question, asked
twice with the positions swapped (judges favour a position); a verdict counts only when both orders agree, and
disagreement is a tie, as in the MT-Bench paper (Zheng et al., 2023). Judges run at temperature 0.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from portico.evaluation.datasets import Item
from portico.evaluation.outcome import Outcome
from portico.evaluation.spec import PairwiseSpec, ScorerSpec

JudgeCall = Callable[[str, list[dict[str, Any]], int], Awaitable[str]]  # (model, messages, max_tokens) → reply
_SCORE = re.compile(r"(?:score|rating)\s*(?:[:=]|is)?\s*\[*\s*(\d+(?:\.\d+)?)", re.I)
_BRACKETED = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_VERDICT_SINGLE = re.compile(r"(?<!\[)\[\s*([ABC])\s*\](?!\])")  # [A]: what small models write instead
_MAX_REPLY = 600  # characters of a judge's reply kept with the result


def _question(item: Item) -> str:
    lines = []
    for m in item.messages or []:
        content = m.get("content")
        text = content if isinstance(content, str) else str(content)
        lines.append(text if m.get("role") == "user" and len(item.messages or []) == 1 else f"{m.get('role')}: {text}")
    return "\n".join(lines)


def _reference(item: Item) -> str:
    if item.expected is None:
        return ""
    exp = item.expected if isinstance(item.expected, str) else str(item.expected)
    return f"\n\n[Reference answer]\n{exp}"


def parse_score(reply: str, scale: int) -> float | None:
    for rx in (_BRACKETED, _SCORE):
        m = rx.search(reply)
        if m:
            v = float(m.group(1))
            if 1 <= v <= scale:
                return v
    return None


class PointwiseJudge:
    def __init__(self, spec: ScorerSpec, judge: JudgeCall | None) -> None:
        self.label = spec.label
        self.pass_at = spec.pass_at
        opts = spec.options
        self.model = opts.get("model")
        if not isinstance(self.model, str) or judge is None:
            raise ValueError(f"scorer '{self.label}': llm_judge needs 'model' (any configured model)")
        self.rubric = str(opts.get("rubric") or "Is the answer correct, complete and helpful?")
        self.scale = int(opts.get("scale", 5))
        self.max_tokens = int(opts.get("max_tokens", 96))  # the rating comes first: a short reply is enough
        if self.scale < 2:
            raise ValueError(f"scorer '{self.label}': scale must be at least 2")
        self.judge = judge

    def messages(self, item: Item, out: Outcome) -> list[dict[str, Any]]:
        system = (f"You are an impartial evaluator. Grade the answer against the rubric on a scale from 1 (worst) "
                  f"to {self.scale} (best). Reply with your rating as [[N]], then one short sentence "
                  "of reasons.")  # fmt: skip
        user = (f"[Rubric]\n{self.rubric}\n\n[Question]\n{_question(item)}{_reference(item)}\n\n"
                f"[Answer]\n{out.text}\n\nRating:")  # fmt: skip
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def score(self, item: Item, out: Outcome) -> tuple[float | None, dict[str, Any] | None]:
        reply = await self.judge(self.model, self.messages(item, out), self.max_tokens)  # type: ignore[arg-type]
        raw = parse_score(reply, self.scale)
        details = {"reply": reply[:_MAX_REPLY]}
        if raw is None:
            return None, {**details, "error": "no rating in the judge's reply"}
        return (raw - 1) / (self.scale - 1), {**details, "rating": raw}


def parse_verdict(reply: str) -> str | None:
    """'A', 'B' or 'tie' from an MT-Bench style reply ([[A]], [[B]], [[C]] for a tie; [A] when there is no [[…]]).
    A reply naming more than one verdict (an echo of the instructions, or a list) has none."""
    for rx in (_VERDICT, _VERDICT_SINGLE):
        found = set(rx.findall(reply))
        if found:
            if len(found) > 1:
                return None
            v = found.pop()
            return "tie" if v == "C" else v
    return None


class PairwiseJudge:
    def __init__(self, spec: PairwiseSpec, judge: JudgeCall) -> None:
        self.spec = spec
        self.label = spec.label
        self.judge = judge

    def messages(self, item: Item, first: str, second: str) -> list[dict[str, Any]]:
        system = ("Please act as an impartial judge and compare two AI assistants' answers to the user question. "
                  "Do not let the order or the length of the answers influence you. After a short explanation, "
                  'output your final verdict strictly as "[[A]]" if assistant A is better, "[[B]]" if assistant B is '
                  'better, and "[[C]]" for a tie.')  # fmt: skip
        user = (f"[Criteria]\n{self.spec.rubric}\n\n[User question]\n{_question(item)}{_reference(item)}\n\n"
                f"[The start of assistant A's answer]\n{first}\n[The end of assistant A's answer]\n\n"
                f"[The start of assistant B's answer]\n{second}\n[The end of assistant B's answer]\n\n"
                "Which assistant answered better? Give a short reason, then your verdict: [[A]], [[B]] or [[C]] "
                "for a tie.")  # fmt: skip
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def compare(self, item: Item, a: Outcome, b: Outcome) -> tuple[str, dict[str, Any]]:
        """(winner in a | b | tie, details). Both orders are asked; only an agreeing pair of verdicts wins."""
        n = self.spec.max_tokens
        r1 = await self.judge(self.spec.model, self.messages(item, a.text, b.text), n)
        r2 = await self.judge(self.spec.model, self.messages(item, b.text, a.text), n)
        v1, v2 = parse_verdict(r1), parse_verdict(r2)
        # In the swapped order 'A' is variant b: map both verdicts onto the variants.
        m1 = {"A": "a", "B": "b", "tie": "tie"}.get(v1 or "")
        m2 = {"A": "b", "B": "a", "tie": "tie"}.get(v2 or "")
        consistent = m1 is not None and m1 == m2
        winner = m1 if consistent else "tie"
        details = {"verdicts": [m1, m2], "consistent": consistent, "replies": [r1[:_MAX_REPLY], r2[:_MAX_REPLY]]}
        return winner or "tie", details
