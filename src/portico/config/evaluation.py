"""Config of the feedback metrics (``metrics:`` in portico.yaml).

A metric names what people (or programs) may say about a served request: a boolean (helpful?), a float in a range
(score 0-5), a category from a fixed list, a free comment, or a corrected answer (a demonstration). Names and
categories come only from here, so Prometheus labels built from them stay bounded.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MetricType = Literal["boolean", "float", "category", "comment", "demonstration"]


class MetricConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    type: MetricType
    min: float | None = None  # float only
    max: float | None = None
    categories: list[str] | None = None  # category only

    @model_validator(mode="after")
    def _shape(self) -> MetricConfig:
        if self.type == "float":
            if self.min is not None and self.max is not None and self.min >= self.max:
                raise ValueError(f"metric '{self.name}': min must be below max")
        elif self.min is not None or self.max is not None:
            raise ValueError(f"metric '{self.name}': min/max apply only to type float")
        if self.type == "category":
            if not self.categories or len(set(self.categories)) != len(self.categories):
                raise ValueError(f"metric '{self.name}': a category metric needs a list of distinct categories")
        elif self.categories is not None:
            raise ValueError(f"metric '{self.name}': categories apply only to type category")
        return self

    @property
    def numeric(self) -> bool:
        """Aggregated as a mean (booleans count as 1/0)."""
        return self.type in ("boolean", "float")


def _unique(metrics: list[MetricConfig]) -> list[MetricConfig]:
    seen: set[str] = set()
    for i, m in enumerate(metrics):
        if m.name in seen:
            raise ValueError(f"[{i}].name: '{m.name}' is defined twice")
        seen.add(m.name)
    return metrics


Metrics = Annotated[list[MetricConfig], AfterValidator(_unique)]


class VariantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    application: str  # the application that serves this variant's share
    weight: float = Field(default=1.0, gt=0)


class BanditConfig(BaseModel):
    """Thompson sampling on a boolean feedback metric: each variant's share becomes its probability of being the
    best under Beta(1 + true, 1 + false), recomputed every ``refresh_seconds``; ``min_share`` keeps exploring."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    refresh_seconds: float = Field(default=30.0, gt=0)
    min_share: float = Field(default=0.05, ge=0, lt=0.5)


class ExperimentConfig(BaseModel):
    """Requests for ``application`` are split between the variants' applications (the application itself may be
    one of them). Sticky: the same user (or key, or session) keeps its variant while the weights stay."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    application: str
    variants: list[VariantConfig] = Field(min_length=2)
    sticky: Literal["user", "key", "session", "none"] = "user"
    bandit: BanditConfig | None = None

    @model_validator(mode="after")
    def _distinct(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment '{self.name}': variant names must be distinct")
        return self


def _unique_experiments(experiments: list[ExperimentConfig]) -> list[ExperimentConfig]:
    names: set[str] = set()
    apps: set[str] = set()
    for i, e in enumerate(experiments):
        if e.name in names:
            raise ValueError(f"[{i}].name: '{e.name}' is defined twice")
        if e.application in apps:
            raise ValueError(f"[{i}].application: '{e.application}' already has an experiment")
        names.add(e.name)
        apps.add(e.application)
    return experiments


Experiments = Annotated[list[ExperimentConfig], AfterValidator(_unique_experiments)]
