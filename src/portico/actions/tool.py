"""What a tool is: a name, a description, a JSON Schema for its arguments, a write flag, a timeout and an async
``call``. Kinds (http, knowledge, web_search, mcp, sql, …) implement ``Tool``; a ``tools:`` entry builds a
``ToolSource``, which holds one tool or, for a server such as MCP, every tool it lists.

Callers never invoke ``Tool.call`` directly: ``actions.execute.run_tool`` validates the arguments against the
schema, asks the approval gate for write tools, applies the timeout and turns every failure into a tool error
message for the model.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from portico.config.tools import NAME_PATTERN

# OpenAI function names: what every upstream accepts.
_NAME = re.compile(NAME_PATTERN)
EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(slots=True)
class ToolResult:
    """What a call produced. ``content`` is what the model reads; the rest is for the client, traces and costs."""

    content: str
    data: Any = None  # structured result (rows, search hits, the HTTP JSON body)
    citations: list[dict[str, Any]] = field(default_factory=list)  # {id, title?, url?, source?}: citable sources
    cost: float = 0.0  # USD spent by the call itself (a paid search API, a model call inside the tool)
    is_error: bool = False  # the model sees an error message; the run goes on


@dataclass(slots=True)
class ToolContext:
    """Who is calling and why: passed to every call (for auth propagation, idempotency and traces)."""

    request_id: str
    caller: dict[str, Any] = field(default_factory=dict)  # key name/id, user
    application: str | None = None
    request: Any = None  # the RequestContext of the model run; None when an operator calls a tool from the CLI
    deadline: float | None = None  # time.monotonic() by which the whole run must end (a call never outlives it)
    idempotency_key: str | None = None  # set for approved write actions: sent to HTTP tools as Idempotency-Key
    reason: str | None = None  # what the model said in the turn that asked for the call (shown to approvers)


class Tool(ABC):
    """One callable tool. Subclasses set the attributes in ``__init__`` (via ``super().__init__``) and implement
    ``call``; they raise on failure (the executor turns exceptions into tool error messages)."""

    kind: str = "tool"

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any] | None = None,
        *,
        write: bool = False,
        timeout: float = 30.0,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"tool name '{name}' must match {NAME_PATTERN}")
        self.name = name
        self.description = description
        self.parameters = parameters or EMPTY_OBJECT_SCHEMA
        self.write = write
        self.timeout = timeout
        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as e:
            raise ValueError(f"tool '{name}': parameters is not a valid JSON Schema: {e.message}") from None
        # Compiled once: argument validation runs on every call.
        self.validator = Draft202012Validator(self.parameters)

    @abstractmethod
    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run with arguments already validated against ``parameters``."""

    def public(self) -> dict[str, Any]:
        """Kind-specific settings an operator may see (admin API, CLI): never header values or other secrets."""
        return {}

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry offered to the model."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def __repr__(self) -> str:
        return f"<tool {self.name} ({self.kind}{', write' if self.write else ''})>"


class ToolSource(ABC):
    """What one ``tools:`` entry builds: a single tool, or a server whose tools are discovered at start."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind

    async def start(self) -> None:  # noqa: B027 - an optional hook: most sources have nothing to start
        """Connect and discover (MCP servers); a failure leaves the source unhealthy, it does not stop start-up."""

    @abstractmethod
    def tools(self) -> list[Tool]:
        """The tools available now (an MCP server that is down lists none)."""

    def declares(self, name: str) -> bool:
        """Whether ``name`` is a tool this source offers, asked when agent steps are built (before ``start``): a
        server whose tools are discovered later answers from its config (e.g. its allowed tools)."""
        return any(t.name == name for t in self.tools())

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def close(self) -> None:  # noqa: B027 - an optional hook
        """Release clients and connections."""


class SingleTool(ToolSource):
    """A source that is exactly one tool (http, knowledge, web_search, sql)."""

    def __init__(self, tool: Tool) -> None:
        super().__init__(tool.name, tool.kind)
        self.tool = tool

    def tools(self) -> list[Tool]:
        return [self.tool]

    async def close(self) -> None:
        close = getattr(self.tool, "close", None)
        if close is not None:
            await close()
