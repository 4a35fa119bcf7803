"""Scorers, judges' parsing and position-swap logic, outcomes from responses, and the run statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portico.evaluation.datasets import DatasetError, Item, content_hash, parse_items
from portico.evaluation.judges import PairwiseJudge, PointwiseJudge, parse_score, parse_verdict
from portico.evaluation.outcome import Outcome, from_response
from portico.evaluation.scorers import ScorerError, build_scorer
from portico.evaluation.spec import PairwiseSpec, ScorerSpec
from portico.evaluation.statistics import bootstrap_ci, paired_test, summarise


def item(**kw: object) -> Item:
    return Item.model_validate({"input": "q", **kw})


async def score(spec: dict, it: Item, out: Outcome, embed=None, judge=None) -> float | None:
    return (await build_scorer(ScorerSpec.model_validate(spec), embed=embed, judge=judge).score(it, out))[0]


async def test_text_scorers() -> None:
    out = Outcome(text="The capital is  PARIS.")
    assert await score({"type": "contains"}, item(expected="paris"), out) == 1.0
    assert await score({"type": "contains"}, item(expected=["paris", "lyon"]), out) == 0.5
    assert await score({"type": "contains"}, item(), out) is None  # nothing expected: not applicable
    assert await score({"type": "equals"}, item(expected="the capital is paris"), out) == 1.0
    assert await score({"type": "equals"}, item(expected="paris"), out) == 0.0
    assert await score({"type": "regex", "pattern": r"capital\s+is"}, item(), out) == 1.0
    assert await score({"type": "regex", "pattern": r"^paris"}, item(), out) == 0.0
    with pytest.raises(ScorerError):
        build_scorer(ScorerSpec(type="regex", pattern="("), embed=None, judge=None)  # type: ignore[call-arg]


async def test_json_schema_and_numeric() -> None:
    spec = {"type": "json_schema", "schema": {"type": "object", "required": ["city"],
                                              "properties": {"city": {"type": "string"}}}}  # fmt: skip
    assert await score(spec, item(), Outcome(text='```json\n{"city": "Oslo"}\n```')) == 1.0
    assert await score(spec, item(), Outcome(text='{"town": "Oslo"}')) == 0.0
    assert await score(spec, item(), Outcome(text="Oslo")) == 0.0
    with pytest.raises(ScorerError):
        build_scorer(ScorerSpec.model_validate({"type": "json_schema", "schema": {"type": 7}}), embed=None, judge=None)
    num = {"type": "numeric", "tolerance": 0.01}
    assert await score(num, item(expected=1234.5), Outcome(text="about 1,234.5 units")) == 1.0
    assert await score(num, item(expected="42"), Outcome(text="41 then 42")) == 1.0
    assert await score(num, item(expected=42), Outcome(text="42 then 41")) == 0.0
    assert await score({"type": "numeric", "relative": 0.1}, item(expected=100), Outcome(text="95")) == 1.0
    assert await score(num, item(expected=3), Outcome(text="no digits")) == 0.0


async def test_retrieval_and_citations() -> None:
    out = Outcome(text="Cats purr [2]. Dogs bark [1]. Birds sing.", retrieved=["d3", "d1", "d9", "d2"],
                  citations=[{"index": 1, "document_id": "d1"}, {"index": 2, "document_id": "d2"}])  # fmt: skip
    gold = item(gold_ids=["d1", "d2"])
    assert await score({"type": "hit_at_k", "k": 1}, gold, out) == 0.0
    assert await score({"type": "hit_at_k", "k": 2}, gold, out) == 1.0
    ideal = 1 + 1 / math.log2(3)
    assert await score({"type": "ndcg_at_k", "k": 4}, gold, out) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / ideal
    )
    assert await score({"type": "hit_at_k"}, item(), out) is None
    assert await score({"type": "citation_coverage"}, gold, out) == 1.0
    assert await score({"type": "citation_coverage"}, item(gold_ids=["d1", "d7"]), out) == 0.5
    assert await score({"type": "citation_coverage"}, item(), out) == pytest.approx(2 / 3)  # sentences with a marker


async def test_tool_scorers() -> None:
    it = item(expected_tools=[{"name": "get_weather", "arguments": {"city": "Oslo"}}], metadata={"expected_steps": 1})
    right = Outcome(tool_calls=[{"name": "get_weather", "arguments": {"city": "oslo", "unit": "C"}}])
    wrong = Outcome(tool_calls=[{"name": "get_weather", "arguments": {"city": "Bergen"}},
                                {"name": "search", "arguments": {}}])  # fmt: skip
    assert await score({"type": "tool_called"}, it, right) == 1.0
    assert await score({"type": "tool_arguments"}, it, right) == 1.0
    assert await score({"type": "tool_arguments"}, it, wrong) == 0.0
    assert await score({"type": "steps"}, it, right) == 1.0 and await score({"type": "steps"}, it, wrong) == 0.0
    assert await score({"type": "steps", "max": 1}, item(), wrong) == 0.0
    assert await score({"type": "tool_called"}, item(expected_tools=[]), Outcome()) == 1.0  # no tool expected


async def test_embedding_similarity_uses_the_embedder() -> None:
    async def embed(texts: list[str]) -> np.ndarray:
        vecs = {"cat": [1.0, 0.0], "kitten": [0.8, 0.6], "car": [0.0, 1.0]}
        return np.asarray([vecs[t] for t in texts])

    spec = {"type": "embedding_similarity", "threshold": 0.7}
    assert await score(spec, item(expected="kitten"), Outcome(text="cat"), embed=embed) == pytest.approx(0.8)
    assert await score(spec, item(expected="car"), Outcome(text="cat"), embed=embed) == 0.0
    with pytest.raises(ScorerError):
        build_scorer(ScorerSpec.model_validate(spec), embed=None, judge=None)


def test_judge_reply_parsing() -> None:
    assert parse_score("[[4]] because", 5) == 4 and parse_score("Rating: 3. ok", 5) == 3
    assert parse_score("Score is 9", 5) is None and parse_score("fine", 5) is None
    assert parse_verdict("A is better. [[A]]") == "A" and parse_verdict("[[C]]") == "tie"
    assert parse_verdict("no verdict") is None


def test_verdict_parsing_of_small_model_replies() -> None:
    """SmolLM2-135M writes [A] rather than [[A]], echoes the instruction's three markers, or lists them all."""
    assert parse_verdict("[A]\n\nThe first answer is more detailed.") == "A"
    assert parse_verdict("Verdict: [ B ]") == "B" and parse_verdict("[C]") == "tie"
    assert parse_verdict('"[[A]]" if assistant A is better, "[[B]]" if B, "[[C]]" for a tie') is None
    assert parse_verdict("[A]\n\nThe answer is:\n\n[B]\n\n[C]") is None
    assert parse_verdict("[A] looks fine but overall [[B]]") == "B"  # the double-bracket verdict wins
    assert parse_verdict("[The start of assistant A's answer]\n[Criteria]") is None
    judge = PairwiseJudge(PairwiseSpec(model="j", variants=["x", "y"]), None)  # type: ignore[arg-type]
    msgs = judge.messages(item(), "one", "two")
    # the request for a verdict closes the prompt: with only the system prompt asking, small models went on
    # writing an answer after "[The end of assistant B's answer]"
    assert msgs[1]["content"].rstrip().endswith("[[A]], [[B]] or [[C]] for a tie.")


