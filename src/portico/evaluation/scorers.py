"""Scorers: each turns (item, outcome) into a score in [0, 1], or None when it does not apply to the item (no
expected answer, no gold ids). Everything a scorer needs per call (compiled regexes, JSON-Schema validators) is
built once from its spec. LLM judges live in evaluation.judges; they share the interface.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import jsonschema
import numpy as np
import orjson

from portico.evaluation.datasets import Item
from portico.evaluation.outcome import Outcome
from portico.evaluation.spec import ScorerSpec

Score = tuple[float | None, dict[str, Any] | None]  # value, details (kept with the result)
Embed = Callable[[list[str]], Awaitable[np.ndarray]]
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class Scorer(Protocol):
    label: str
    pass_at: float

    async def score(self, item: Item, out: Outcome) -> Score: ...


class ScorerError(ValueError):
    pass


def normalise(text: str) -> str:
    """Case, accents, surrounding punctuation and runs of whitespace do not matter for equals / contains."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(t.split()).strip(" .!?;:'\"")


def _expected(item: Item, opts: dict[str, Any]) -> Any:
    return opts.get("value", item.expected)


def _as_text(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


class _Base:
    def __init__(self, spec: ScorerSpec) -> None:
        self.label = spec.label
        self.pass_at = spec.pass_at
        self.opts = spec.options


class Equals(_Base):
    async def score(self, item: Item, out: Outcome) -> Score:
        exp = _expected(item, self.opts)
        if exp is None:
            return None, None
        return float(normalise(out.text) == normalise(_as_text(exp))), None


class Contains(_Base):
    """Expected text (or every one of a list) appears in the answer."""

    async def score(self, item: Item, out: Outcome) -> Score:
        exp = _expected(item, self.opts)
        if exp is None:
            return None, None
        wanted = exp if isinstance(exp, list) else [exp]
        text = normalise(out.text)
        return sum(normalise(_as_text(w)) in text for w in wanted) / max(1, len(wanted)), None


class Regex(_Base):
    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        pattern = self.opts.get("pattern")
        if not isinstance(pattern, str):
            raise ScorerError(f"scorer '{self.label}': regex needs 'pattern'")
        try:
            self.rx = re.compile(pattern, re.I if self.opts.get("ignore_case", True) else 0)
        except re.error as e:
            raise ScorerError(f"scorer '{self.label}': bad pattern: {e}") from None

    async def score(self, item: Item, out: Outcome) -> Score:
        return float(self.rx.search(out.text) is not None), None


class JsonSchema(_Base):
    """The answer (a fenced block allowed) parses as JSON and validates against ``schema``."""

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        schema = self.opts.get("schema")
        if not isinstance(schema, dict):
            raise ScorerError(f"scorer '{self.label}': json_schema needs 'schema' (a mapping)")
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ScorerError(f"scorer '{self.label}': invalid schema: {e.message}") from None
        self.validator = cls(schema)

    async def score(self, item: Item, out: Outcome) -> Score:
        text = out.text.strip()
        m = _FENCE.match(text)
        try:
            value = orjson.loads(m.group(1) if m else text)
        except orjson.JSONDecodeError as e:
            return 0.0, {"error": f"not JSON: {e}"}
        err = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        return (0.0, {"error": err.message}) if err is not None else (1.0, None)


class Numeric(_Base):
    """The last number in the answer equals the expected one within ``tolerance`` (absolute) or ``relative``."""

    async def score(self, item: Item, out: Outcome) -> Score:
        exp = _expected(item, self.opts)
        if exp is None:
            return None, None
        try:
            target = float(exp)
        except (TypeError, ValueError):
            return None, None  # this item's expected answer is not a number: not applicable
        found = _NUMBER.findall(out.text)
        if not found:
            return 0.0, {"error": "no number in the answer"}
        got = float(found[-1].replace(",", ""))
        tol = max(float(self.opts.get("tolerance", 1e-9)), abs(target) * float(self.opts.get("relative", 0.0)))
        return float(abs(got - target) <= tol), {"got": got}


class EmbeddingSimilarity(_Base):
    """Cosine similarity of answer and expected answer under the runtime's embedder, clipped to [0, 1]."""

    def __init__(self, spec: ScorerSpec, embed: Embed | None) -> None:
        super().__init__(spec)
        if embed is None:
            raise ScorerError(f"scorer '{self.label}': embedding_similarity needs an embedding model in the config")
        self.embed = embed
        if "threshold" in self.opts:
            self.pass_at = float(self.opts["threshold"])

    async def score(self, item: Item, out: Outcome) -> Score:
        exp = _expected(item, self.opts)
        if exp is None:
            return None, None
        if not out.text.strip():
            return 0.0, None
        v = await self.embed([out.text, _as_text(exp)])
        return max(0.0, min(1.0, float(np.dot(v[0], v[1])))), None


def _k(spec: _Base, default: int = 5) -> int:
    k = spec.opts.get("k", default)
    if not isinstance(k, int) or k < 1:
        raise ScorerError(f"scorer '{spec.label}': k must be a positive integer")
    return k


class HitAtK(_Base):
    async def score(self, item: Item, out: Outcome) -> Score:
        if not item.gold_ids:
            return None, None
        return float(any(d in item.gold_ids for d in out.retrieved[: _k(self)])), {"retrieved": out.retrieved[:10]}


class NdcgAtK(_Base):
    """Binary relevance: each gold id counts once, at its first rank."""

    async def score(self, item: Item, out: Outcome) -> Score:
        if not item.gold_ids:
            return None, None
        k = _k(self, 10)
        gold = set(item.gold_ids)
        dcg = sum(1.0 / math.log2(r + 2) for r, d in enumerate(out.retrieved[:k]) if d in gold)
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(gold))))
        return dcg / ideal, None


