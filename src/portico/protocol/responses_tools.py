"""The Responses API's built-in tools on the wire: the ``file_search``, ``web_search`` and ``mcp`` entries of
``tools``, the output items their calls become (``file_search_call``, ``web_search_call``, ``mcp_list_tools``,
``mcp_call``, ``mcp_approval_request``) and how those items read back as conversation history.

The tools themselves run in Portico's agent loop (``actions.builtin``); a call is reported by the loop as an
event ``{call_id, name, arguments, status, content, data, approval_id}`` that :func:`call_item` turns into the
item a client expects. An approval request's id is the approval queue's id with another prefix
(``mcpr_<hex>`` ↔ ``appr_<hex>``), so an ``mcp_approval_response`` names the parked call directly.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from portico.protocol.errors import InvalidRequest

WEB_SEARCH_TYPES = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                              "web_search_preview_2025_03_11"})  # fmt: skip
SERVER_TOOLS = WEB_SEARCH_TYPES | {"file_search", "mcp"}
# What ``include`` may ask for; the rest of its values are accepted and have nothing to add here.
FILE_SEARCH_RESULTS = "file_search_call.results"
WEB_SEARCH_SOURCES = "web_search_call.action.sources"


class FileSearchSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(default_factory=list)
    max_num_results: int = Field(default=10, ge=1, le=50)


class ToolNames(BaseModel):
    model_config = ConfigDict(extra="allow")
    tool_names: list[str] | None = None


class ApprovalFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    always: ToolNames | None = None
    never: ToolNames | None = None


class McpSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["mcp"]
    server_label: str = Field(min_length=1)
    server_url: str | None = None
    allowed_tools: list[str] | ToolNames | None = None
    # OpenAI's default: every call waits for the client's approval.
    require_approval: Literal["always", "never"] | ApprovalFilter = "always"

    def allowed(self) -> list[str] | None:
        a = self.allowed_tools
        return a.tool_names if isinstance(a, ToolNames) else a

    def needs_approval(self, name: str) -> bool:
        r = self.require_approval
        if isinstance(r, str):
            return r == "always"
        if r.never is not None and name in (r.never.tool_names or ()):
            return False
        if r.always is not None and (r.always.tool_names is None or name in r.always.tool_names):
            return True
        # Unnamed tools: a filter naming only "always" tools lets the rest run; otherwise they wait (the safe side).
        return not (r.always is not None and r.never is None)


def server_tools(tools: list[dict[str, Any]] | None) -> list[tuple[int, FileSearchSpec | McpSpec | dict[str, Any]]]:
    """(index in ``tools``, spec) of each built-in tool that runs on the server; a bad entry is a 400 naming it."""
    out: list[tuple[int, Any]] = []
    for i, tool in enumerate(tools or []):
        kind = tool.get("type")
        try:
            if kind == "file_search":
                if tool.get("filters"):
                    raise InvalidRequest("file_search filters are not supported", param=f"tools[{i}].filters")
                out.append((i, FileSearchSpec.model_validate(tool)))
            elif kind == "mcp":
                if tool.get("connector_id"):
                    raise InvalidRequest("connectors are not available; name a configured MCP server in "
                                         "server_label", param=f"tools[{i}].connector_id")  # fmt: skip
                out.append((i, McpSpec.model_validate(tool)))
            elif kind in WEB_SEARCH_TYPES:
                out.append((i, tool))
        except ValidationError as e:
            err = e.errors()[0]
            field = f".{err['loc'][0]}" if err["loc"] else ""
            raise InvalidRequest(f"tools[{i}]{field}: {err['msg']}", param=f"tools[{i}]{field}") from None
    return out


# ---- output items ----------------------------------------------------------------------------------------


def _hex() -> str:
    return uuid.uuid4().hex


def approval_request_id(approval_id: str) -> str:
    return "mcpr_" + approval_id.removeprefix("appr_")


def approval_id_of(request_id: str) -> str:
    return "appr_" + request_id.removeprefix("mcpr_")


def list_tools_item(label: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": f"mcpl_{_hex()}", "type": "mcp_list_tools", "server_label": label, "tools": tools, "error": None}


def _arguments(raw: Any) -> str:
    return raw if isinstance(raw, str) else orjson.dumps(raw or {}).decode()


def _query(arguments: str) -> str:
    try:
        return str(orjson.loads(arguments or "{}").get("query") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def call_item(event: dict[str, Any], kind: str, label: str | None, remote: str | None,
              include: frozenset[str]) -> dict[str, Any]:  # fmt: skip
    """One reported call as its output item. ``kind``: file_search | web_search | mcp. Status ``in_progress``: the
    item of a call that has just started."""
    status, args = event["status"], _arguments(event.get("arguments"))
    ok = status == "ok"
    state = "completed" if ok else "in_progress" if status == "in_progress" else "failed"
    if kind == "mcp" and status == "pending_approval" and event.get("approval_id"):
        return {"id": approval_request_id(event["approval_id"]), "type": "mcp_approval_request",
                "server_label": label, "name": remote, "arguments": args}  # fmt: skip
    if kind == "mcp":
        text = event.get("content")
        item = {"id": f"mcp_{_hex()}", "type": "mcp_call", "status": state, "server_label": label, "name": remote,
                "arguments": args, "output": text if ok else None,
                "error": text if state == "failed" else None}  # fmt: skip
        if event.get("approval_id"):
            item["approval_request_id"] = approval_request_id(event["approval_id"])
        return item
    data = event.get("data")
    if kind == "file_search":
        results = None
        if FILE_SEARCH_RESULTS in include and isinstance(data, list):
            results = [{"file_id": h.get("document_id"), "filename": h.get("title") or h.get("source"),
                        "score": h.get("score"), "text": h.get("text"),
                        "attributes": {"knowledge_base": h.get("kb"), "chunk_id": h.get("id")}}
                       for h in data]  # fmt: skip
        return {"id": f"fs_{_hex()}", "type": "file_search_call", "status": state,
                "queries": [_query(args)], "results": results}  # fmt: skip
    action: dict[str, Any] = {"type": "search", "query": _query(args)}
    if WEB_SEARCH_SOURCES in include and isinstance(data, dict):
        action["sources"] = [{"type": "url", "url": r.get("url")} for r in data.get("results") or ()]
    return {"id": f"ws_{_hex()}", "type": "web_search_call", "status": state, "action": action}


def start_events(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The kind-specific events streamed after ``output_item.added`` as a call starts (name, fields)."""
    kind = item["type"]
    if kind in ("file_search_call", "web_search_call"):
        return [(f"response.{kind}.in_progress", {}), (f"response.{kind}.searching", {})]
    if kind == "mcp_list_tools":
        return [("response.mcp_list_tools.in_progress", {})]
    if kind == "mcp_call":
        return [("response.mcp_call.in_progress", {}),
                ("response.mcp_call_arguments.delta", {"delta": item["arguments"]}),
                ("response.mcp_call_arguments.done", {"arguments": item["arguments"]})]  # fmt: skip
    return []


