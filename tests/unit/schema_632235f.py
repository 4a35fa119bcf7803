"""The schema of the last release before migrations (git 632235f), as its ``create_all`` made it: copied from that
commit's storage/db.py and guardrails/handoffs.py so the upgrade test builds a real old database without git."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, Integer, MetaData, String, Table

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),  # shown in lists so people can tell keys apart
    Column("models", JSON, nullable=True),  # null: every model
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("budget_usd", Float, nullable=True),
    Column("budget_period", String(8), nullable=True),  # day | month | total
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("day", String(10), nullable=False),  # UTC YYYY-MM-DD, precomputed so grouping is dialect-free
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("application", String(200), nullable=True),
    Column("deployment", String(300), nullable=True),
    Column("endpoint", String(40), nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(60), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=1),
)
Index("ix_usage_ts", usage.c.ts)
Index("ix_usage_key_ts", usage.c.key_id, usage.c.ts)

traces = Table(
    "traces",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("ts", Float, nullable=False),  # when the request started (epoch seconds)
    Column("day", String(10), nullable=False),
    Column("endpoint", String(40), nullable=False),
    Column("key_name", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("application", String(200), nullable=True),
    Column("deployment", String(300), nullable=True),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("input", JSON(none_as_null=True), nullable=True),  # per tracing.content; null when not stored
    Column("output", JSON(none_as_null=True), nullable=True),
)
Index("ix_traces_ts", traces.c.ts)

spans = Table(
    "spans",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_id", String(16), nullable=True),
    Column("name", String(200), nullable=False),
    Column("start_ms", Float, nullable=False),  # offset from the trace's start
    Column("duration_ms", Float, nullable=False),
    Column("status", String(8), nullable=False),  # ok | error
    Column("attributes", JSON, nullable=False),
)


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
