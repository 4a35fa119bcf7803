"""Settings of ``/v1/responses``: how long stored responses are kept."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ResponsesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Stored responses (store: true) are readable, and usable as previous_response_id, for this many days;
    # null keeps them until deleted. OpenAI keeps them 30 days.
    retention_days: float | None = Field(default=30.0, gt=0)