class CitationCoverage(_Base):
    """With gold ids: the share of them the answer cites ([n] markers mapped through portico.citations).
    Without: the share of the answer's sentences that carry a citation marker."""

    async def score(self, item: Item, out: Outcome) -> Score:
        if item.gold_ids:
            cited = set(out.cited)
            return sum(g in cited for g in item.gold_ids) / len(item.gold_ids), {"cited": out.cited}
        sentences = [s for s in _SENTENCE.split(out.text.strip()) if s.strip()]
        if not sentences:
            return 0.0, None
        return sum(bool(re.search(r"\[\d{1,3}\]", s)) for s in sentences) / len(sentences), None


def _expected_tools(item: Item, opts: dict[str, Any]) -> list[dict[str, Any]] | None:
    if "name" in opts:
        return [{"name": opts["name"], "arguments": opts.get("arguments")}]
    if item.expected_tools is None:
        return None
    return [t.model_dump() for t in item.expected_tools]


class ToolCalled(_Base):
    """The share of the expected tools the answer called (by name)."""

    async def score(self, item: Item, out: Outcome) -> Score:
        wanted = _expected_tools(item, self.opts)
        if wanted is None:
            return None, None
        called = {c["name"] for c in out.tool_calls}
        if not wanted:  # expected: no tool at all
            return float(not called), None
        return sum(w["name"] in called for w in wanted) / len(wanted), {"called": sorted(called)}


def _subset(expected: Any, got: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in expected.items())
    if isinstance(expected, str) and isinstance(got, str):
        return normalise(expected) == normalise(got)
    return expected == got


class ToolArguments(_Base):
    """For each expected tool with arguments: some call of it carries them (a subset match; strings compared
    normalised)."""

    async def score(self, item: Item, out: Outcome) -> Score:
        wanted = [w for w in _expected_tools(item, self.opts) or [] if w.get("arguments") is not None]
        if not wanted:
            return None, None
        ok = sum(any(c["name"] == w["name"] and _subset(w["arguments"], c["arguments"]) for c in out.tool_calls)
                 for w in wanted)  # fmt: skip
        return ok / len(wanted), None


class Steps(_Base):
    """The number of steps (tool calls in the answer, for now) is within [min, max] or equals the item's
    ``metadata.expected_steps``."""

    async def score(self, item: Item, out: Outcome) -> Score:
        n = len(out.tool_calls)
        exp = item.metadata.get("expected_steps")
        lo, hi = self.opts.get("min"), self.opts.get("max")
        if exp is None and lo is None and hi is None:
            return None, None
        if exp is not None:
            return float(n == int(exp)), {"steps": n}
        return float((lo is None or n >= lo) and (hi is None or n <= hi)), {"steps": n}


_SIMPLE: dict[str, type[_Base]] = {
    "equals": Equals, "contains": Contains, "regex": Regex, "json_schema": JsonSchema, "numeric": Numeric,
    "hit_at_k": HitAtK, "ndcg_at_k": NdcgAtK, "citation_coverage": CitationCoverage, "tool_called": ToolCalled,
    "tool_arguments": ToolArguments, "steps": Steps,
}  # fmt: skip


def build_scorer(spec: ScorerSpec, *, embed: Embed | None, judge: Any) -> Scorer:
    """``judge``: a callable (model, messages) → text for LLM judges (see evaluation.judges)."""
    if spec.type == "embedding_similarity":
        return EmbeddingSimilarity(spec, embed)
    if spec.type == "llm_judge":
        from portico.evaluation.judges import PointwiseJudge

        return PointwiseJudge(spec, judge)
    cls = _SIMPLE[spec.type]
    scorer = cls(spec)
    if isinstance(scorer, HitAtK | NdcgAtK):
        _k(scorer)  # a bad k fails when the eval starts, not on the first item
    return scorer  # type: ignore[return-value]
