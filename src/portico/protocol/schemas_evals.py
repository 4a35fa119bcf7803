"""Response shapes of feedback, evals, datasets, experiments and pipeline graphs, for the OpenAPI document. Like
``schemas.py``: descriptions of the dicts the handlers build, never instantiated per request, open to extra
fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.protocol.schemas import list_of

_OPEN = ConfigDict(extra="allow")


class Feedback(BaseModel):
    model_config = _OPEN
    object: Literal["feedback"]
    id: str
    created: float
    metric: str
    kind: str = Field(description="the metric's type (boolean, float, category, comment, demonstration) or pairwise")
    request_id: str
    value: Any = Field(default=None, description="absent for pairwise feedback")
    pair: list[str] | None = Field(default=None, description="pairwise only")
    winner: str | None = Field(default=None, description="pairwise only: one of pair, or tie")
    user: str | None
    session: str | None
    key_name: str | None
    application: str | None
    version: str | None
    model: str | None
    duplicate: bool = Field(description="true when this feedback_id was already stored with the same content")


class EvalRunBrief(BaseModel):
    model_config = _OPEN
    run_id: str
    name: str
    created_at: float
    finished_at: float | None
    status: Literal["running", "done"]
    dataset: str
    dataset_version: int
    dataset_hash: str
    summary: dict[str, Any] | None = Field(description="{variants: {variant: {scorer: mean}}, gates: pass|fail|null}")


EvalRunBriefList = list_of(EvalRunBrief)


class EvalResult(BaseModel):
    model_config = _OPEN
    run_id: str
    item_id: str
    variant: str
    repeat: int
    ts: float
    output: dict[str, Any] | None
    scores: dict[str, float | None]
    details: dict[str, Any] | None
    cost_usd: float | None
    latency_ms: float | None
    tokens: int | None
    error: str | None


class EvalPair(BaseModel):
    model_config = _OPEN
    run_id: str
    judge: str
    item_id: str
    a: str
    b: str
    winner: Literal["a", "b", "tie"]
    details: dict[str, Any] | None


class EvalRun(EvalRunBrief):
    object: Literal["eval.run"]
    spec: dict[str, Any]
    summary: dict[str, Any] | None = Field(description="per variant and scorer statistics, comparisons, gates")
    results: list[EvalResult]
    pairs: list[EvalPair]


class Dataset(BaseModel):
    model_config = _OPEN
    name: str
    version: int
    hash: str
    created_at: float
    items: int
    source: str | None


DatasetList = list_of(Dataset)


class DatasetFromTraces(BaseModel):
    model_config = _OPEN
    object: Literal["dataset"]
    name: str | None
    data: list[dict[str, Any]] = Field(description="the items: input messages, expected answer, metadata")
    version: int | None = Field(default=None, description="set when a name was given and there were items")
    hash: str | None = None


class ExperimentReport(BaseModel):
    model_config = _OPEN
    name: str
    application: str
    sticky: Literal["user", "key", "session", "none"]
    bandit: dict[str, Any] | None
    variants: list[dict[str, Any]] = Field(description="name, application, share, requests, metrics with 95% CIs")
    comparisons: list[dict[str, Any]] = Field(description="each variant against the first, per metric")


ExperimentReportList = list_of(ExperimentReport)


class PipelineGraph(BaseModel):
    model_config = _OPEN
    application: str
    model: str
    version: str
    steps: list[dict[str, Any]] = Field(
        description="nodes: {kind: step|parallel|branch|loop|call, span, path, …}; branches hold arms, loops and "
                    "calls their steps")  # fmt: skip



class Application(BaseModel):
    model_config = _OPEN
    object: Literal["application"] = "application"
    name: str
    model: str
    version: str
    steps: int = Field(description="steps in the pipeline, counting those inside branches, loops and calls")
    experiment: dict[str, Any] | None = Field(
        description="the experiment splitting this application's traffic: name, sticky, bandit, variants")


class ApplicationList(BaseModel):
    model_config = _OPEN
    object: Literal["list"] = "list"
    data: list[Application]
