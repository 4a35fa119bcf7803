"""``eval.yaml``: a dataset x variants matrix, the scorers, pairwise judges and the gates.

::

    name: helper-prompts
    dataset: evals/helper.jsonl        # or {name: helper, version: 3} from the database
    repeats: 3                         # per item and variant: pass@k, pass^k, flakiness
    concurrency: 4
    variants:
      - {name: v1, model: helper}                                  # an application as configured
      - {name: v2, model: helper, version: "2", system_prompt: "Answer in one word."}
      - {name: small, model: local, params: {temperature: 0}}
    scorers:
      - {type: contains}
      - {type: llm_judge, model: local, rubric: "Is the answer correct and concise?"}
    pairwise: [{model: local, variants: [v1, v2]}]
    gates:
      - {scorer: contains, variant: v2, min: 0.8}
      - {scorer: contains, variant: v2, baseline: previous, max_drop: 0.05}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_STRICT = ConfigDict(extra="forbid")

ScorerType = Literal[
    "equals",
    "contains",
    "regex",
    "json_schema",
    "numeric",
    "embedding_similarity",
    "hit_at_k",
    "ndcg_at_k",
    "citation_coverage",
    "tool_called",
    "tool_arguments",
    "steps",
    "llm_judge",
]


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str = Field(min_length=1, max_length=200)
    model: str  # an application or a model name
    version: str | None = None  # a label for the application version this variant stands for
    system_prompt: str | None = None  # replaces the application's system_prompt step text (or adds one)
    steps: list[dict[str, Any]] | None = None  # replaces the application's steps (in-process runs only)
    params: dict[str, Any] = Field(default_factory=dict)  # request fields: temperature, max_tokens, tools…

    @property
    def overrides_pipeline(self) -> bool:
        return self.system_prompt is not None or self.steps is not None


class ScorerSpec(BaseModel):
    """One scorer; its options depend on ``type`` (see evaluation.scorers). Scores are in [0, 1]; a cell passes a
    scorer when its score reaches ``pass_at`` (default 0.5, so boolean scorers pass on 1)."""

    model_config = ConfigDict(extra="allow")
    type: ScorerType
    name: str | None = None
    pass_at: float = Field(default=0.5, ge=0, le=1)

    @property
    def label(self) -> str:
        return self.name or self.type

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PairwiseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str  # the judge: any configured model
    variants: list[str] = Field(min_length=2, max_length=2)
    rubric: str = "Which answer responds to the user better: more correct, more helpful, more concise?"
    name: str | None = None
    max_tokens: int = Field(default=320, ge=16)  # room for a short explanation and the verdict

    @property
    def label(self) -> str:
        return self.name or f"pairwise:{self.variants[0]}-vs-{self.variants[1]}"


class GateSpec(BaseModel):
    model_config = _STRICT
    scorer: str
    variant: str
    statistic: Literal["mean", "pass_at_k", "pass_all_k"] = "mean"
    min: float | None = None  # absolute threshold
    baseline: str | None = None  # 'previous' (the last finished run of this eval) or a run id
    max_drop: float = Field(default=0.0, ge=0)  # allowed regression vs the baseline

    @model_validator(mode="after")
    def _some_check(self) -> GateSpec:
        if self.min is None and self.baseline is None:
            raise ValueError("a gate needs min, baseline, or both")
        return self


class DatasetRef(BaseModel):
    model_config = _STRICT
    name: str
    version: int | None = None  # None: the newest


class EvalSpec(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str | DatasetRef
    variants: list[VariantSpec] = Field(min_length=1)
    scorers: list[ScorerSpec] = Field(default_factory=list)
    pairwise: list[PairwiseSpec] = Field(default_factory=list)
    gates: list[GateSpec] = Field(default_factory=list)
    repeats: int = Field(default=1, ge=1, le=100)
    concurrency: int = Field(default=4, ge=1, le=256)
    timeout_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _refs(self) -> EvalSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be distinct")
        labels = [s.label for s in self.scorers] + [p.label for p in self.pairwise]
        if len(set(labels)) != len(labels):
            raise ValueError("scorers: two scorers share a name; give one a 'name'")
        for i, p in enumerate(self.pairwise):
            for v in p.variants:
                if v not in names:
                    raise ValueError(f"pairwise[{i}].variants: unknown variant '{v}'")
        for i, g in enumerate(self.gates):
            if g.variant not in names:
                raise ValueError(f"gates[{i}].variant: unknown variant '{g.variant}'")
            if g.scorer not in [s.label for s in self.scorers]:
                raise ValueError(f"gates[{i}].scorer: unknown scorer '{g.scorer}'")
        return self


class SpecError(ValueError):
    pass


def load_spec(path: str | Path) -> tuple[EvalSpec, Path]:
    """The spec and the directory relative paths in it (the dataset file) are resolved against."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"{p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    try:
        return EvalSpec.model_validate(data), p.parent
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise SpecError(f"{p}: {loc + ': ' if loc else ''}{first['msg'].removeprefix('Value error, ')}") from None
