"""The ``mcp`` tool kind: every tool of a configured MCP server, through the official ``mcp`` SDK client.

```yaml
tools:
  - name: orders                      # tools are exposed as orders_<tool> unless prefix/tool_names say otherwise
    kind: mcp
    url: https://mcp.internal/mcp     # streamable HTTP ...
    headers: {authorization: "Bearer ${ORDERS_MCP_TOKEN}"}
    # command: npx                    # ... or stdio: a subprocess
    # args: ["-y", "@modelcontextprotocol/server-filesystem", "/data"]
    # env: {API_KEY: "${KEY}"}
    allowed_tools: [lookup_order, list_orders]   # or blocked_tools: [...]
    write_tools: [cancel_order]       # these need an approval; the rest follow the entry's `write`
    timeout: 20
```

One session per server is kept open and shared by every call (JSON-RPC multiplexes concurrent calls). The
session lives in its own task: the SDK's transports hold anyio task groups that must be entered and exited by
the same task, and a transport that fails cancels that task rather than the caller. A call that finds the
session closed (the server restarted, the subprocess died) reconnects once and, for a read-only tool, sends the
call again; a write tool's call is never resent, since the server may have run it. A server that is down at
start-up does not hold start-up: the first connection has a short timeout and the source retries in the
background until the server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

import httpx2
import orjson
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, CallToolResult, EmbeddedResource, ImageContent, TextContent
from mcp.types import Tool as McpToolSpec
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from portico.actions.tool import NAME_PATTERN, Tool, ToolContext, ToolResult, ToolSource

log = logging.getLogger("portico.actions.mcp")
_NAME = re.compile(NAME_PATTERN)


class McpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = None  # streamable HTTP endpoint
    headers: dict[str, SecretStr] = Field(default_factory=dict)  # sent on every HTTP request (auth)
    command: str | None = None  # stdio: the server's executable
    args: list[str] = Field(default_factory=list)
    env: dict[str, SecretStr] = Field(default_factory=dict)  # stdio: added to a minimal safe environment
    cwd: str | None = None
    allowed_tools: list[str] | None = None  # server tool names; None = every tool the server lists
    blocked_tools: list[str] = Field(default_factory=list)
    write_tools: list[str] = Field(default_factory=list)  # server tool names that change something
    prefix: str | None = None  # exposed name = prefix + tool name; default "<entry name>_"
    tool_names: dict[str, str] = Field(default_factory=dict)  # server tool name -> exposed name
    connect_timeout: float = Field(default=5.0, gt=0, le=120)  # a down server must not hold start-up
    retry_interval: float = Field(default=30.0, gt=0, le=3600)  # longest wait between background reconnects

    @model_validator(mode="after")
    def _check(self) -> McpOptions:
        if (self.url is None) == (self.command is None):
            raise ValueError("set exactly one of url (streamable HTTP) or command (stdio)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        for exposed in self.tool_names.values():
            if not _NAME.match(exposed):
                raise ValueError(f"tool_names: '{exposed}' must match {NAME_PATTERN}")
        return self


class ConnectionLost(RuntimeError):
    pass


class _Session:
    """One open client session, owned by its own task until ``close`` (or until its transport fails)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._own())

    async def _own(self) -> None:
        try:
            async with self.client:
                self._ready.set_result(None)
                await self._stop.wait()
        except asyncio.CancelledError:
            if not self._ready.done():
                self._ready.cancel()
            raise
        except BaseException as e:  # the transport failed (an ExceptionGroup from its task group) or never opened
            self.error = e
            if not self._ready.done():
                self._ready.set_exception(e)

    async def opened(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except BaseException:
            await self.close()
            raise

    @property
    def alive(self) -> bool:
        return not self._task.done()

    async def close(self) -> None:
        self._stop.set()
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self._task)
        except TimeoutError:  # a transport stuck in teardown: cancel it
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        except BaseException:
            pass  # its failure is already recorded in .error


