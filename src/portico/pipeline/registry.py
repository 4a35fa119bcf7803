"""Named step kinds that an application's ``steps:`` list can use; components register theirs here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from portico.pipeline.services import Services
from portico.pipeline.step import Step

# A factory builds one configured step from its options (the step's mapping minus ``use``) and the shared
# services (gateway, embedder, metrics, storage): ``factory(options, services) -> Step``.
Factory = Callable[[dict[str, Any], Services], Step]
Phase = Literal["before", "after"]  # relative to the generate step


@dataclass(frozen=True, slots=True)
class StepKind:
    name: str
    factory: Factory
    phase: Phase


class StepRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, StepKind] = {}

    def register(self, name: str, factory: Factory, phase: Phase = "before") -> None:
        if name in self._kinds:
            raise ValueError(f"step kind '{name}' is registered twice")
        self._kinds[name] = StepKind(name, factory, phase)

    def get(self, name: str) -> StepKind:
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise KeyError(f"unknown step '{name}' (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._kinds)
