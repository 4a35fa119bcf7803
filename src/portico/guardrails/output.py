"""The ``output_checks`` step: check the answer, and apply the application's failure policy when a check fails.

Options (in an application's ``steps:``; it runs after the model call)::

    - use: output_checks
      empty: true                    # an answer with no text and no tool call fails
      json: auto                     # auto: validate against the request's response_format (json_object /
                                     # json_schema, with jsonschema); false: never
      must_match: "^Answer:"         # regex the answer must contain
      forbid: ["(?i)as an ai"]       # regexes that must not appear
      toxicity: 0.8                  # fail when the toxicity classifier scores at least this (null: off)
      pii: [EMAIL_ADDRESS, CREDIT_CARD, US_SSN, IBAN_CODE, API_KEY]   # types that must not appear (regex tier)
      judge: {model: gpt-4o-mini, prompt: "Rate … 0 to 10", min_score: 0.6}   # an AI judge (any model)
      keywords:                      # brand / competitor monitors
        - {words: [AcmeCorp, Globex], action: block}    # block: the answer fails
        - {words: [refund, lawsuit], action: review}   # review: counted, noted, x-portico-review header
      on_fail:
        best_of: 3                   # first: 3 answers in parallel, the best passing one (judge score) wins
        retry: 2                     # the same model again, up to N times
        fallback: [other-model]      # then each of these models once
        handoff: false               # then hand the conversation to a human (see the handoff step)…
        answer: "Sorry, I can't answer that right now."   # …or answer with this; neither: 502
        record: false                # true: only note the failure; the pipeline decides (a loop's
                                     # until: output.checks.passed, then a fallback branch)
      hold_back: all                 # streaming: all | <characters> | 0 (see below)

Streaming trade-off (``hold_back``): ``all`` buffers the whole answer, so every check and the whole failure
policy apply, at the cost of time to first token (the client sees nothing until the answer is complete and
checked). A number N streams with a window of N characters held back: pattern, keyword and PII checks see text
before the client does and a failure cuts the stream (what was already sent stays sent), while whole-answer
checks (empty, JSON) can only be recorded. ``0`` streams untouched and records the checks at the end.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.guardrails.common import GuardMetrics, answer_texts
from portico.guardrails.handoffs import HandoffStore, dump_messages
from portico.guardrails.pii.detector import merge
from portico.guardrails.pii.masking import PLACEHOLDER
from portico.guardrails.pii.recognizers import regex_hits
from portico.guardrails.toxicity import ToxicityClassifier
from portico.pipeline.context import TOOL_EVENTS, TOOL_RUNNER, RequestContext
from portico.pipeline.options import parse_options, stock_answer
from portico.pipeline.services import Services
from portico.pipeline.step import Step
from portico.protocol.assemble import assemble
from portico.protocol.chat import ChatCompletionRequest, chunk_dict, delta_choice
from portico.protocol.errors import UpstreamError


class KeywordRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    words: list[str] = Field(min_length=1)
    action: Literal["block", "review"] = "review"


class JudgeOptions(BaseModel):
    """An AI judge: any configured chat model scores the answer; below ``min_score`` the answer fails."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str = (
        "Rate the assistant's answer to the user's question for helpfulness, correctness and politeness. "
        "Reply with a single number from 0 (bad) to 10 (excellent)."
    )
    min_score: float = Field(default=0.5, ge=0, le=1)
    scale: float = Field(default=10.0, gt=0)  # the prompt's top score; scores are divided by it


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def judge_score(text: str, scale: float = 10.0) -> float | None:
    """The first number in the judge's reply divided by the prompt's scale, clipped to 0-1."""
    m = _NUMBER.search(text or "")
    if m is None:
        return None
    return min(max(float(m.group()) / scale, 0.0), 1.0)


class FailurePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    best_of: int = Field(default=0, ge=0, le=8)
    retry: int = Field(default=0, ge=0, le=5)
    fallback: list[str] = Field(default_factory=list)
    handoff: bool = False
    answer: str | None = None
    handoff_answer: str = "I'm handing you over to a colleague, who will answer here shortly."
    record: bool = False  # note the failure and go on (the application's loop or branch acts on it)


class OutputOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    empty: bool = True
    json_: Literal["auto", False] = Field(default="auto", alias="json")
    must_match: str | None = None
    forbid: list[str] = Field(default_factory=list)
    toxicity: float | None = Field(default=None, ge=0, le=1)
    toxicity_weights: str | None = None
    pii: list[str] = Field(default_factory=list)
    keywords: list[KeywordRule] = Field(default_factory=list)
    judge: JudgeOptions | None = None
    on_fail: FailurePolicy = Field(default_factory=FailurePolicy)
    hold_back: Literal["all"] | int = 0


class Checker:
    """The configured checks; ``failures`` returns the names of the checks an answer fails (empty: it passes)."""

    def __init__(self, o: OutputOptions, toxicity: ToxicityClassifier | None, gateway: Any = None) -> None:
        self.o = o
        self.gateway = gateway
        self.must = re.compile(o.must_match) if o.must_match else None
        self.forbid = [re.compile(p) for p in o.forbid]
        self.pii = set(o.pii)
        self.toxicity = toxicity
        self.block_words = _words([w for k in o.keywords if k.action == "block" for w in k.words])
        self.review_words = _words([w for k in o.keywords if k.action == "review" for w in k.words])

    def text_failures(self, text: str) -> list[str]:
        """Checks that work on partial text (used on the streaming window too)."""
        out = []
        if any(p.search(text) for p in self.forbid):
            out.append("forbid")
        if self.block_words is not None and self.block_words.search(text):
            out.append("keyword")
        if self.pii:
            clean = PLACEHOLDER.sub(" ", text)  # placeholders of masked input are not a leak
            if any(s.type in self.pii for s in merge(clean, regex_hits(clean))):
                out.append("pii")
        return out

    async def failures(self, ctx: RequestContext, response: dict[str, Any]) -> list[str]:
        texts = answer_texts(response)
        tools = any((c.get("message") or {}).get("tool_calls") for c in response.get("choices", []))
        out: list[str] = []
        for text in texts:
            if self.o.empty and not text.strip() and not tools:
                out.append("empty")
                continue
            if self.o.json_ == "auto" and not tools:
                bad = json_problem(ctx, text)
                if bad:
                    out.append(bad)
            if self.must is not None and not self.must.search(text):
                out.append("must_match")
            out += self.text_failures(text)
            if self.toxicity is not None and text.strip() and await self.toxicity.score(text) >= (self.o.toxicity or 1):
                out.append("toxicity")
            if self.o.judge is not None and text.strip() and not out:
                score = await self.judge(ctx, text)
                ctx.note("output_checks", judge_score=score)
                if score is None or score < self.o.judge.min_score:
                    out.append("judge")
        for said in _said(ctx):  # text of turns before tool calls, shown by the Responses API: the text checks too
            out += self.text_failures(said)
        return sorted(set(out))

    async def judge(self, ctx: RequestContext, answer: str) -> float | None:
        """Ask the judge model; its attempts join the request's (visible in the trace, not billed separately)."""
        assert self.o.judge is not None
        question = ctx.query_text()
        req = ChatCompletionRequest(model=self.o.judge.model, temperature=0, messages=[
            {"role": "system", "content": self.o.judge.prompt},
            {"role": "user", "content": f"Question:\n{question}\n\nAnswer:\n{answer}"},
        ])  # fmt: skip
        jctx = RequestContext(request=req, request_id=ctx.request_id + "-judge", model=self.o.judge.model)
        await self.gateway.chat(jctx, self.o.judge.model)
        ctx.attempts.extend(jctx.attempts)
        return judge_score(answer_texts(jctx.response or {})[0] if jctx.response else "", self.o.judge.scale)

    def review(self, response: dict[str, Any]) -> bool:
        return self.review_words is not None and any(self.review_words.search(t) for t in answer_texts(response))


def _said(ctx: RequestContext) -> list[str]:
    return [e["said"] for e in ctx.state.get(TOOL_EVENTS) or () if "said" in e]