def _first_cause(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _describe(e: BaseException) -> str:
    e = _first_cause(e)
    if isinstance(e, TimeoutError):
        return "timed out"
    return f"{type(e).__name__}: {e}"[:300]


def _connection_error(e: BaseException, session: _Session | None) -> bool:
    """True when the session is unusable (closed transport, restarted server), not when the server refused."""
    if session is not None and not session.alive:
        return True
    if isinstance(e, MCPError):
        return e.code == CONNECTION_CLOSED or "Session terminated" in str(e)
    return isinstance(e, OSError | httpx2.TransportError | EOFError)


class McpServer(ToolSource):
    """A ``kind: mcp`` entry: the server's tools (filtered, renamed) over one kept-open session."""

    def __init__(self, cfg: Any, options: McpOptions) -> None:
        super().__init__(cfg.name, "mcp")
        self.options = options
        self.timeout = cfg.timeout
        self.default_write = cfg.write
        self.description = cfg.description
        self.prefix = options.prefix if options.prefix is not None else f"{cfg.name}_"
        self.transport = "http" if options.url else "stdio"
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._tools: list[McpTool] = []
        self._skipped: dict[str, str] = {}
        self._last_error: str | None = None
        self._connected_at: float | None = None
        self._listed = False
        self._retry: asyncio.Task[None] | None = None
        self._http: httpx2.AsyncClient | None = None  # one pool for every session of this server

    # --- connection -------------------------------------------------------------------------------------------

    def _client(self) -> Client:
        o = self.options
        if o.url is not None:
            if self._http is None:
                headers = {k: v.get_secret_value() for k, v in o.headers.items()}
                # Connect/write capped by connect_timeout; reads are capped per call by the tool timeout.
                self._http = httpx2.AsyncClient(
                    headers=headers, timeout=httpx2.Timeout(o.connect_timeout, read=max(self.timeout, 60.0))
                )
            return Client(streamable_http_client(o.url, http_client=self._http), cache=None)
        params = StdioServerParameters(
            command=o.command or "",
            args=o.args,
            env={k: v.get_secret_value() for k, v in o.env.items()} or None,
            cwd=o.cwd,
        )
        return Client(params, cache=None)

    async def _connect(self) -> _Session:
        """A new session and a fresh tool listing (listing is read-only, so it is always safe to repeat)."""
        session = _Session(self._client())
        try:
            await session.opened(self.options.connect_timeout)
            async with asyncio.timeout(self.options.connect_timeout):
                specs = await self._list(session.client)
        except BaseException as e:
            await session.close()
            if isinstance(e, asyncio.CancelledError):  # the caller gave up (a run's deadline): not the server's fault
                raise
            self._last_error = _describe(e)
            raise ConnectionLost(f"MCP server '{self.name}' is unreachable: {self._last_error}") from None
        self._tools = self._build_tools(specs)
        self._listed = True
        self._last_error = None
        self._connected_at = time.time()
        return session

    async def _list(self, client: Client) -> list[McpToolSpec]:
        specs: list[McpToolSpec] = []
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends cannot hang start-up
            page = await client.list_tools(cursor=cursor)
            specs.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return specs

    async def _live(self, stale: _Session | None = None) -> _Session:
        """The open session; reconnects when there is none or when ``stale`` (the one that just failed) is it."""
        async with self._lock:
            if self._session is not None and self._session is not stale and self._session.alive:
                return self._session
            old, self._session = self._session, None
            if old is not None:
                await old.close()
            self._session = await self._connect()
            return self._session

    async def start(self) -> None:
        try:
            await self._live()
        except ConnectionLost as e:
            log.warning("MCP server down at start; retrying in background", extra={"tool": self.name, "error": str(e)})
            self._retry = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """Until the first listing succeeds: a server that was down at start-up shows its tools once it is up."""
        delay = 1.0
        while not self._listed:
            await asyncio.sleep(delay)
            with contextlib.suppress(ConnectionLost):
                await self._live()
            delay = min(delay * 2, self.options.retry_interval)

    async def refresh(self) -> None:
        """Reconnect if needed and list the tools again (an operator's or the admin API's explicit refresh)."""
        session = await self._live()
        async with asyncio.timeout(self.options.connect_timeout):
            self._tools = self._build_tools(await self._list(session.client))

    async def call(self, tool: McpTool, arguments: dict[str, Any]) -> CallToolResult:
        session = await self._live()
        try:
            return await session.client.call_tool(tool.remote_name, arguments)
        except Exception as e:
            if not _connection_error(e, session):
                raise
            self._last_error = _describe(e)
            if tool.write:  # the server may have run it: never sent twice
                with contextlib.suppress(ConnectionLost):
                    await self._live(stale=session)  # the next call finds a working session
                raise ConnectionLost(
                    f"the connection to MCP server '{self.name}' was lost during the call; it was not retried "
                    "because the tool changes data (it may or may not have run)"
                ) from None
            session = await self._live(stale=session)
            return await session.client.call_tool(tool.remote_name, arguments)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- tools ------------------------------------------------------------------------------------------------

    def _build_tools(self, specs: list[McpToolSpec]) -> list[McpTool]:
        o = self.options
        tools: list[McpTool] = []
        skipped: dict[str, str] = {}
        seen: set[str] = set()
        for spec in specs:
            remote = spec.name
            if (o.allowed_tools is not None and remote not in o.allowed_tools) or remote in o.blocked_tools:
                continue
            exposed = o.tool_names.get(remote, f"{self.prefix}{remote}")
            if exposed in seen:
                skipped[remote] = f"name '{exposed}' is taken by another tool of this server"
                continue
            try:
                tools.append(McpTool(self, spec, exposed))
            except ValueError as e:  # a name the upstream models refuse, or a schema that is not JSON Schema
                skipped[remote] = str(e)
                continue
            seen.add(exposed)
        if skipped:
            log.warning("MCP tools skipped", extra={"tool": self.name, "skipped": skipped})
        self._skipped = skipped
        return tools

    def tools(self) -> list[Tool]:
        return list(self._tools)

    def declares(self, name: str) -> bool:
        """Asked when agent steps are built, before the server is reached: a listed tool, a name the config gives
        (allowed_tools, tool_names), or, when every tool of the server is allowed, any name with its prefix."""
        if any(t.name == name for t in self._tools):
            return True
        o = self.options
        named = {o.tool_names.get(r, f"{self.prefix}{r}") for r in o.allowed_tools or [] if r not in o.blocked_tools}
        if name in named:
            return True
        open_ended = o.allowed_tools is None and (bool(self.prefix) and name.startswith(self.prefix))
        return open_ended or (o.allowed_tools is None and name in o.tool_names.values())

    def health(self) -> dict[str, Any]:
        connected = self._session is not None and self._session.alive
        out: dict[str, Any] = {
            "status": "ok" if connected else "down",
            "transport": self.transport,
            "connected": connected,
            "tools": len(self._tools),
            "last_error": self._last_error,
            "connected_at": self._connected_at,
        }
        if self._skipped:
            out["skipped"] = self._skipped
        return out


class McpTool(Tool):
    kind = "mcp"

    def __init__(self, server: McpServer, spec: McpToolSpec, exposed: str) -> None:
        o = server.options
        hints = spec.annotations
        # Annotations may only tighten: a tool the server says writes is a write tool whatever the config says,
        # but a server's readOnlyHint never lifts a write flag set in the config.
        says_write = hints is not None and (hints.read_only_hint is False or hints.destructive_hint is True)
        write = server.default_write or spec.name in o.write_tools or says_write
        description = spec.description or (hints.title if hints and hints.title else "") or server.description
        super().__init__(
            exposed, description or spec.name, dict(spec.input_schema), write=write, timeout=server.timeout
        )
        self.server = server
        self.remote_name = spec.name

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return _result(await self.server.call(self, arguments))

    def public(self) -> dict[str, Any]:
        return {"server": self.server.name, "remote_name": self.remote_name, "transport": self.server.transport}


def _result(r: CallToolResult) -> ToolResult:
    """The model reads the text blocks; structured content is the data (and the text when there is none)."""
    parts: list[str] = []
    for block in r.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource) and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        elif isinstance(block, ImageContent):
            parts.append(f"[image {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        else:
            parts.append(f"[{block.type} content]")
    content = "\n".join(parts)
    if not content and r.structured_content is not None:
        content = orjson.dumps(r.structured_content).decode()
    return ToolResult(content, data=r.structured_content, is_error=r.is_error)


def mcp_kind(cfg: Any, services: Any) -> McpServer:
    """Factory for ``kind: mcp`` (cfg is the ``tools:`` entry)."""
    if cfg.parameters is not None:
        raise ValueError("an MCP server lists its own tools and their parameters; remove 'parameters'")
    return McpServer(cfg, McpOptions.model_validate(cfg.options))