async def test_pointwise_judge_normalises_and_records_failures() -> None:
    replies = iter(["[[5]] great", "I cannot rate"])

    async def judge(model: str, messages: list[dict], max_tokens: int) -> str:
        assert model == "j" and "[Reference answer]\nParis" in messages[1]["content"]
        return next(replies)

    j = PointwiseJudge(ScorerSpec.model_validate({"type": "llm_judge", "model": "j"}), judge)
    assert (await j.score(item(expected="Paris"), Outcome(text="Paris")))[0] == 1.0
    value, details = await j.score(item(expected="Paris"), Outcome(text="Paris"))
    assert value is None and details is not None and "no rating" in details["error"]


async def test_pairwise_judge_swaps_positions() -> None:
    """A judge that always prefers the first position is inconsistent → tie; one that follows content wins."""

    async def first_position(model: str, messages: list[dict], max_tokens: int) -> str:
        return "[[A]]"

    async def likes_paris(model: str, messages: list[dict], max_tokens: int) -> str:
        text = messages[1]["content"]
        a = text.split("[The start of assistant A's answer]\n")[1].split("\n")[0]
        return "[[A]]" if "Paris" in a else "[[B]]"

    spec = PairwiseSpec(model="j", variants=["x", "y"])
    it, good, bad = item(), Outcome(text="Paris"), Outcome(text="Lyon")
    winner, details = await PairwiseJudge(spec, first_position).compare(it, good, bad)
    assert winner == "tie" and details["consistent"] is False
    assert (await PairwiseJudge(spec, likes_paris).compare(it, good, bad))[0] == "a"
    assert (await PairwiseJudge(spec, likes_paris).compare(it, bad, good))[0] == "b"