def _words(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def json_problem(ctx: RequestContext, text: str) -> str | None:
    """'json' when the request asked for JSON and the answer is not; 'schema' when it misses the schema."""
    rf = ctx.request.response_format
    if rf is None or rf.type == "text":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return "json"
    if rf.type == "json_object":
        return None if isinstance(value, dict) else "json"
    schema = rf.json_schema.schema_ if rf.json_schema else None
    if schema:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError:
            return "schema"
        except jsonschema.SchemaError:
            return None  # the client's schema is broken: nothing to hold the answer to
    return None


class OutputChecksStep(Step):
    name = "output_checks"
    reads = frozenset({"request", "response", "stream"})
    writes = frozenset({"response", "stream"})

    def __init__(self, options: OutputOptions, checker: Checker, services: Any, metrics: GuardMetrics) -> None:
        self.options = options
        self.checker = checker
        self.gateway = services.gateway
        self.apps = {a.name: a.model for a in getattr(services.cfg, "applications", [])}
        self.handoffs = HandoffStore(services.db) if options.on_fail.handoff else None
        self.metrics = metrics

    def model_of(self, ctx: RequestContext) -> str:
        return ctx.target_model or self.apps.get(ctx.application or "") or ctx.model

    async def run(self, ctx: RequestContext) -> None:
        if ctx.stream is not None:
            hb = self.options.hold_back
            if hb == "all":
                # The server streams a whole response as chunks (later closers see a response, not a stream).
                ctx.response, ctx.stream = assemble([c async for c in ctx.stream]) or _broken(), None
                await self.enforce(ctx)
            else:
                ctx.stream = self.window(ctx, ctx.stream, int(hb))
            return
        if ctx.response is not None:
            await self.enforce(ctx)

    async def enforce(self, ctx: RequestContext) -> None:
        """Check the answer; on failure: retries, fallbacks, then handoff, stock answer or a 502."""
        assert ctx.response is not None
        failed = await self.checker.failures(ctx, ctx.response)
        tries: list[str] = []
        if failed and self.options.on_fail.best_of > 1:
            failed = await self.best_of(ctx, self.options.on_fail.best_of, tries)
        plan = [self.model_of(ctx)] * self.options.on_fail.retry + list(self.options.on_fail.fallback)
        for model in plan:
            if not failed:
                break
            self.metrics.count(self.name, "retry")
            tries.append(model)
            await self.call(ctx, model)
            failed = await self.checker.failures(ctx, ctx.response)
        review = self.checker.review(ctx.response)
        if review:
            ctx.headers["x-portico-review"] = "keyword"
            self.metrics.count(self.name, "review")
        if not failed:
            ctx.note(self.name, decision="pass" if not tries else "recovered", retried=tries, review=review)
            self.metrics.count(self.name, "pass" if not tries else "recovered")
            return
        ctx.note(self.name, decision="fail", failed=failed, retried=tries, review=review)
        self.metrics.count(self.name, "fail")
        policy = self.options.on_fail
        if policy.record:
            return
        if events := ctx.state.get(TOOL_EVENTS):  # a stock answer replaces what the model said before its tool calls
            events[:] = [e for e in events if "said" not in e]
        if self.handoffs is not None:
            row = await self.handoffs.create(ctx, "output check: " + ",".join(failed), dump_messages(ctx))
            ctx.headers["x-portico-handoff"] = row["id"]
            ctx.note(self.name, handoff=row["id"])
            stock_answer(ctx, self.name, policy.handoff_answer)
        elif policy.answer is not None:
            stock_answer(ctx, self.name, policy.answer)
        else:
            raise UpstreamError(f"the answer failed output checks: {', '.join(failed)}", status=502,
                                code="output_check_failed")  # fmt: skip

    async def best_of(self, ctx: RequestContext, n: int, tries: list[str]) -> list[str]:
        """n answers in parallel; the best passing one (highest judge score when a judge is configured) wins."""
        model = self.model_of(ctx)
        req = ctx.request.model_copy(update={"stream": False})
        sibs = [RequestContext(request=req, request_id=ctx.request_id, model=ctx.model, application=ctx.application,
                               caller=ctx.caller) for _ in range(n)]  # fmt: skip

        async def one(sib: RequestContext) -> tuple[list[str], float]:
            await self.gateway.chat(sib, model)
            failed = await self.checker.failures(sib, sib.response or {})
            return failed, float(sib.state.get("trace.notes", {}).get(self.name, {}).get("judge_score") or 0.0)

        results = await asyncio.gather(*(one(s) for s in sibs), return_exceptions=True)
        tries.extend([f"{model} (best of {n})"])
        self.metrics.count(self.name, "best_of")
        best: tuple[float, RequestContext] | None = None
        for sib, r in zip(sibs, results, strict=True):
            ctx.attempts.extend(sib.attempts)
            if isinstance(r, BaseException) or r[0]:
                continue
            if best is None or r[1] > best[0]:
                best = (r[1], sib)
        ctx.note(self.name, best_of=n, best_of_passed=sum(1 for r in results if not isinstance(r, BaseException)
                                                          and not r[0]))  # fmt: skip
        if best is None:
            return await self.checker.failures(ctx, ctx.response or {})
        ctx.response, ctx.usage, ctx.deployment = best[1].response, best[1].usage, best[1].deployment
        return []

    async def call(self, ctx: RequestContext, model: str) -> None:
        runner = ctx.state.get(TOOL_RUNNER)
        if runner is not None:  # the request brought server-side tools: the retry runs the agent loop with them again
            if (events := ctx.state.get(TOOL_EVENTS)) is not None:
                events.clear()  # the calls shown are those of the run that answers
            await runner(ctx, model)
        elif ctx.request.stream:
            await self.gateway.chat_stream(ctx, model)
        else:
            await self.gateway.chat(ctx, model)
        if ctx.request.stream:
            assert ctx.stream is not None
            ctx.response, ctx.stream = assemble([c async for c in ctx.stream]) or _broken(), None

    async def window(self, ctx: RequestContext, chunks: AsyncIterator[dict[str, Any]],
                     hold: int) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Stream with ``hold`` characters held back; a failing partial check cuts the stream."""
        seen: list[dict[str, Any]] = []
        text = ""
        held: list[dict[str, Any]] = []
        held_chars = 0
        async for chunk in chunks:
            seen.append(chunk)
            piece = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
            text += piece
            if hold and piece and self.checker.text_failures(text):
                failed = self.checker.text_failures(text)
                ctx.note(self.name, decision="cut", failed=failed)
                self.metrics.count(self.name, "cut")
                note = self.options.on_fail.answer or ""
                base = {"id": chunk.get("id", ""), "model": chunk.get("model", ""), "created": chunk.get("created", 0)}
                yield chunk_dict(**base, choices=[delta_choice(0, {"content": note}, "content_filter")])
                return
            held.append(chunk)
            held_chars += len(piece)
            while held and (held_chars > hold or not hold):
                out = held.pop(0)
                held_chars -= sum(len((c.get("delta") or {}).get("content") or "") for c in out.get("choices") or [])
                yield out
        for out in held:
            yield out
        response = assemble(seen)
        if response is not None:  # whole-answer checks: recorded, too late to act on
            failed = await self.checker.failures(ctx, response)
            ctx.note(self.name, decision="fail" if failed else "pass", failed=failed, acted=False)
            self.metrics.count(self.name, "fail" if failed else "pass")


def _broken() -> dict[str, Any]:
    raise UpstreamError("the upstream stream ended before the answer was complete", status=502)


def output_checks_step(options: dict[str, Any], services: Services) -> OutputChecksStep:
    opts = parse_options(OutputOptions, options)
    tox = None
    if opts.toxicity is not None:
        services.embedder.require("output_checks toxicity")
        tox = ToxicityClassifier.load(services.embedder.embed, opts.toxicity_weights)
    return OutputChecksStep(opts, Checker(opts, tox, services.gateway), services, GuardMetrics(services.metrics))
