"""The ``pii`` step: mask personal data before the model call, unmask the answer after it (plain and streamed).

Options (in an application's ``steps:``)::

    - use: pii
      ner: spacy                 # spacy | presidio | none (regex/checksum tier only)
      ner_weights: null          # null (the spaCy model's own NER) | tuned (the shipped fine-tuned one) | a directory
      lexicon: true              # name and place lists check and complete the spaCy NER (guardrails/pii/lexicon.py)
      ner_process: true          # the spaCy NER in a worker process, beside the request's other steps (pii/ner.py)
      organizations: all         # all | evidence (an NER ORG only with a legal form or an employer cue)
      default: mask              # action for detected types not listed below: mask | block | allow
      entities: {CREDIT_CARD: block, DATE_TIME: allow, NRP: allow}
      min_score: 0.5
      roles: [system, developer, user, assistant, tool]
      block_message: "I can't process that request because it contains sensitive data."

The masked request replaces ``ctx.request``: it is what every later step, the provider, and the trace see. The
placeholder dictionary lives in ``ctx.state["pii.mapping"]`` and dies with the request. The paired closer
``pii_unmask`` runs last and puts the original values back into the answer; in a stream it holds back a tail
that may be the start of a placeholder until the next chunk completes it.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.guardrails.common import GuardMetrics, map_message_texts
from portico.guardrails.pii.detector import PIIDetector, Span
from portico.guardrails.pii.masking import Masker, StreamUnmasker, unmask
from portico.guardrails.pii.ner import SPACY_MODEL, TUNED_NER
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options, stock_answer
from portico.pipeline.services import Services
from portico.pipeline.step import Step
from portico.protocol.chat import TextPart

MAPPING = "pii.mapping"
MASKED_RESPONSE = "pii.masked_response"
SCANNED = "pii.scanned"  # set once the request went through masking (tracing.content: redacted reads it)
Action = Literal["mask", "block", "allow"]
DEFAULT_ENTITIES: dict[str, Action] = {"DATE_TIME": "allow", "NRP": "allow", "TITLE": "allow"}


class PIIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ner: Literal["spacy", "presidio", "none"] = "spacy"
    spacy_model: str = SPACY_MODEL
    # "tuned": the packaged model's NER fine-tuned on presidio-research sentences (python -m
    # portico.guardrails.pii.train writes such a directory); it only fits the packaged spacy_model. Not the
    # default: +0.01 typed F1 on the benchmark, but it drifts from the packaged NER on everyday text.
    ner_weights: str | None = None
    lexicon: bool = True
    # spaCy holds the GIL: in-process, the NER runs one at a time with the injection and topics steps and with other
    # requests' scans. A worker process (~150 MB, started with the application) runs it beside them.
    ner_process: bool = True
    # "evidence" leaves bare NER organisations (often acronyms) unmasked: typed F1 +0.015 on the benchmark, but
    # masking recall -0.04, since the small model calls some people's names ORG. Privacy first: "all".
    organizations: Literal["all", "evidence"] = "all"
    default: Action = "mask"
    entities: dict[str, Action] = Field(default_factory=dict)
    min_score: float = Field(default=0.5, ge=0, le=1)
    roles: list[str] = Field(default_factory=lambda: ["system", "developer", "user", "assistant", "tool"])
    block_message: str = "I can't process that request because it contains sensitive data."


class PIIStep(Step):
    name = "pii"
    reads = frozenset({"request"})
    writes = frozenset({"request"})

    def __init__(self, options: PIIOptions, detector: PIIDetector, metrics: GuardMetrics) -> None:
        self.options = options
        self.detector = detector
        self.metrics = metrics
        self.policy: dict[str, Action] = {**DEFAULT_ENTITIES, **options.entities}
        self.roles = set(options.roles)
        self.closer = PIIUnmaskStep()

    def action(self, typ: str) -> Action:
        return self.policy.get(typ, self.options.default)

    def scan(self, ctx: RequestContext) -> dict[tuple[int, int], list[Span]]:
        """Spans per (message, part) text, computed off the event loop (spaCy is CPU-bound)."""
        found: dict[tuple[int, int], list[Span]] = {}
        for i, m in enumerate(ctx.request.messages):
            if m.role not in self.roles:
                continue
            parts = m.content if isinstance(m.content, list) else []
            texts = [m.content] if isinstance(m.content, str) else [p.text for p in parts if isinstance(p, TextPart)]
            for j, t in enumerate(texts):
                if t:
                    found[(i, j)] = [s for s in self.detector.detect(t) if self.action(s.type) != "allow"]
        return found

    async def run(self, ctx: RequestContext) -> None:
        found = await asyncio.to_thread(self.scan, ctx)
        ctx.state[SCANNED] = True
        spans = [s for ss in found.values() for s in ss]
        counts = Counter(s.type for s in spans)
        blocked = sorted({s.type for s in spans if self.action(s.type) == "block"})
        if blocked:
            ctx.note(self.name, decision="block", entities=sorted(counts), blocked=blocked)
            self.metrics.count(self.name, "block")
            stock_answer(ctx, self.name, self.options.block_message)
            return
        if not spans:
            ctx.note(self.name, decision="pass", masked=0)
            self.metrics.count(self.name, "pass")
            return
        masker = Masker()
        index = {id(m): i for i, m in enumerate(ctx.request.messages)}
        part_of: dict[tuple[int, str], int] = {}

        def mask(m: Any, text: str) -> str:
            i = index[id(m)]
            j = part_of.get((i, "n"), 0)
            part_of[(i, "n")] = j + 1
            ss = found.get((i, j))
            return masker.mask(text, ss) if ss else text

        ctx.request = map_message_texts(ctx.request, mask)
        ctx.state[MAPPING] = masker.mapping
        ctx.note(self.name, decision="mask", masked=len(spans), entities=sorted(counts))
        self.metrics.count(self.name, "mask")


class PIIUnmaskStep(Step):
    """Closer: the answer's placeholders back to the original values (plain or streamed)."""

    name = "pii_unmask"
    reads = frozenset({"response", "stream"})
    writes = frozenset({"response", "stream"})

    async def run(self, ctx: RequestContext) -> None:
        mapping = ctx.state.get(MAPPING)
        if not mapping:
            return
        if ctx.stream is not None:
            ctx.stream = unmask_stream(ctx.stream, mapping)
        elif ctx.response is not None:
            ctx.state[MASKED_RESPONSE] = ctx.response
            ctx.response = unmask_response(ctx.response, mapping)


