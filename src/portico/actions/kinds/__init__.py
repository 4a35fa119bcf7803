"""Built-in tool kinds. Each is imported only when a ``tools:`` entry uses it: the MCP SDK and the page extractor
take seconds to import, which every CLI command and test would otherwise pay."""

from __future__ import annotations

import importlib
from typing import Any

from portico.actions.toolbox import KindFactory


def lazy_kind(target: str) -> KindFactory:
    """A factory that imports ``module:function`` on first use and delegates to it."""
    module, _, attr = target.partition(":")

    def factory(cfg: Any, services: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(cfg, services)

    return factory
