"""Conditions of branches, loops and the ``condense`` step: CEL expressions over a read-only view of the request.

CEL (the policy language of Envoy and Kubernetes) is safe by construction: no side effects, no loops, no access to
anything but the values handed to it. The library is ``common-expression-language`` (Rust): measured against
``cel-python`` on the recipes' conditions (bench/results/cel.md) it compiles ~10x and evaluates ~20x faster with the
same answers, and returns plain Python values.

The view a condition sees is documented in ``FIELDS`` (README "Branches, loops and sub-pipelines"). It is built per
evaluation and only from the fields the expression names, so a condition costs microseconds and a pipeline
without constructs pays nothing. Field names are checked when the pipeline is built: a typo never reaches a
request. ``loop`` is a reserved word in CEL, so the innermost loop's count is ``iteration``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cel

from portico.pipeline.context import RequestContext
from portico.routing.context_length import estimate_tokens

LOOP_KEY = "flow.iterations"  # ctx.state: the iteration counts of the running loops, innermost last
# Guardrail steps whose decision other than "pass" counts as a finding (guardrails.findings).
GUARDRAILS = ("pii", "injection", "topics", "anomaly", "handoff", "output_checks")


def _notes(ctx: RequestContext, step: str) -> dict[str, Any]:
    return ctx.state.get("trace.notes", {}).get(step, {})


def _answer_text(ctx: RequestContext) -> str:
    choices = (ctx.response or {}).get("choices") or []
    if not choices:
        return ""
    return (choices[0].get("message") or {}).get("content") or ""


def _tokens_in(ctx: RequestContext) -> int:
    """The model's count once it answered, else the documented estimate (4 characters a token) of the prompt."""
    if ctx.usage and ctx.usage.get("prompt_tokens") is not None:
        return int(ctx.usage["prompt_tokens"])
    return estimate_tokens(ctx.request.messages)


def _findings(ctx: RequestContext) -> list[str]:
    notes = ctx.state.get("trace.notes", {})
    return [g for g in GUARDRAILS if notes.get(g, {}).get("decision") not in (None, "pass", "recovered")]


def _checks_passed(ctx: RequestContext) -> bool:
    return _notes(ctx, "output_checks").get("decision") in ("pass", "recovered")


@dataclass(frozen=True, slots=True)
class Field:
    cel_type: str  # documented type
    doc: str
    get: Callable[[RequestContext], Any]
    # Context fields (or "note:<step>" for a step's recorded decision) one of which an earlier step must write
    # for the value to mean anything; empty: always available.
    needs: frozenset[str] = frozenset()


