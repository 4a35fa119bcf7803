"""Handoff to a human: a queue in Portico's database, the ``handoff`` step that opens one (key phrases, an angry
tone, a turn limit) and keeps later turns of a handed-off conversation away from the model, and the store the
output checks' ``handoff`` failure policy and ``/admin/handoffs`` use.

Options (in an application's ``steps:``)::

    - use: handoff
      phrases: ["talk to a human", "speak to an agent", "real person"]
      max_turns: 8               # user turns in one conversation before a human takes over
      anger: 3                   # angry-tone score that triggers a handoff (0: off)
      answer: "I'm handing you over to a colleague, who will answer here shortly."
      waiting_answer: "A colleague has your conversation and will answer here shortly."

A conversation is identified by ``metadata.conversation_id`` or else ``user``; without either, each request is
its own conversation (a handoff is still created, later turns are not matched to it).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Column, Float, Index, String, Table, insert, select, update

from portico.guardrails.common import GuardMetrics
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options, stock_answer
from portico.pipeline.services import Services
from portico.pipeline.step import Step
from portico.storage.db import metadata

handoffs = Table(
    "handoffs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # open | claimed | resolved
    Column("application", String(200), nullable=True),
    Column("conversation_id", String(200), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("reason", String(200), nullable=False),
    Column("messages", JSON, nullable=False),  # the conversation so far (OpenAI message dicts), appended to
    Column("assignee", String(200), nullable=True),
    Column("notes", JSON, nullable=True),  # the human's replies and notes: [{ts, text}]
)
Index("ix_handoffs_status", handoffs.c.status, handoffs.c.created_at)
Index("ix_handoffs_conversation", handoffs.c.conversation_id, handoffs.c.status)

STATUSES = ("open", "claimed", "resolved")


def conversation_of(ctx: RequestContext) -> str | None:
    req = ctx.request
    return (req.metadata or {}).get("conversation_id") or req.user


def _row(r: Any) -> dict[str, Any]:
    return {str(k): v for k, v in r._mapping.items()}


class HandoffStore:
    def __init__(self, db: Any) -> None:
        self.db = db

    async def create(self, ctx: RequestContext | None, reason: str, messages: list[dict[str, Any]],
                     application: str | None = None, conversation_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        now = time.time()
        row = {
            "id": "ho_" + uuid.uuid4().hex[:20], "created_at": now, "updated_at": now, "status": "open",
            "application": ctx.application if ctx else application,
            "conversation_id": conversation_of(ctx) if ctx else conversation_id,
            "key_name": (ctx.caller or {}).get("key") if ctx else None,
            "request_id": ctx.request_id if ctx else None, "reason": reason[:200], "messages": messages,
            "assignee": None, "notes": [],
        }  # fmt: skip
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(handoffs).values(**row))
        return row

    async def get(self, handoff_id: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            r = (await conn.execute(select(handoffs).where(handoffs.c.id == handoff_id))).first()
        return _row(r) if r else None

    async def list(self, status: str | None = None, application: str | None = None, limit: int = 50) -> list[dict]:
        q = select(handoffs).order_by(handoffs.c.created_at.desc()).limit(limit)
        if status:
            q = q.where(handoffs.c.status == status)
        if application:
            q = q.where(handoffs.c.application == application)
        async with self.db.engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(q)).all()]

    async def active_for(self, conversation_id: str, application: str | None) -> dict[str, Any] | None:
        q = (select(handoffs).where(handoffs.c.conversation_id == conversation_id, handoffs.c.status != "resolved",
                                    handoffs.c.application == application)
             .order_by(handoffs.c.created_at.desc()).limit(1))  # fmt: skip
        async with self.db.engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return _row(r) if r else None

    async def update(self, handoff_id: str, **fields: Any) -> dict[str, Any] | None:
        fields["updated_at"] = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(update(handoffs).where(handoffs.c.id == handoff_id).values(**fields))
        return await self.get(handoff_id)


def dump_messages(ctx: RequestContext) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json", exclude_none=True) for m in ctx.request.messages]


_ANGER = re.compile(
    r"\b(?:angry|furious|ridiculous|useless|worst|terrible|awful|hate|scam|unacceptable|pathetic|incompetent|"
    r"disgusting|fed up|sick of|waste of time|rip-?off|lawyer|sue you|complaint|stupid|idiots?)\b",
    re.IGNORECASE,
)


def anger_score(text: str) -> int:
    """A crude tone check: angry words, shouting (mostly capitals), runs of '!'."""
    score = len(_ANGER.findall(text))
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        score += 2
    score += len(re.findall(r"!{2,}", text))
    return score


class HandoffOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phrases: list[str] = Field(
        default_factory=lambda: [
            "talk to a human",
            "speak to a human",
            "real person",
            "human agent",
            "speak to an agent",
            "talk to an agent",
        ]
    )
    max_turns: int | None = Field(default=None, ge=1)
    anger: int = Field(default=0, ge=0)
    answer: str = "I'm handing you over to a colleague, who will answer here shortly."
    waiting_answer: str = "A colleague has your conversation and will answer here shortly."


class HandoffStep(Step):
    name = "handoff"
    reads = frozenset({"request", "application", "caller"})
    writes = frozenset()

    def __init__(self, options: HandoffOptions, store: HandoffStore, metrics: GuardMetrics) -> None:
        self.options = options
        self.store = store
        self.metrics = metrics
        self.phrases = [p.lower() for p in options.phrases]

    def reason(self, ctx: RequestContext) -> str | None:
        user = [m.text() for m in ctx.request.messages if m.role == "user"]
        last = user[-1] if user else ""
        low = last.lower()
        for p in self.phrases:
            if p in low:
                return f"phrase: {p}"
        if self.options.max_turns is not None and len(user) > self.options.max_turns:
            return f"turn limit: {len(user)} > {self.options.max_turns}"
        if self.options.anger and anger_score(last) >= self.options.anger:
            return f"anger: {anger_score(last)}"
        return None

    async def run(self, ctx: RequestContext) -> None:
        conv = conversation_of(ctx)
        active = await self.store.active_for(conv, ctx.application) if conv else None
        if active is not None:  # the conversation is with a human: keep the new turn, do not call the model
            known = len(active["messages"])
            new = dump_messages(ctx)[known:] if len(ctx.request.messages) > known else dump_messages(ctx)[-1:]
            await self.store.update(active["id"], messages=[*active["messages"], *new])
            ctx.note(self.name, decision="waiting", handoff=active["id"])
            self.metrics.count(self.name, "waiting")
            ctx.headers["x-portico-handoff"] = active["id"]
            stock_answer(ctx, self.name, self.options.waiting_answer)
            return
        why = self.reason(ctx)
        if why is None:
            ctx.note(self.name, decision="pass")
            return
        row = await self.store.create(ctx, why, dump_messages(ctx))
        ctx.note(self.name, decision="handoff", reason=why, handoff=row["id"])
        self.metrics.count(self.name, "handoff")
        ctx.headers["x-portico-handoff"] = row["id"]
        stock_answer(ctx, self.name, self.options.answer)


def handoff_step(options: dict[str, Any], services: Services) -> HandoffStep:
    opts = parse_options(HandoffOptions, options)
    return HandoffStep(opts, HandoffStore(services.db), GuardMetrics(services.metrics))
