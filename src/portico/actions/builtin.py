"""Tools a request brings: the Responses API's built-in ``file_search``, ``web_search`` and ``mcp`` tools made into
:class:`Tool` objects for one agent run, and the runner that answers such a request through the agent loop.

Nothing here reaches a server the operator did not configure: ``file_search`` searches Portico's knowledge bases
(``vector_store_ids`` are their names), ``web_search`` is a configured ``web_search`` tool, and an ``mcp`` tool's
``server_label`` names a configured ``kind: mcp`` entry (a ``server_url``, if sent, must be that entry's URL) —
a client can never make Portico connect to an address of its choosing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portico.actions.agent import AgentOptions, AgentStep
from portico.actions.kinds.knowledge import KnowledgeOptions, KnowledgeTool
from portico.actions.loop import AgentRun
from portico.actions.tool import Tool, ToolContext, ToolResult
from portico.config.tools import ToolConfig
from portico.context.knowledge.manager import UnknownKnowledgeBase
from portico.context.knowledge.service import knowledge_of
from portico.pipeline.context import RequestContext
from portico.protocol.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Builtin:
    """What a request tool stands for, so each call can be shown as its Responses output item."""

    kind: str  # file_search | web_search | mcp
    server_label: str | None = None
    remote_name: str | None = None  # the MCP server's own name of the tool


class ApprovalFirst(Tool):
    """A tool whose client asked to approve each call first (``require_approval``): the call is parked in the
    approval queue like a write. A read-only tool's call is then the client's to decide (``approval_by: user``);
    a write keeps the approver its config names."""

    def __init__(self, inner: Tool) -> None:
        super().__init__(inner.name, inner.description, inner.parameters, write=inner.write, timeout=inner.timeout)
        self.kind = inner.kind
        self.inner = inner
        self.needs_approval = True
        self.approval_by = None if inner.write else "user"

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.inner.call(arguments, ctx)


class FileSearch(Tool):
    """One search over several knowledge bases: each base's hits, merged by score."""

    kind = "knowledge"

    def __init__(self, bases: list[KnowledgeTool], k: int) -> None:
        names = ", ".join(t.options.kb for t in bases)
        params = {"type": "object", "properties": {"query": {"type": "string", "minLength": 1,
                  "description": "What to search for, in plain words"}}, "required": ["query"]}  # fmt: skip
        super().__init__("file_search", f"Search the files of: {names}. Returns passages with ids to cite.", params)
        self.bases = bases
        self.k = k

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        hits: list[dict[str, Any]] = []
        for base in self.bases:
            r = await base.call({"query": arguments["query"], "k": self.k}, ctx)
            if r.is_error:
                return r
            hits += [dict(h, kb=base.options.kb) for h in r.data or ()]
        hits = sorted(hits, key=lambda h: -float(h.get("score") or 0))[: self.k]
        if not hits:
            return ToolResult("No passages match this query.", data=[])
        blocks = [f"[{h['id']}] {h.get('title') or h.get('source') or h['document_id']}\n{h['text']}" for h in hits]
        citations = [{"id": h["id"], "document_id": h["document_id"], "title": h.get("title"),
                      "source": h.get("source"), "score": h["score"]} for h in hits]  # fmt: skip
        return ToolResult("Passages (cite them by their id in brackets):\n\n" + "\n\n".join(blocks), data=hits,
                          citations=citations)  # fmt: skip


async def file_search(services: Any, kb_names: list[str], k: int, param: str) -> Tool:
    if not kb_names:
        raise InvalidRequest("file_search needs vector_store_ids (names of knowledge bases)", param=param)
    kbs = knowledge_of(services)
    mode = "hybrid" if services.cfg.embedder_model is not None else "bm25"
    bases = []
    for i, name in enumerate(kb_names):
        try:
            await kbs.get(name)
        except UnknownKnowledgeBase:
            raise InvalidRequest(f"No knowledge base named '{name}'", param=f"{param}[{i}]",
                                 code="vector_store_not_found") from None  # fmt: skip
        options = KnowledgeOptions(kb=name, mode=mode, k=k, max_k=max(k, 20))
        bases.append(KnowledgeTool(ToolConfig(name="file_search", kind="knowledge"), options, kbs, services.embedder))
    return FileSearch(bases, k)


def web_search(toolbox: Any, param: str) -> Tool:
    """The configured ``web_search`` tool (the first, if there are several)."""
    tool = next((t for t in toolbox.all() if t.kind == "web_search"), None)
    if tool is None:
        raise InvalidRequest("web_search is not available here: no tool of kind web_search is configured",
                             param=param, code="unsupported_tool")  # fmt: skip
    return tool


def mcp_tools(toolbox: Any, label: str, url: str | None, allowed: list[str] | None, approve: Any,
              param: str) -> list[tuple[Tool, Builtin]]:  # fmt: skip
    """The tools of the configured MCP server ``label`` that the request allows, each wrapped when its calls need
    the client's approval first (``approve(remote_name) -> bool``)."""
    source = toolbox.source(label)
    if source is None or source.kind != "mcp":
        known = ", ".join(sorted(s.name for s in toolbox.sources if s.kind == "mcp")) or "none"
        raise InvalidRequest(f"No MCP server '{label}' is configured here (configured: {known}); server_label "
                             "names a tools: entry of kind mcp", param=f"{param}.server_label",
                             code="mcp_server_not_allowed")  # fmt: skip
    configured = getattr(source.options, "url", None)
    if url is not None and url.rstrip("/") != (configured or "").rstrip("/"):
        raise InvalidRequest(f"server_url is not the URL configured for '{label}'; Portico connects only to "
                             "configured MCP servers", param=f"{param}.server_url",
                             code="mcp_server_not_allowed")  # fmt: skip
    out: list[tuple[Tool, Builtin]] = []
    for tool in source.tools():
        remote = getattr(tool, "remote_name", tool.name)
        if allowed is not None and remote not in allowed:
            continue
        out.append((ApprovalFirst(tool) if approve(remote) else tool, Builtin("mcp", label, remote)))
    return out


class ToolRunner:
    """Runs a generation whose request brought tools through the agent loop, with the default agent options."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.step: AgentStep | None = None  # made on first use: its injection screen loads a model

    async def __call__(self, ctx: RequestContext, model: str) -> None:
        if (ctx.request.n or 1) > 1:
            raise InvalidRequest("a request with server-side tools answers with one choice: n must be 1", param="n")
        if self.step is None:
            self.step = AgentStep(AgentOptions(), self.services)
        run = AgentRun(self.step, ctx, model)
        await run.prepare()
        if ctx.request.stream:
            await run.open_stream()
            ctx.stream = run.stream()
        else:
            await run.complete()
