"""The approval queue's tables and its one primitive: a compare-and-set transition.

Every change of an action's status is ``UPDATE … WHERE id = :id AND status = :from`` in its own transaction; the
row count says whether this caller won. Two approvals of one action (two clicks, two replicas) race on that row,
and exactly one moves it, so the tool runs at most once however many processes share the database.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, Text, insert, select, update

from portico.storage.batch import BatchWriter
from portico.storage.db import Database, metadata

# pending → approved → executing → executed | failed; pending → denied | expired; a crash while executing → unknown.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"approved", "denied", "expired"}),
    "approved": frozenset({"executing"}),
    "executing": frozenset({"executed", "failed", "unknown"}),
}
STATUSES = ("pending", "approved", "denied", "expired", "executing", "executed", "failed", "unknown")

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tool", String(64), nullable=False),
    Column("status", String(12), nullable=False),
    Column("approval_by", String(10), nullable=False),  # operator | user
    Column("arguments", JSON, nullable=False),  # validated; what runs
    Column("original_arguments", JSON(none_as_null=True), nullable=True),  # set when an approver edited them
    Column("key_id", String(40), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("user_id", String(200), nullable=True),  # the end user the client named (request user)
    Column("application", String(200), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("reason", Text, nullable=True),  # what the model said when it asked
    Column("conversation", JSON(none_as_null=True), nullable=True),  # the last turns, for the approver
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("decided_at", Float, nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("note", Text, nullable=True),  # a denial's reason
    Column("timeout", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("result", JSON(none_as_null=True), nullable=True),  # {content, data, is_error}
)
Index("ix_approvals_status_created", approvals.c.status, approvals.c.created_at)

tool_audit = Table(
    "tool_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("actor", String(200), nullable=True),  # the key that asked, or who decided
    Column("action", String(24), nullable=False),  # call | requested | approved | edited | denied | executed | …
    Column("tool", String(64), nullable=False),
    Column("approval_id", String(40), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("arguments_sha256", String(64), nullable=True),  # the arguments' hash, never their values
    Column("status", String(24), nullable=True),
)
Index("ix_tool_audit_ts", tool_audit.c.ts)


def arguments_hash(arguments: Any) -> str:
    return hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _row(r: Any) -> dict[str, Any]:
    # Plain str keys: the driver's column names are str subclasses that orjson refuses as keys.
    return {str(k): v for k, v in r.items()}


class CallAuditWriter(BatchWriter[dict[str, Any]]):
    """Audit rows of plain tool calls, written in batches: awaiting one INSERT per call cost an agent ~1 ms per
    step. Decisions on write actions (requested, approved, executed…) are still written before they return."""

    name = "tool audit"

    async def _insert(self, batch: list[dict[str, Any]]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(tool_audit), batch)


class ApprovalStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = CallAuditWriter(db, batch_size=200, interval=0.5)

    async def insert(self, row: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(approvals).values(**row))

    async def get(self, approval_id: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            r = (await conn.execute(select(approvals).where(approvals.c.id == approval_id))).mappings().first()
        return _row(r) if r else None

    async def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(approvals).order_by(approvals.c.created_at.desc()).limit(limit)
        if status is not None:
            q = q.where(approvals.c.status == status)
        async with self.db.engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(q)).mappings()]

    async def transition(self, approval_id: str, frm: str, to: str, **values: Any) -> bool:
        """Move one action from ``frm`` to ``to``; False when it was not in ``frm`` (another caller won)."""
        if to not in TRANSITIONS.get(frm, frozenset()):
            raise ValueError(f"illegal transition {frm} -> {to}")
        async with self.db.engine.begin() as conn:
            r = await conn.execute(
                update(approvals)
                .where(approvals.c.id == approval_id, approvals.c.status == frm)
                .values(status=to, **values)
            )
        return r.rowcount == 1

    async def expire_due(self, now: float) -> list[str]:
        """Pending actions past their expiry become ``expired``; returns their ids."""
        async with self.db.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(approvals.c.id).where(approvals.c.status == "pending", approvals.c.expires_at <= now)
                )
            ).all()
            ids = [r[0] for r in rows]
            if ids:
                await conn.execute(
                    update(approvals)
                    .where(approvals.c.id.in_(ids), approvals.c.status == "pending")
                    .values(status="expired", decided_at=now, decided_by="expiry")
                )
        return ids

    async def stale(self, status: str, started_before: float, column: str) -> list[dict[str, Any]]:
        col = approvals.c[column]
        async with self.db.engine.connect() as conn:
            q = select(approvals).where(approvals.c.status == status, col < started_before)
            return [_row(r) for r in (await conn.execute(q)).mappings()]

    @staticmethod
    def _audit_row(action: str, tool: str, actor: str | None, approval_id: str | None, request_id: str | None,
                   arguments: Any, status: str | None) -> dict[str, Any]:  # fmt: skip
        return {"ts": time.time(), "actor": actor, "action": action, "tool": tool, "approval_id": approval_id,
                "request_id": request_id, "status": status,
                "arguments_sha256": None if arguments is None else arguments_hash(arguments)}  # fmt: skip

    async def audit(self, action: str, tool: str, *, actor: str | None = None, approval_id: str | None = None,
                    request_id: str | None = None, arguments: Any = None, status: str | None = None) -> None:
        """Written before it returns (queued call rows first, so the log keeps its order)."""
        row = self._audit_row(action, tool, actor, approval_id, request_id, arguments, status)
        await self.calls.flush()
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(tool_audit).values(**row))

    def audit_soon(self, action: str, tool: str, *, actor: str | None = None, approval_id: str | None = None,
                   request_id: str | None = None, arguments: Any = None, status: str | None = None) -> None:
        """Queued for the batch writer (a full queue drops and counts the row, like usage)."""
        self.calls.add(self._audit_row(action, tool, actor, approval_id, request_id, arguments, status))

    async def audit_log(self, approval_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        await self.calls.flush()
        q = select(tool_audit).order_by(tool_audit.c.id.desc()).limit(limit)
        if approval_id is not None:
            q = q.where(tool_audit.c.approval_id == approval_id)
        async with self.db.engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(q)).mappings()]
