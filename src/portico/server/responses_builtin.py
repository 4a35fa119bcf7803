"""The built-in tools of one ``/v1/responses`` request: the request's ``file_search``/``web_search``/``mcp`` entries
made into tools for the agent loop (``actions.builtin``), the ``mcp_list_tools`` items the response starts with,
the in-band approval decisions of its ``mcp_approval_response`` items, and each reported call as its output item
(``protocol.responses_tools``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from portico.actions.approvals.inband import DECISIONS
from portico.actions.builtin import Builtin, file_search, mcp_tools, web_search
from portico.actions.permissions import tool_allowed
from portico.actions.tool import Tool
from portico.gateway.control import Caller
from portico.pipeline.context import REQUEST_TOOLS, TOOL_RUNNER
from portico.protocol.responses import InputItem, ResponsesRequest
from portico.protocol.responses_out import text_item
from portico.protocol.responses_tools import (
    FileSearchSpec,
    McpSpec,
    approval_decisions,
    call_item,
    list_tools_item,
    server_tools,
)
from portico.runtime import Runtime


@dataclass(slots=True)
class Builtins:
    tools: list[Tool] = field(default_factory=list)
    kinds: dict[str, Builtin] = field(default_factory=dict)  # tool name -> what it stands for
    listed: list[dict[str, Any]] = field(default_factory=list)  # mcp_list_tools items, first in the output
    include: frozenset[str] = frozenset()
    decisions: dict[str, list[str]] | None = None

    def state(self, rt: Runtime) -> dict[str, Any]:
        """What the request context carries so the generate (or agent) step runs the loop with these tools. An
        answer from tools is not cached: the exact cache's key knows nothing of them."""
        if not self.tools and not self.decisions:
            return {}
        out: dict[str, Any] = {REQUEST_TOOLS: self.tools, TOOL_RUNNER: rt.tool_runner, "http.cache_control": "no-store"}
        if self.decisions:
            out[DECISIONS] = self.decisions
        return out

    def item(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if "said" in event:  # text of a turn that went on to call tools: a message before their items
            return text_item(event["said"])
        b = self.kinds.get(event["name"])
        if b is None:  # an application's own server tool: not an item of the Responses API
            return None
        return call_item(event, b.kind, b.server_label, b.remote_name, self.include)

    def items(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*self.listed, *(i for e in events if (i := self.item(e)) is not None)]


def _listed_before(history: list[InputItem], label: str) -> bool:
    return any(getattr(i, "type", None) == "mcp_list_tools" and (i.model_extra or {}).get("server_label") == label
               for i in history)  # fmt: skip


async def builtins(rt: Runtime, req: ResponsesRequest, history: list[InputItem], caller: Caller) -> Builtins:
    """The request's server tools that this caller's key may use (the agent loop checks again before each call)."""
    out = Builtins(include=frozenset(req.include or ()), decisions=approval_decisions(req.items()))
    who = {"key_id": caller.key.id, "tools": caller.key.tools} if caller.key is not None else {}
    for i, spec in server_tools(req.tools):
        param = f"tools[{i}]"
        if isinstance(spec, FileSearchSpec):
            tool = await file_search(rt, spec.vector_store_ids, spec.max_num_results, f"{param}.vector_store_ids")
            pairs = [(tool, Builtin("file_search"))]
        elif isinstance(spec, McpSpec):
            pairs = mcp_tools(rt.tools, spec.server_label, spec.server_url, spec.allowed(), spec.needs_approval,
                              param)  # fmt: skip
            pairs = [(t, b) for t, b in pairs if tool_allowed(who, t)]
            if not _listed_before([*history, *req.items()], spec.server_label):
                listing = [{"name": b.remote_name, "description": t.description, "input_schema": t.parameters,
                            "annotations": None} for t, b in pairs]  # fmt: skip
                out.listed.append(list_tools_item(spec.server_label, listing))
        else:
            pairs = [(web_search(rt.tools, f"{param}.type"), Builtin("web_search"))]
        for tool, b in pairs:
            if tool.name not in out.kinds:
                out.tools.append(tool)
                out.kinds[tool.name] = b
    return out
