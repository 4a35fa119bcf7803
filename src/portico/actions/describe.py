"""What the admin API and the CLI show of the configured tools: names, kinds, write flags, parameters, each
tool's safe settings (``Tool.public``: never headers or tokens) and each source's health."""

from __future__ import annotations

from typing import Any

from portico.actions.toolbox import Toolbox


def describe(toolbox: Toolbox) -> dict[str, Any]:
    tools, sources = [], []
    for s in toolbox.sources:
        listed = s.tools()
        sources.append({"name": s.name, "kind": s.kind, "health": s.health(), "tools": [t.name for t in listed]})
        for t in listed:
            tools.append({"name": t.name, "kind": t.kind, "source": s.name, "description": t.description,
                          "write": t.write, "timeout": t.timeout, "parameters": t.parameters,
                          "settings": t.public()})  # fmt: skip
    return {"object": "list", "data": tools, "sources": sources}