def unmask_response(response: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(response)
    for c in out.get("choices", []):
        msg = c.get("message") or {}
        if isinstance(msg.get("content"), str):
            msg["content"] = unmask(msg["content"], mapping)
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function") or {}
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = unmask(fn["arguments"], mapping)
    return out


async def unmask_stream(
    chunks: AsyncIterator[dict[str, Any]], mapping: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """Text and tool-call arguments unmasked piece by piece; what a choice holds back is flushed with its
    finish_reason (or in one last chunk when the stream ends without one)."""
    texts: dict[int, StreamUnmasker] = {}
    args: dict[tuple[int, int], StreamUnmasker] = {}
    last: dict[str, Any] | None = None
    async for chunk in chunks:
        last = chunk
        for c in chunk.get("choices") or []:
            idx = c.get("index", 0)
            um = texts.setdefault(idx, StreamUnmasker(mapping))
            delta = c.get("delta") or {}
            if isinstance(delta.get("content"), str):
                delta["content"] = um.feed(delta["content"])
            for tc in delta.get("tool_calls") or []:
                fn = tc.get("function") or {}
                if isinstance(fn.get("arguments"), str):
                    fn["arguments"] = args.setdefault((idx, tc.get("index", 0)), StreamUnmasker(mapping)).feed(
                        fn["arguments"]
                    )
            if c.get("finish_reason") is not None:
                _flush_into(delta, idx, um, args)
                c["delta"] = delta
        yield chunk
    if last is not None and (any(u.held for u in texts.values()) or any(u.held for u in args.values())):
        base = {k: last.get(k) for k in ("id", "object", "created", "model")}
        choices = []
        for i, um in texts.items():
            delta: dict[str, Any] = {}
            _flush_into(delta, i, um, args)
            if delta:
                choices.append({"index": i, "delta": delta, "finish_reason": None})
        yield {**base, "choices": choices}


def _flush_into(
    delta: dict[str, Any], idx: int, text: StreamUnmasker, args: dict[tuple[int, int], StreamUnmasker]
) -> None:
    if text.held:
        delta["content"] = (delta.get("content") or "") + text.flush()
    for (i, t), um in args.items():
        if i == idx and um.held:
            delta.setdefault("tool_calls", []).append({"index": t, "function": {"arguments": um.flush()}})


def pii_step(options: dict[str, Any], services: Services) -> PIIStep:
    opts = parse_options(PIIOptions, options)
    weights = TUNED_NER if opts.ner_weights == "tuned" else opts.ner_weights
    if opts.ner_weights == "tuned" and opts.spacy_model != SPACY_MODEL:
        raise ValueError(f"ner_weights: 'tuned' fits only spacy_model {SPACY_MODEL!r}, not {opts.spacy_model!r}")
    detector = PIIDetector(
        ner=opts.ner,
        model=opts.spacy_model,
        min_score=opts.min_score,
        ner_weights=weights,
        lexicon=opts.lexicon,
        organizations=opts.organizations,
        ner_process=opts.ner_process,
    )
    if opts.ner == "spacy" and opts.ner_process:

        async def close() -> None:
            await asyncio.to_thread(detector.close)

        services.on_close(close)
    return PIIStep(opts, detector, GuardMetrics(getattr(services, "metrics", None)))