def end_events(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The kind-specific events streamed before ``output_item.done`` as a call ends (name, fields)."""
    kind = item["type"]
    if kind in ("file_search_call", "web_search_call", "mcp_list_tools"):
        return [(f"response.{kind}.completed", {})]
    if kind == "mcp_call":
        return [("response.mcp_call.completed" if item["status"] == "completed" else "response.mcp_call.failed", {})]
    return []


def item_events(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The kind-specific events between ``output_item.added`` and ``output_item.done`` of a call reported whole."""
    return start_events(item) + end_events(item)


# ---- history -----------------------------------------------------------------------------------------------


def history_messages(item: Any) -> list[dict[str, Any]]:
    """A built-in tool's item from an earlier turn as chat messages: an MCP call (or one waiting for approval) is
    the tool call and what it returned (or that it waits, with the approval id the agent loop looks up); list and
    search items add nothing the final answer does not already say."""
    extra = getattr(item, "model_extra", None) or {}
    kind = item.type
    if kind not in ("mcp_call", "mcp_approval_request"):
        return []
    label, name = str(extra.get("server_label") or "mcp"), str(extra.get("name") or "tool")
    call_id = "call_" + str(extra.get("id") or _hex()).split("_")[-1][:24]
    call = {"id": call_id, "type": "function",
            "function": {"name": f"{label}_{name}", "arguments": _arguments(extra.get("arguments"))}}  # fmt: skip
    if kind == "mcp_call":
        text = str(extra.get("output") or extra.get("error") or "")
    else:
        text = (f"The action '{name}' was not run: it waits for the user to approve it (approval id "
                f"{approval_id_of(str(extra.get('id') or ''))}).")  # fmt: skip
    return [{"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": text}]  # fmt: skip


def approval_decisions(items: list[Any]) -> dict[str, list[str]] | None:
    """``mcp_approval_response`` items as the agent loop's in-band decisions."""
    out: dict[str, list[str]] = {"approve": [], "deny": []}
    for i, item in enumerate(items):
        if getattr(item, "type", None) != "mcp_approval_response":
            continue
        extra = item.model_extra or {}
        rid, approve = extra.get("approval_request_id"), extra.get("approve")
        if not isinstance(rid, str) or not rid.startswith("mcpr_") or not isinstance(approve, bool):
            raise InvalidRequest("mcp_approval_response needs approval_request_id (an mcpr_ id) and approve",
                                 param=f"input[{i}]")  # fmt: skip
        out["approve" if approve else "deny"].append(approval_id_of(rid))
    return out if out["approve"] or out["deny"] else None
