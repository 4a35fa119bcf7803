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
