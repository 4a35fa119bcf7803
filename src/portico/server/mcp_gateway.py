"""``/mcp``: Portico as an MCP server for the tools it governs (streamable HTTP, the official ``mcp`` SDK).

One place for a company's tools: a client (an IDE, an agent framework) connects with its virtual key and sees
only the tools that key may use; every call goes through the same ``run_tool`` as Portico's own agent runs —
arguments checked against the schema, permissions checked again, write tools queued for a human (the call answers
"awaiting approval" with the action's id) — and lands in the audit log. Stateless mode: any replica can answer
any request, so the endpoint scales like the rest of the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import orjson
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from portico.actions import ToolContext, run_tool
from portico.actions.permissions import tool_allowed
from portico.protocol.errors import PorticoError
from portico.server.auth import token_from

_CALLER = "portico.mcp_caller"


def _caller_of(ctx: Any) -> dict[str, Any]:
    request: Request | None = getattr(ctx, "request", None)
    if request is None or _CALLER not in request.scope:  # pragma: no cover - only reachable through the mount
        raise PermissionError("no authenticated caller")
    return request.scope[_CALLER]


def _spec(tool: Any) -> types.Tool:
    return types.Tool(
        name=tool.name,
        description=tool.description,
        input_schema=tool.parameters,
        annotations=types.ToolAnnotations(read_only_hint=not tool.write, destructive_hint=tool.write),
    )


def _rpc_error(code: int, message: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})


class McpGateway:
    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        server: Server[Any] = Server(
            "portico", version="1", on_list_tools=self._list_tools, on_call_tool=self._call_tool,
            instructions="Tools governed by Portico: write tools wait for a human approval before they run.",
        )  # fmt: skip
        self.manager = StreamableHTTPSessionManager(server, stateless=True, json_response=True)

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        caller = _caller_of(ctx)
        return types.ListToolsResult(tools=[_spec(t) for t in self.rt.tools.all() if tool_allowed(caller, t)])

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        caller = _caller_of(ctx)
        tool = self.rt.tools.get(params.name)
        if tool is None or not tool_allowed(caller, tool):  # an unknown and a forbidden tool look the same
            return types.CallToolResult(content=[types.TextContent(text=f"Unknown tool '{params.name}'.")],
                                        is_error=True)  # fmt: skip
        tctx = ToolContext(request_id="mcp-" + uuid.uuid4().hex, caller=caller)
        out = await run_tool(tool, params.arguments or {}, tctx, self.rt.tools.gate)
        await self.rt.approvals.record_call(out, tctx, via="mcp")
        structured: dict[str, Any] = {"status": out.status}
        if out.approval_id:
            structured["approval_id"] = out.approval_id
        if out.result.data is not None:
            structured["data"] = orjson.loads(orjson.dumps(out.result.data, default=str))
        return types.CallToolResult(
            content=[types.TextContent(text=out.result.content)],
            structured_content=structured,
            is_error=out.status not in ("ok", "pending_approval"),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope)
        try:
            caller = await self.rt.control.authenticate(token_from(request))
        except PorticoError as e:
            await Response(orjson.dumps(e.to_dict()), status_code=e.status, media_type="application/json")(
                scope, receive, send
            )
            return
        if request.method == "GET":
            # A stateless server has nothing to push: no session, and every answer rides on its POST. The
            # SDK would hold the stream open forever (an idle socket per client); the MCP spec allows 405 here.
            await Response(_rpc_error(-32000, "Method Not Allowed: this server offers no GET stream (stateless)"),
                           status_code=405, media_type="application/json", headers={"allow": "POST"})(
                scope, receive, send)  # fmt: skip
            return
        if request.method == "POST" and not request.headers.get("content-type", "").lower().startswith(
            "application/json"
        ):
            # The SDK answers this one in plain text; every /mcp error is documented as a JSON-RPC error.
            await Response(_rpc_error(-32700, "Content-Type must be application/json"), status_code=400,
                           media_type="application/json")(scope, receive, send)  # fmt: skip
            return
        scope[_CALLER] = {"key": caller.name, "key_id": caller.key.id if caller.key else None,
                          "tools": caller.key.tools if caller.key else None}  # fmt: skip
        await self.manager.handle_request(scope, receive, send)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The session manager's task group lives in a task of its own: an anyio scope must be left in the task
        that entered it, and a server's lifespan may be started and stopped from different tasks (tests do)."""
        up, down = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with self.manager.run():
                up.set()
                await down.wait()

        task = asyncio.create_task(hold())
        ready = asyncio.create_task(up.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # it failed to start: raise why
        try:
            yield
        finally:
            down.set()
            await task

    def routes(self) -> list[Route]:
        return [Route("/mcp", self, methods=["GET", "POST", "DELETE"])]
