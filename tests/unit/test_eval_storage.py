"""Feedback, request facts, datasets and eval results on SQLite and the real PostgreSQL (same statements)."""

from __future__ import annotations

import time

from portico.storage.db import Database
from portico.storage.evals import (
    create_run,
    dataset_items_of,
    finish_run,
    list_runs,
    previous_run,
    register_dataset,
    results_of,
    save_result,
)
from portico.storage.feedback import (
    RequestMeta,
    RequestMetaWriter,
    feedback_for,
    feedback_stats,
    get_meta,
    insert_feedback,
)


def _fb(fid: str, rid: str, kind: str, **kw: object) -> dict:
    row = {"feedback_id": fid, "ts": time.time(), "request_id": rid, "other_request_id": None, "metric": "m",
           "kind": kind, "value_num": None, "value_text": None, "value": None, "key_id": None, "key_name": None,
           "user": None, "session": None, "application": "app", "version": "2", "model": "app",
           "other_application": None, "other_version": None, "other_model": None}  # fmt: skip
    return {**row, **kw}


async def test_request_meta_and_feedback_aggregation(store_db: Database) -> None:
    writer = RequestMetaWriter(store_db)
    writer.add(RequestMeta("r1", time.time(), key_id="k1", application="app", version="2", session="s"))
    writer.add(RequestMeta("r1", time.time(), key_id="k2"))  # a repeated client-chosen id: the first stays
    writer.add(RequestMeta("r2", time.time(), key_id="k1", application="app", version="2"))
    await writer.flush()
    assert (await get_meta(store_db, "r1"))["key_id"] == "k1"  # type: ignore[index]
    rows = [
        _fb("f1", "r1", "boolean", value_num=1.0, metric="helpful"),
        _fb("f2", "r2", "boolean", value_num=0.0, metric="helpful"),
        _fb("f3", "r1", "category", value_text="wrong", metric="label"),
        _fb("f4", "r1", "category", value_text="retired", metric="label"),  # no longer configured: not reported
        _fb("f5", "r1", "pairwise", other_request_id="r2", value_text="b", value_num=0.0, metric="helpful",
            other_application="other", other_version="1", other_model="other"),
    ]  # fmt: skip
    for r in rows:
        assert await insert_feedback(store_db, r)
    assert not await insert_feedback(store_db, rows[0])  # the id is taken
    assert [f["feedback_id"] for f in await feedback_for(store_db, "r2")] == ["f2", "f5"]
    stats = await feedback_stats(store_db, 0, time.time() + 1, {"label": ["wrong", "good"]})
    by = {(s["metric"], s["kind"], s["application"]): s for s in stats}
    assert by[("helpful", "boolean", "app")]["count"] == 2 and by[("helpful", "boolean", "app")]["mean"] == 0.5
    assert by[("label", "category", "app")]["categories"] == {"wrong": 1}
    assert by[("helpful", "pairwise", "app")]["losses"] == 1 and by[("helpful", "pairwise", "other")]["wins"] == 1


async def test_datasets_are_versioned_by_content(store_db: Database) -> None:
    a = [{"id": "1", "messages": [{"role": "user", "content": "x"}]}]
    assert await register_dataset(store_db, "d", "h1", a, "f.jsonl") == 1
    assert await register_dataset(store_db, "d", "h1", a, "f.jsonl") == 1
    assert await register_dataset(store_db, "d", "h2", a + a, "f.jsonl") == 2
    assert await dataset_items_of(store_db, "d") == (2, a + a)
    assert await dataset_items_of(store_db, "d", 1) == (1, a)


async def test_eval_runs_and_cells(store_db: Database) -> None:
    base = {"name": "e", "status": "running", "dataset": "d", "dataset_version": 1, "dataset_hash": "h", "spec": {}}
    await create_run(store_db, {**base, "run_id": "e-1", "created_at": 1.0})
    await create_run(store_db, {**base, "run_id": "e-2", "created_at": 2.0})
    cell = {"run_id": "e-2", "item_id": "i", "variant": "v", "repeat": 0, "ts": 1.0, "output": {"text": "t"},
            "scores": {"s": 1.0}, "details": None, "cost_usd": 0.1, "latency_ms": 3.0, "tokens": 5,
            "error": None}  # fmt: skip
    await save_result(store_db, cell)
    await save_result(store_db, {**cell, "scores": {"s": 0.0}})  # the same cell again: the first stays
    assert [r["scores"] for r in await results_of(store_db, "e-2")] == [{"s": 1.0}]
    assert await previous_run(store_db, "e", 2.0) is None  # e-1 never finished
    await finish_run(store_db, "e-1", {"variants": {}})
    assert (await previous_run(store_db, "e", 2.0))["run_id"] == "e-1"  # type: ignore[index]
    assert [r["run_id"] for r in await list_runs(store_db, "e")] == ["e-2", "e-1"]


async def test_experiment_report_reads_variants_and_feedback(store_db: Database) -> None:
    from portico.config.schema import PorticoConfig
    from portico.evaluation.experiments import ExperimentService

    cfg = PorticoConfig.model_validate({
        "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "x", "base_url": "http://x/v1"}]}],
        "applications": [{"name": "a", "model": "m"}, {"name": "b", "model": "m"}],
        "metrics": [{"name": "helpful", "type": "boolean"}],
        "experiments": [{"name": "e", "application": "a", "bandit": {"metric": "helpful"},
                         "variants": [{"name": "x", "application": "a"}, {"name": "y", "application": "b"}]}],
    })  # fmt: skip
    svc = ExperimentService.build(cfg, {"a": None, "b": None}, store_db)  # type: ignore[dict-item]
    writer = RequestMetaWriter(store_db)
    for i in range(20):
        writer.add(RequestMeta(f"q{i}", time.time(), variant="e:x" if i % 2 else "e:y"))
    writer.add(RequestMeta("other", time.time(), variant="ee:x"))  # another experiment's prefix is not mixed in
    await writer.flush()
    for i in range(20):
        good = i % 2 == 0 or i % 4 == 1  # y (even): always; x (odd): half
        assert await insert_feedback(store_db, _fb(f"e{i}", f"q{i}", "boolean", metric="helpful",
                                                   value_num=1.0 if good else 0.0))  # fmt: skip
    assert await insert_feedback(store_db, _fb("eo", "other", "boolean", metric="helpful", value_num=0.0))
    (report,) = await svc.report()
    v = {x["name"]: x for x in report["variants"]}
    assert v["x"]["requests"] == v["y"]["requests"] == 10
    assert v["y"]["metrics"]["helpful"]["mean"] == 1.0 and v["x"]["metrics"]["helpful"]["mean"] == 0.5
    assert v["x"]["metrics"]["helpful"]["n"] == 10 and "values" not in v["x"]["metrics"]["helpful"]
    assert report["comparisons"][0]["diff"] == 0.5
    await svc.refresh(svc.by_name["e"])
    assert svc.by_name["e"].shares[1] > 0.9