def test_outcome_from_response_reads_tools_and_citations() -> None:
    out = from_response({"choices": [{"message": {"content": "See [1].", "tool_calls": [
        {"function": {"name": "f", "arguments": '{"x": 1}'}}]}}], "usage": {"total_tokens": 9},
        "portico": {"citations": [{"index": 1, "document_id": "d2", "score": 0.2},
                                  {"index": 2, "document_id": "d1", "score": 0.9}]}})  # fmt: skip
    assert out.tool_calls == [{"name": "f", "arguments": {"x": 1}}] and out.tokens == 9
    assert out.retrieved == ["d1", "d2"] and out.cited == ["d2"]


def test_dataset_items_validate_with_line_numbers() -> None:
    items = parse_items(['{"input": "a", "expected": 1}', "", '{"id": "x", "messages": [{"role": "user", '
                         '"content": "b"}]}'], "f.jsonl")  # fmt: skip
    assert items[0].messages == [{"role": "user", "content": "a"}] and items[1].id == "x"
    assert content_hash(items) == content_hash(parse_items([i.model_dump_json() for i in items], "g"))
    with pytest.raises(DatasetError, match=r"f.jsonl:2: "):
        parse_items(['{"input": "a"}', '{"input": "b", "colour": 1}'], "f.jsonl")
    with pytest.raises(DatasetError, match="appears twice"):
        parse_items(['{"id": "a", "input": "x"}', '{"id": "a", "input": "y"}'], "f.jsonl")


def test_statistics() -> None:
    lo, hi = bootstrap_ci([0, 1] * 50)
    assert 0.39 < lo < 0.5 < hi < 0.61
    same = paired_test([0.5] * 20, [0.5] * 20)
    assert same["p_sign"] == 1.0 and same["diff"] == 0.0
    better = paired_test([0.0] * 20, [1.0] * 18 + [0.0] * 2)
    assert better["wins"] == 18 and better["p_sign"] < 0.001 and better["p_bootstrap"] < 0.01
    rows = [{"item_id": f"i{i}", "variant": v, "repeat": r, "error": None, "latency_ms": 10.0, "cost_usd": 0.001,
             "scores": {"s": float(v == "b" or (i == 0 and r == 0))}}
            for i in range(4) for v in ("a", "b") for r in range(2)]  # fmt: skip
    s = summarise(rows, ["a", "b"], {"s": 0.5}, 2)
    a = s["variants"]["a"]["scorers"]["s"]
    assert a["mean"] == 0.125 and a["pass_at_k"] == 0.25 and a["pass_all_k"] == 0.0 and a["flaky"] == 0.25
    assert s["variants"]["b"]["scorers"]["s"]["pass_all_k"] == 1.0
    assert s["comparisons"][0]["wins"] == 4 and s["items"]["i0"]["a"]["s"] == 0.5
