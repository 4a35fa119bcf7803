"""How long the database keeps traces and usage detail, and how the background purge runs.

Stored responses have their own setting (``responses.retention_days``); the same purge job removes them once
expired.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Traces (prompts, answers, spans) and the per-request metadata feedback is matched against; null keeps them.
    traces_days: float | None = Field(default=30.0, gt=0)
    # Usage rows (one per request; reports and budgets read them); null keeps them. At least 31 days so a monthly
    # budget always sees its whole month; rows of keys with a lifetime ("total") budget are never purged.
    usage_days: float | None = Field(default=None, ge=31)
    interval_seconds: float = Field(default=3600.0, gt=0)  # between purge runs (the first one after this too)
    batch_size: int = Field(default=1000, ge=1)  # rows per DELETE: short transactions that never stall writers
