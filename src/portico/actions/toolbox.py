"""The runtime's tools: built once from the ``tools:`` config through a registry of kinds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from portico.actions.execute import ApprovalGate, NoApprovalQueue
from portico.actions.tool import Tool, ToolSource

log = logging.getLogger("portico.actions")

# A kind's factory: (the tools: entry as a ToolConfig, the runtime's services) -> a ToolSource.
KindFactory = Callable[[Any, Any], ToolSource]


class ToolKinds:
    """Registered tool kinds (``kind:`` in a ``tools:`` entry)."""

    def __init__(self) -> None:
        self._kinds: dict[str, KindFactory] = {}

    def register(self, kind: str, factory: KindFactory) -> None:
        if kind in self._kinds:
            raise ValueError(f"tool kind '{kind}' is registered twice")
        self._kinds[kind] = factory

    def build(self, cfg: Any, services: Any) -> ToolSource:
        factory = self._kinds.get(cfg.kind)
        if factory is None:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise ValueError(f"unknown tool kind '{cfg.kind}' (known: {known})")
        return factory(cfg, services)

    def names(self) -> list[str]:
        return sorted(self._kinds)


class Toolbox:
    """Every configured tool source; looks tools up by name for the agent step, the admin API and the CLI."""

    def __init__(self, sources: list[ToolSource], gate: ApprovalGate | None = None) -> None:
        self.sources = sources
        # Replaced by the approval queue when one is configured; until then write tools never run.
        self.gate: ApprovalGate = gate or NoApprovalQueue()

    @classmethod
    def build(cls, configs: list[Any], kinds: ToolKinds, services: Any) -> Toolbox:
        sources = []
        for i, cfg in enumerate(configs):
            try:
                sources.append(kinds.build(cfg, services))
            except Exception as e:
                raise ValueError(f"tools[{i}] ({cfg.name}): {e}") from None
        return cls(sources)

    async def start(self) -> None:
        results = await asyncio.gather(*(s.start() for s in self.sources), return_exceptions=True)
        for s, r in zip(self.sources, results, strict=True):
            if isinstance(r, BaseException):
                log.error("tool source failed to start", extra={"tool": s.name, "error": f"{type(r).__name__}: {r}"})

    async def close(self) -> None:
        for s in self.sources:
            try:
                await s.close()
            except Exception as e:  # one broken server must not keep the others open
                log.warning("tool source failed to close", extra={"tool": s.name, "error": str(e)})

    def get(self, name: str) -> Tool | None:
        for s in self.sources:
            for t in s.tools():
                if t.name == name:
                    return t
        return None

    def source(self, name: str) -> ToolSource | None:
        return next((s for s in self.sources if s.name == name), None)

    def declares(self, name: str) -> bool:
        """A tool name or a source name that agent steps may list (checked at build time)."""
        return any(s.name == name or s.declares(name) for s in self.sources)

    def all(self) -> list[Tool]:
        return [t for s in self.sources for t in s.tools()]

    def expand(self, names: list[str]) -> list[Tool]:
        """The tools that ``names`` select: a tool's own name, or a source's name for every tool it has now
        (an MCP server's tool list may change while Portico runs, so this is asked per run)."""
        out: list[Tool] = []
        for s in self.sources:
            whole = s.name in names
            out.extend(t for t in s.tools() if whole or t.name in names)
        return out
