"""The ``knowledge`` tool kind against a real embedded knowledge base (SQLite store, BM25 + vectors from a
bag-of-words embedder): passages with ids to cite, citations, k, the operator's filters, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from portico.actions import NoApprovalQueue, ToolContext, run_tool
from portico.actions.kinds.knowledge import knowledge_kind
from portico.config.tools import ToolConfig
from portico.context.knowledge.service import knowledge_of
from tests.unit.test_knowledge import doc
from tests.unit.test_rag_steps import Services

CTX = ToolContext(request_id="r1")


async def _seed(svc: Services) -> None:
    kb = await knowledge_of(svc).create("docs")
    await kb.add([
        ("refunds", doc("Refunds are paid within 14 days of the return.", "Refund policy", source="policy.md",
                        team="billing")),
        ("shipping", doc("Parcels ship from Rotterdam every weekday.", "Shipping", source="shipping.md",
                         team="ops")),
        ("returns", doc("Returns are accepted for 30 days; refunds follow the return.", "Returns", source="r.md",
                        team="ops")),
    ])  # fmt: skip


def tool(svc: Services, **options: Any) -> Any:
    cfg = ToolConfig.model_validate({"name": "kb_search", "kind": "knowledge", "kb": "docs", **options})
    return knowledge_kind(cfg, svc).tool  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
async def test_search_returns_passages_with_ids_and_citations(tmp_path: Path, mode: str) -> None:
    svc = Services(tmp_path)
    await _seed(svc)
    out = await run_tool(tool(svc, mode=mode), {"query": "how long until refunds are paid", "k": 2}, CTX,
                         NoApprovalQueue())  # fmt: skip
    assert out.status == "ok", out.result.content
    assert out.result.content.startswith("Passages") and "[refunds#0] Refund policy\nRefunds are paid" in (
        out.result.content
    )
    assert len(out.result.citations) == 2 and out.result.citations[0]["id"] == "refunds#0"
    assert out.result.citations[0]["source"] == "policy.md" and out.result.data[0]["document_id"] == "refunds"


async def test_operator_filters_hold_and_k_is_bounded(tmp_path: Path) -> None:
    svc = Services(tmp_path)
    await _seed(svc)
    t = tool(svc, filters={"team": "ops"}, max_k=3)
    out = await run_tool(t, {"query": "refunds"}, CTX, NoApprovalQueue())
    assert {c["document_id"] for c in out.result.citations} <= {"shipping", "returns"}
    out = await run_tool(t, {"query": "refunds", "k": 50}, CTX, NoApprovalQueue())
    assert out.status == "invalid_arguments" and "k" in out.result.content
    out = await run_tool(t, {"k": 2}, CTX, NoApprovalQueue())
    assert out.status == "invalid_arguments" and "query" in out.result.content


async def test_missing_base_and_no_match_are_told_to_the_model(tmp_path: Path) -> None:
    svc = Services(tmp_path)
    out = await run_tool(tool(svc), {"query": "refunds"}, CTX, NoApprovalQueue())
    assert out.status == "error" and "does not exist" in out.result.content
    await _seed(svc)
    out = await run_tool(tool(svc, mode="bm25"), {"query": "zzzz qqqq"}, CTX, NoApprovalQueue())
    assert out.status == "ok" and "No passages" in out.result.content and out.result.citations == []


def test_bad_options_fail_at_build(tmp_path: Path) -> None:
    svc = Services(tmp_path)
    with pytest.raises(ValueError, match="kb"):
        knowledge_kind(ToolConfig.model_validate({"name": "k", "kind": "knowledge"}), svc)
    with pytest.raises(ValueError):
        tool(svc, filters={"team": {"$nope": 1}})
