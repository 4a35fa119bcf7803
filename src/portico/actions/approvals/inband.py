"""Approvals inside the conversation: what a client sends with its next request, and what the model learns.

- A key whose tool has ``approval.by: user`` decides its own pending actions in-band with request headers
  ``x-portico-approve: appr_…,appr_…`` and ``x-portico-deny: appr_…`` (headers, so nothing reaches an upstream).
- When a conversation comes back to an agent application, every action it mentions (the tool message said
  "approval id appr_…") is looked up, and the model is told what became of it — executed with its result, denied
  with the reason, expired or still pending — so it can finish its answer.
"""

from __future__ import annotations

import re
from typing import Any

from portico.protocol.chat import Message
from portico.protocol.errors import PorticoError

_ID = re.compile(r"\bappr_[0-9a-f]{32}\b")
_RESULT_CHARS = 4000
DECISIONS = "approvals.decisions"  # ctx.state key: {"approve": [ids], "deny": [ids]} from the request headers


def decisions_from_headers(headers: Any) -> dict[str, list[str]] | None:
    out = {verb: _ID.findall(headers.get(f"x-portico-{verb}") or "") for verb in ("approve", "deny")}
    return out if out["approve"] or out["deny"] else None


async def apply_decisions(queue: Any, ctx: Any) -> list[str]:
    """The caller's in-band decisions, each a line for the model (a refused decision says why)."""
    wanted = ctx.state.get(DECISIONS)
    if not wanted:
        return []
    actor, key_id = ctx.caller.get("key") or "user", ctx.caller.get("key_id")
    lines = []
    for verb in ("approve", "deny"):
        for aid in wanted[verb]:
            try:
                if verb == "approve":
                    await queue.approve(aid, actor, caller_key_id=key_id, require_user=True)
                else:
                    await queue.deny(aid, actor, "denied by the user", caller_key_id=key_id, require_user=True)
            except PorticoError as e:
                lines.append(f"The user's decision to {verb} {aid} was not applied: {e.message}")
    return lines


async def updates(queue: Any, messages: list[Message], extra: list[str]) -> Message | None:
    """A system message with what became of the actions this conversation asked for (None when there are none)."""
    ids: list[str] = []
    for m in messages:
        if m.role == "tool":
            ids.extend(i for i in _ID.findall(m.text()) if i not in ids)
    lines = list(extra)
    for aid in ids:
        try:
            row = await queue.get(aid)
        except PorticoError:
            continue
        status, tool = row["status"], row["tool"]
        if status in ("executed", "failed"):
            content = str((row.get("result") or {}).get("content") or "")[:_RESULT_CHARS]
            lines.append(f"Action {aid} ({tool}) was approved and {status}; its result: {content}")
        elif status == "denied":
            lines.append(f"Action {aid} ({tool}) was denied" + (f": {row['note']}" if row.get("note") else "") + ".")
        elif status == "expired":
            lines.append(f"Action {aid} ({tool}) expired without a decision and did not run.")
        else:
            lines.append(f"Action {aid} ({tool}) is still {status}.")
    if not lines:
        return None
    return Message(role="system", content="Updates on actions that needed approval:\n" + "\n".join(lines))
