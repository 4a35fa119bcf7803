"""Which tools a caller may use: checked before a tool is offered to a model and again before it runs.

A virtual key lists tool names or globs (``tools: [lookup_*, send_email]``); a key without a list may use the
read-only tools and no write tool. A request without a key only exists when auth is off (loopback, one user): it
may use every tool — writes still wait for approval.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from portico.actions.tool import Tool


def tool_allowed(caller: dict[str, Any], tool: Tool) -> bool:
    if caller.get("key_id") is None:
        return True
    patterns = caller.get("tools")
    if patterns is None:
        return not tool.write
    return any(fnmatchcase(tool.name, p) for p in patterns)
