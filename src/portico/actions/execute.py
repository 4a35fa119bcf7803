"""One tool call, the safe way: parse and validate the arguments, ask the approval gate for write tools, run
with the tool's timeout (and never past the run's deadline), trim the result, and turn every failure into a
tool error message for the model — never an exception for the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from portico.actions.permissions import tool_allowed
from portico.actions.tool import Tool, ToolContext, ToolResult

log = logging.getLogger("portico.actions")

# What a model may read back from one call; a 5 MB page would crowd out the conversation (and the budget).
DEFAULT_MAX_RESULT_CHARS = 20_000

Status = Literal["ok", "error", "invalid_arguments", "timeout", "pending_approval", "denied"]


@dataclass(slots=True)
class CallOutcome:
    """A finished call: the result the model reads plus what a trace span records."""

    tool: str
    status: Status
    result: ToolResult
    arguments: dict[str, Any] | None  # validated arguments; None when they did not parse or validate
    duration: float  # seconds
    approval_id: str | None = None  # set when a write waits for a human (the approvals issue)


@dataclass(slots=True)
class GateDecision:
    allowed: bool
    message: str = ""  # what the model is told when the call does not run now
    status: Status = "denied"  # pending_approval when it waits in a queue
    approval_id: str | None = None
    idempotency_key: str | None = None


class ApprovalGate(Protocol):
    """Decides whether a write tool may run now. Read-only tools never reach the gate."""

    async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision: ...


class NoApprovalQueue:
    """The gate when no approval queue is configured: a write tool never runs."""

    async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision:
        return GateDecision(
            False,
            f"The tool '{tool.name}' changes data and needs a human approval before it runs; no approval queue is "
            "configured here, so it was not run. Tell the user the action was not taken.",
        )


def parse_arguments(tool: Tool, raw: str | dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, None) when they parse and match the schema, else (None, a message the model can act on)."""
    if raw is None or raw == "":
        args: Any = {}
    elif isinstance(raw, dict):
        args = raw
    else:
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return None, f"Invalid arguments for tool '{tool.name}': not valid JSON ({e}). Send a JSON object."
    if not isinstance(args, dict):
        return None, f"Invalid arguments for tool '{tool.name}': expected a JSON object, got {type(args).__name__}."
    error = next(iter(tool.validator.iter_errors(args)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"Invalid arguments for tool '{tool.name}' at {where}: {error.message}. Fix them and call again."
    return args, None


def _trim(result: ToolResult, limit: int) -> ToolResult:
    n = len(result.content)
    if n > limit:
        result.content = result.content[:limit] + f"\n[truncated: {limit} of {n} characters shown]"
    return result


def _error(tool: str, status: Status, message: str, args: dict[str, Any] | None, t0: float) -> CallOutcome:
    return CallOutcome(tool, status, ToolResult(message, is_error=True), args, time.perf_counter() - t0)


async def run_tool(
    tool: Tool,
    raw_arguments: str | dict[str, Any] | None,
    ctx: ToolContext,
    gate: ApprovalGate,
    *,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
) -> CallOutcome:
    t0 = time.perf_counter()
    if not tool_allowed(ctx.caller, tool):  # checked again here: what a model was offered may be stale or forged
        return _error(tool.name, "denied", f"This API key may not use the tool '{tool.name}'.", None, t0)
    args, problem = parse_arguments(tool, raw_arguments)
    if args is None:
        return _error(tool.name, "invalid_arguments", problem or "", None, t0)
    idempotency_key = None
    # The enforcement hook: no write runs without the gate's yes (nor a call its client asked to approve first).
    if tool.write or getattr(tool, "needs_approval", False):
        decision = await gate.check(tool, args, ctx)
        if not decision.allowed:
            out = _error(tool.name, decision.status, decision.message, args, t0)
            out.approval_id = decision.approval_id
            return out
        idempotency_key = decision.idempotency_key
    timeout = tool.timeout
    if ctx.deadline is not None:
        timeout = min(timeout, max(0.0, ctx.deadline - time.monotonic()))
    call_ctx = ctx if idempotency_key is None else _with_key(ctx, idempotency_key)
    try:
        async with asyncio.timeout(timeout):
            result = await tool.call(args, call_ctx)
    except TimeoutError:
        return _error(tool.name, "timeout", f"The tool '{tool.name}' did not answer within {timeout:.1f} s.", args, t0)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a tool's bug or its upstream's failure is the model's information, not a 500
        log.warning("tool failed", extra={"tool": tool.name, "error": f"{type(e).__name__}: {e}"[:300]})
        return _error(tool.name, "error", f"The tool '{tool.name}' failed: {type(e).__name__}: {e}"[:2000], args, t0)
    if not isinstance(result, ToolResult):
        return _error(tool.name, "error", f"The tool '{tool.name}' returned no result.", args, t0)
    status: Status = "error" if result.is_error else "ok"
    return CallOutcome(tool.name, status, _trim(result, max_result_chars), args, time.perf_counter() - t0)


def _with_key(ctx: ToolContext, key: str) -> ToolContext:
    return ToolContext(ctx.request_id, ctx.caller, ctx.application, ctx.request, ctx.deadline, key, ctx.reason)
