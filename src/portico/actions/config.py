"""The ``tools:`` config entry: the fields every kind shares; kind-specific fields stay as extras and are
validated by the kind's own options model when the runtime builds it (like a pipeline step's options)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from portico.actions.tool import NAME_PATTERN


class ToolConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME_PATTERN)
    kind: str = Field(min_length=1)
    description: str = ""
    write: bool = False  # changes something outside Portico: never runs without an approval decision
    timeout: float = Field(default=30.0, gt=0, le=3600)
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments; kinds may derive their own

    @property
    def options(self) -> dict[str, Any]:
        """The kind-specific fields."""
        return dict(self.model_extra or {})
