"""Actions: tools a model run may call (read-only lookups and, behind approval, writes).

The contract lives in ``tool`` (what a tool is), ``execute`` (how one call is validated, gated and run) and
``toolbox`` (the configured tools of a runtime, built from the ``tools:`` config by kind).
"""

from portico.actions.execute import ApprovalGate, CallOutcome, NoApprovalQueue, run_tool
from portico.actions.tool import Tool, ToolContext, ToolResult, ToolSource
from portico.actions.toolbox import Toolbox, ToolKinds

__all__ = [
    "ApprovalGate",
    "CallOutcome",
    "NoApprovalQueue",
    "Tool",
    "ToolContext",
    "ToolKinds",
    "ToolResult",
    "ToolSource",
    "Toolbox",
    "run_tool",
]
