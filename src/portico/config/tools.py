"""The ``tools:`` config entry: the fields every kind shares; kind-specific fields stay as extras and are
validated by the kind's own options model when the runtime builds it (like a pipeline step's options)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # what OpenAI accepts as a function name


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: float | str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"24h"`` or ``"7d"``."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"'{value}' is not a duration (use seconds or 30s, 15m, 24h, 7d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


class ApprovalConfig(BaseModel):
    """Who must say yes before a write tool runs."""

    model_config = ConfigDict(extra="forbid")
    # operator: an admin (API, CLI, dashboard); user: the calling key may approve its own actions; none: no one
    # (only with the tool's i_understand_unapproved_writes: true).
    by: Literal["operator", "user", "none"] = "operator"
    expires: float = 86400.0  # seconds (or 30m, 24h, 7d) a pending action may wait before it can't be approved
    wait: float = Field(default=0.0, ge=0, le=600)  # seconds the model run waits for a decision before it ends
    webhook: str | None = None  # POSTed the action and its result after it ran

    @field_validator("expires", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("expires must be positive")
        return seconds


class ToolConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME_PATTERN)
    kind: str = Field(min_length=1)
    description: str = ""
    write: bool = False  # changes something outside Portico: never runs without an approval decision
    timeout: float = Field(default=30.0, gt=0, le=3600)
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments; kinds may derive their own
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)  # for write tools
    i_understand_unapproved_writes: bool = False  # the only way to allow approval.by: none

    @model_validator(mode="after")
    def _unapproved_writes(self) -> ToolConfig:
        if self.approval.by == "none" and self.write and not self.i_understand_unapproved_writes:
            raise ValueError(
                f"tool '{self.name}' writes and has approval.by: none; that lets a model (or a prompt injection) run "
                "it without a human. Set i_understand_unapproved_writes: true on the tool to allow it."
            )
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The kind-specific fields."""
        return dict(self.model_extra or {})