_S = frozenset
# The condition view. Keys are dotted paths; a condition may also index into a map field (request.metadata.tier).
# fmt: off
FIELDS: dict[str, Field] = {
    "request.metadata": Field("map(string, string)", "the request's metadata object as the client sent it",
                              lambda c: dict(c.request.metadata or {})),
    "request.model": Field("string", "the model or application the client named", lambda c: c.model),
    "request.stream": Field("bool", "the client asked for a stream", lambda c: bool(c.request.stream)),
    "request.message_count": Field("int", "messages in the request (as the steps so far left them)",
                                   lambda c: len(c.request.messages)),
    "request.text": Field("string", "the query steps work on: the rewritten query, else the last user message",
                          lambda c: c.query_text()),
    "caller": Field("map(string, dyn)", "who calls: key (the API key's name), key_id", lambda c: dict(c.caller)),
    "application": Field("string", "the application's name", lambda c: c.application or ""),
    "intent.name": Field("string", "the intent route_intent chose (its best guess when not confident)",
                         lambda c: _notes(c, "route_intent").get("intent") or "", _S({"note:route_intent"})),
    "intent.confidence": Field("double", "route_intent's probability of that intent",
                               lambda c: float(_notes(c, "route_intent").get("confidence") or 0.0),
                               _S({"note:route_intent"})),
    "intent.decision": Field("string", "route_intent's decision: route | answer | clarify | default",
                             lambda c: _notes(c, "route_intent").get("decision") or "", _S({"note:route_intent"})),
    "route": Field("string", "the model a router chose for generate ('' when none did)",
                   lambda c: c.target_model or ""),
    "cache.status": Field("string", "hit | semantic-hit | miss | bypass ('' before any cache step)",
                          lambda c: c.headers.get("x-portico-cache", ""), _S({"note:cache", "note:semantic_cache"})),
    "guardrails.findings": Field("list(string)", "guardrail steps that did not simply pass (pii, injection, …)",
                                 _findings),
    "guardrails.decisions": Field("map(string, string)", "each guardrail step's decision (block, mask, pass, …)",
                                  lambda c: {g: str(d) for g in GUARDRAILS
                                             if (d := _notes(c, g).get("decision")) is not None}),
    "retrieval.count": Field("int", "chunks the last retrieve returned", lambda c: len(c.documents or []),
                             _S({"documents"})),
    "retrieval.top_score": Field("double", "the best chunk's score (0.0 when none)",
                                 lambda c: max((float(d.get("score") or 0.0) for d in c.documents or []), default=0.0),
                                 _S({"documents"})),
    "retrieval.scores": Field("list(double)", "every chunk's score, best first",
                              lambda c: [float(d.get("score") or 0.0) for d in c.documents or []], _S({"documents"})),
    "output.text": Field("string", "the answer's text ('' for a stream not yet read)", _answer_text,
                         _S({"response"})),
    "output.checks.passed": Field("bool", "the last output_checks passed", _checks_passed,
                                  _S({"note:output_checks"})),
    "output.checks.failed": Field("list(string)", "the checks the answer failed",
                                  lambda c: [] if _checks_passed(c) else list(_notes(c, "output_checks").get("failed")
                                                                              or []),
                                  _S({"note:output_checks"})),
    "output.checks.judge_score": Field("double", "the judge's score (0.0 without a judge)",
                                       lambda c: float(_notes(c, "output_checks").get("judge_score") or 0.0),
                                       _S({"note:output_checks"})),
    "tokens.input": Field("int", "prompt tokens: the model's count after generate, else an estimate",
                          _tokens_in),
    "tokens.output": Field("int", "completion tokens of the answer (0 before generate)",
                           lambda c: int((c.usage or {}).get("completion_tokens") or 0)),
    "iteration": Field("int", "the innermost running loop's iteration, from 1 (0 outside loops)",
                       lambda c: (c.state.get(LOOP_KEY) or [0])[-1]),
}
# fmt: on
_MAPS = {k for k, f in FIELDS.items() if f.cel_type.startswith("map")}
_ROOTS = {k.split(".", 1)[0] for k in FIELDS}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_PATHS = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)(\s*\()?")
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
# Literals, operators and type names (``type(x) == int``) are not fields.
_WORDS = {
    "true",
    "false",
    "null",
    "in",
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "type",
    "null_type",
    "dyn",
}


class ConditionError(ValueError):
    """A condition does not parse or names a field the view does not have."""


def referenced(text: str) -> set[str]:
    """The view fields an expression names (``request.metadata.tier`` → ``request.metadata``).

    CEL's own static analysis gives root names only, so dotted paths are read from the source: string literals are
    blanked first, names followed by ``(`` are functions (``size(x)``) or methods (``x.startsWith(``), and the
    variables bound by comprehension macros (the ``s`` in ``scores.exists(s, s > 0.5)``) are not fields."""
    src = _STRINGS.sub('""', text)
    bound = set(_BOUND.findall(src))
    out: set[str] = set()
    for m in _PATHS.finditer(src):
        parts = [p.strip() for p in m.group(1).split(".")]
        if m.group(2):  # a call: the last name is the function, the rest (if any) the receiver
            parts = parts[:-1]
        if not parts or parts[0] in _WORDS or parts[0] in bound:
            continue
        out.add(_field_of(parts, text))
    return out


def _field_of(parts: list[str], text: str) -> str:
    for n in range(len(parts), 0, -1):
        path = ".".join(parts[:n])
        if path in FIELDS:
            if n < len(parts) and path not in _MAPS:
                raise ConditionError(f"'{'.'.join(parts)}' in {text!r}: {path} is a {FIELDS[path].cel_type}")
            return path
    path = ".".join(parts)
    if parts[0] not in _ROOTS:
        hint = " ('loop' is reserved in CEL: use 'iteration')" if parts[0] == "loop" else ""
        raise ConditionError(f"unknown field '{path}' in {text!r}{hint}")
    known = ", ".join(k for k in FIELDS if k.split(".", 1)[0] == parts[0])
    raise ConditionError(f"unknown field '{path}' in {text!r} (known under {parts[0]}: {known})")


class Condition:
    """One compiled expression and the view fields it reads; ``evaluate`` gives (value, error)."""

    __slots__ = ("fields", "needs", "program", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ConditionError("a condition must be a non-empty CEL expression")
        self.text = text
        try:
            self.program = cel.compile(text)
        except ValueError as e:
            # "Failed to parse expression '…': ERROR: <input>:1:30: reserved identifier: loop\n| …\n| ^"
            first = str(e).splitlines()[0]
            why = first.split("ERROR: ", 1)[-1].replace("<input>:", "at ")
            hint = " ('loop' is reserved in CEL: use 'iteration')" if "reserved identifier: loop" in why else ""
            raise ConditionError(f"{text!r} does not parse: {why}{hint}") from None
        self.fields = tuple(sorted(referenced(text)))
        self.needs = [(f, FIELDS[f].needs) for f in self.fields if FIELDS[f].needs]

    def view(self, ctx: RequestContext) -> dict[str, Any]:
        """Nested maps of only the named fields (``{"output": {"checks": {"passed": True}}}``)."""
        out: dict[str, Any] = {}
        for path in self.fields:
            *heads, last = path.split(".")
            node = out
            for h in heads:
                node = node.setdefault(h, {})
            node[last] = FIELDS[path].get(ctx)
        return out

    def evaluate(self, ctx: RequestContext) -> tuple[bool, str | None]:
        """The condition's value; an evaluation error (a missing metadata key, a non-boolean result) counts as
        false and is returned so the span shows it. ``has(request.metadata.tier)`` tests for a key first."""
        try:
            value = self.program.execute(self.view(ctx))
        except Exception as e:  # the library raises several kinds; all mean "not true"
            return False, f"{type(e).__name__}: {e}"[:200]
        if not isinstance(value, bool):
            return False, f"not a boolean: {value!r}"[:200]
        return value, None

    def __repr__(self) -> str:
        return f"<condition {self.text!r}>"
