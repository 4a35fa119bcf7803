"""The approval queue: the gate every write tool call passes, and the decisions that let one run exactly once.

A model run that asks for a write tool gets no call: the queue persists a pending action and the model is told
that it awaits approval. An operator (or, with ``approval.by: user``, the key that asked) approves or denies it;
an approval runs the tool at once, in the approving process, under a compare-and-set on the row's status
(``store.ApprovalStore.transition``), so a double click, two replicas or a crash never yield two calls. A crash while
a call runs leaves the action ``unknown`` for a human to check — it is never retried on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
import orjson

from portico.actions.approvals.store import ApprovalStore
from portico.actions.execute import GateDecision, parse_arguments, run_tool
from portico.actions.tool import Tool, ToolContext
from portico.config.tools import ApprovalConfig
from portico.protocol.errors import Conflict, InvalidRequest, NotFound

log = logging.getLogger("portico.actions")

# An approved action nobody started (its approver crashed between the two steps) is run by whoever recovers it.
ORPHAN_AFTER = 60.0
# A call still "executing" this long after its timeout is presumed lost with its process.
LOST_MARGIN = 30.0
_EXCERPT_TURNS = 6
_EXCERPT_CHARS = 600


class _Approved:
    """The gate for a call that already has its approval: lets it through with the action id as idempotency key."""

    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id

    async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision:
        return GateDecision(True, idempotency_key=self.approval_id)


def _excerpt(request: Any) -> list[dict[str, str]] | None:
    """The last turns of the conversation that led to the call (masked text when a pii step ran before)."""
    messages = getattr(getattr(request, "request", None), "messages", None)
    if not messages:
        return None
    return [{"role": m.role, "text": m.text()[:_EXCERPT_CHARS]} for m in messages[-_EXCERPT_TURNS:]]


def public(row: dict[str, Any]) -> dict[str, Any]:
    """An action as the admin API shows it."""
    return {"object": "approval", **row}


class ApprovalQueue:
    """The runtime's ApprovalGate once tools are configured (``Toolbox.gate``)."""

    def __init__(self, store: ApprovalStore, toolbox: Any, policies: dict[str, ApprovalConfig],
                 keys: Any = None, transport: httpx.AsyncClient | None = None) -> None:  # fmt: skip
        self.store = store
        self.keys = keys  # KeyStore: the asking key's permissions are checked again when the action runs
        self.toolbox = toolbox
        self.policies = policies  # by tool name and by tools: entry name (an MCP server's tools share its entry)
        self._http = transport  # for webhooks; made on first use
        self._tasks: set[asyncio.Task[Any]] = set()

    def policy(self, tool: Tool) -> ApprovalConfig:
        p = self.policies.get(tool.name)
        if p is None:
            src = self.toolbox.source_of(tool.name)
            p = self.policies.get(src.name) if src is not None else None
        return p or ApprovalConfig()

    # ---- the gate ------------------------------------------------------------------------------------

    async def check(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> GateDecision:
        policy = self.policy(tool)
        # A read-only call the client itself asked to approve (Responses ``require_approval``) is the client's to
        # decide; a write keeps the approver its config names.
        by = getattr(tool, "approval_by", None) or policy.by
        actor = ctx.caller.get("key")
        if by == "none":  # allowed at start-up only with i_understand_unapproved_writes
            await self.store.audit("unapproved_write", tool.name, actor=actor, request_id=ctx.request_id,
                                   arguments=arguments, status="allowed")  # fmt: skip
            return GateDecision(True)
        now = time.time()
        approval_id = "appr_" + uuid.uuid4().hex
        await self.store.insert({
            "id": approval_id, "tool": tool.name, "status": "pending", "approval_by": by,
            "arguments": arguments, "key_id": ctx.caller.get("key_id"), "key_name": actor,
            "user_id": ctx.caller.get("user"), "application": ctx.application, "request_id": ctx.request_id,
            "reason": (ctx.reason or "")[:4000] or None, "conversation": _excerpt(ctx.request),
            "created_at": now, "expires_at": now + policy.expires, "timeout": tool.timeout,
        })  # fmt: skip
        await self.store.audit("requested", tool.name, actor=actor, approval_id=approval_id,
                               request_id=ctx.request_id, arguments=arguments, status="pending")  # fmt: skip
        who = "an operator" if by == "operator" else "the user"
        return GateDecision(
            False,
            f"The action '{tool.name}' was not run: it changes data and waits for {who} to approve it "
            f"(approval id {approval_id}). Tell the user it awaits approval; do not call it again.",
            status="pending_approval",
            approval_id=approval_id,
        )

    async def record_call(self, outcome: Any, ctx: ToolContext, via: str) -> None:
        """Audit one tool call (any tool, any path: agent runs, /mcp, the CLI): who, which tool, the arguments'
        hash, the outcome — never the arguments themselves, which may hold secrets."""
        self.store.audit_soon(f"call:{via}", outcome.tool, actor=ctx.caller.get("key"),
                              approval_id=outcome.approval_id, request_id=ctx.request_id,
                              arguments=outcome.arguments, status=outcome.status)  # fmt: skip

    # ---- decisions -----------------------------------------------------------------------------------

    async def get(self, approval_id: str) -> dict[str, Any]:
        await self.store.expire_due(time.time())
        row = await self.store.get(approval_id)
        if row is None:
            raise NotFound(f"No approval with id '{approval_id}'", code="approval_not_found")
        return row

    async def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        await self.store.expire_due(time.time())
        return await self.store.list(status, limit)

    async def _pending(self, approval_id: str, caller_key_id: str | None, require_user: bool) -> dict[str, Any]:
        row = await self.get(approval_id)  # expires what is due first: an expired action is never approvable
        if (caller_key_id is not None or require_user) and (
            row["approval_by"] != "user" or row["key_id"] != caller_key_id
        ):
            # A key may decide only its own actions, and only those the tool lets users decide.
            raise NotFound(f"No approval with id '{approval_id}'", code="approval_not_found")
        if row["status"] == "expired":
            raise Conflict(f"The approval '{approval_id}' expired at {row['expires_at']:.0f} (epoch s); it can no "
                           "longer be approved. The model has to ask again.", code="approval_expired")  # fmt: skip
        if row["status"] != "pending":
            raise Conflict(f"The approval '{approval_id}' is {row['status']}, not pending.", code="approval_decided")
        return row

    async def approve(self, approval_id: str, actor: str, arguments: dict[str, Any] | None = None,
                      caller_key_id: str | None = None, require_user: bool = False) -> dict[str, Any]:  # fmt: skip
        """Approve and run now; returns the action after its call (executed or failed). ``require_user``: the
        decision comes from a client, not an operator — only its own key's actions of ``by: user`` tools."""
        row = await self._pending(approval_id, caller_key_id, require_user)
        values: dict[str, Any] = {"decided_at": time.time(), "decided_by": actor}
        if arguments is not None and arguments != row["arguments"]:
            tool = self.toolbox.get(row["tool"])
            if tool is None:
                raise Conflict(f"The tool '{row['tool']}' is not available now; its arguments can't be checked.",
                               code="tool_unavailable")  # fmt: skip
            checked, problem = parse_arguments(tool, arguments)
            if checked is None:
                raise InvalidRequest(problem or "invalid arguments", param="arguments")
            values |= {"arguments": checked, "original_arguments": row["arguments"]}
        if not await self.store.transition(approval_id, "pending", "approved", **values):
            raise Conflict(f"The approval '{approval_id}' was decided by someone else.", code="approval_decided")
        if "original_arguments" in values:
            await self.store.audit("edited", row["tool"], actor=actor, approval_id=approval_id,
                                   request_id=row["request_id"], arguments=values["arguments"])  # fmt: skip
        await self.store.audit("approved", row["tool"], actor=actor, approval_id=approval_id,
                               request_id=row["request_id"], status="approved")  # fmt: skip
        return await self.execute(approval_id)

    async def deny(self, approval_id: str, actor: str, reason: str | None = None,
                   caller_key_id: str | None = None, require_user: bool = False) -> dict[str, Any]:  # fmt: skip
        row = await self._pending(approval_id, caller_key_id, require_user)
        if not await self.store.transition(approval_id, "pending", "denied", decided_at=time.time(),
                                           decided_by=actor, note=reason):  # fmt: skip
            raise Conflict(f"The approval '{approval_id}' was decided by someone else.", code="approval_decided")
        await self.store.audit("denied", row["tool"], actor=actor, approval_id=approval_id,
                               request_id=row["request_id"], status="denied")  # fmt: skip
        return await self.get(approval_id)

    # ---- execution -----------------------------------------------------------------------------------

    async def execute(self, approval_id: str) -> dict[str, Any]:
        """Run an approved action once. Whoever moves it to ``executing`` calls the tool; everyone else just reads."""
        if not await self.store.transition(approval_id, "approved", "executing", started_at=time.time()):
            return await self.get(approval_id)
        row = await self.get(approval_id)
        tool = self.toolbox.get(row["tool"])
        if tool is None:
            result = {"content": f"The tool '{row['tool']}' is not configured or its server is down.",
                      "data": None, "is_error": True}  # fmt: skip
            status = "failed"
        else:
            ctx = ToolContext(row["request_id"] or approval_id, await self._caller(row), row["application"],
                              idempotency_key=approval_id)  # fmt: skip
            out = await run_tool(tool, row["arguments"], ctx, _Approved(approval_id))
            r = out.result
            result = {"content": r.content, "data": _jsonable(r.data), "is_error": r.is_error}
            status = "executed" if out.status == "ok" else "failed"
        await self.store.transition(approval_id, "executing", status, finished_at=time.time(), result=result)
        await self.store.audit(status, row["tool"], actor=row["decided_by"], approval_id=approval_id,
                               request_id=row["request_id"], status=status)  # fmt: skip
        final = await self.get(approval_id)
        self._notify(final)
        return final

    async def _caller(self, row: dict[str, Any]) -> dict[str, Any]:
        """The asking key as it is now: a key revoked or stripped of the tool since it asked can't have it run."""
        caller: dict[str, Any] = {"key": row["key_name"], "key_id": row["key_id"], "tools": ()}
        if row["key_id"] is not None and self.keys is not None:
            rec = await self.keys.get(row["key_id"])
            if rec is not None and rec.active:
                caller["tools"] = rec.tools
        return caller

    async def recover(self) -> dict[str, int]:
        """After a restart: run approved actions nobody started; mark calls lost with a crashed process ``unknown``."""
        now = time.time()
        ran = lost = 0
        for row in await self.store.stale("approved", now - ORPHAN_AFTER, "decided_at"):
            await self.execute(row["id"])
            ran += 1
        for row in await self.store.stale("executing", now - LOST_MARGIN, "started_at"):
            if row["started_at"] + row["timeout"] + LOST_MARGIN < now and await self.store.transition(
                row["id"], "executing", "unknown", finished_at=now
            ):
                await self.store.audit("unknown", row["tool"], approval_id=row["id"], status="unknown")
                lost += 1
        return {"orphans_run": ran, "marked_unknown": lost}

    def _notify(self, row: dict[str, Any]) -> None:
        policy = self.policies.get(row["tool"])
        if policy is None or not policy.webhook:
            return
        task = asyncio.ensure_future(self._post(policy.webhook, row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, row: dict[str, Any]) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10)
        try:
            await self._http.post(url, content=orjson.dumps(public(row)), headers={"content-type": "application/json"})
        except httpx.HTTPError as e:
            log.warning("approval webhook failed", extra={"approval": row["id"], "error": str(e)[:200]})

    def start(self) -> None:
        self.store.calls.start()  # the call audit's batch writer

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.calls.close()  # every queued call audit row is written
        if self._http is not None:
            await self._http.aclose()


def _jsonable(data: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(data, default=str))
    except TypeError:
        return str(data)

