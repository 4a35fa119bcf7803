"""Baseline: the schema of the last release before migrations (git 632235f), as ``create_all`` made it.

Each table is created only if missing, so a database from before migrations upgrades from nothing (its
tables kept); the later revisions likewise create only what is missing.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database from before migrations (``create_all`` made it) already has these tables: kept as they are.
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "api_keys" not in have:
        op.create_table(
            "api_keys",
            sa.Column("id", sa.String(length=40), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("key_hash", sa.String(length=64), nullable=False),
            sa.Column("key_prefix", sa.String(length=16), nullable=False),
            sa.Column("models", sa.JSON(), nullable=True),
            sa.Column("rpm", sa.Integer(), nullable=True),
            sa.Column("tpm", sa.Integer(), nullable=True),
            sa.Column("budget_usd", sa.Float(), nullable=True),
            sa.Column("budget_period", sa.String(length=8), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("revoked_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("key_hash"),
        )
    if "handoffs" not in have:
        op.create_table(
            "handoffs",
            sa.Column("id", sa.String(length=40), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("application", sa.String(length=200), nullable=True),
            sa.Column("conversation_id", sa.String(length=200), nullable=True),
            sa.Column("key_name", sa.String(length=200), nullable=True),
            sa.Column("request_id", sa.String(length=128), nullable=True),
            sa.Column("reason", sa.String(length=200), nullable=False),
            sa.Column("messages", sa.JSON(), nullable=False),
            sa.Column("assignee", sa.String(length=200), nullable=True),
            sa.Column("notes", sa.JSON(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_handoffs_conversation", "handoffs", ["conversation_id", "status"], unique=False)
        op.create_index("ix_handoffs_status", "handoffs", ["status", "created_at"], unique=False)
    if "spans" not in have:
        op.create_table(
            "spans",
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("span_id", sa.String(length=16), nullable=False),
            sa.Column("parent_id", sa.String(length=16), nullable=True),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("start_ms", sa.Float(), nullable=False),
            sa.Column("duration_ms", sa.Float(), nullable=False),
            sa.Column("status", sa.String(length=8), nullable=False),
            sa.Column("attributes", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("request_id", "span_id"),
        )
    if "traces" not in have:
        op.create_table(
            "traces",
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("ts", sa.Float(), nullable=False),
            sa.Column("day", sa.String(length=10), nullable=False),
            sa.Column("endpoint", sa.String(length=40), nullable=False),
            sa.Column("key_name", sa.String(length=200), nullable=True),
            sa.Column("model", sa.String(length=200), nullable=True),
            sa.Column("application", sa.String(length=200), nullable=True),
            sa.Column("deployment", sa.String(length=300), nullable=True),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.Column("prompt_tokens", sa.Integer(), nullable=False),
            sa.Column("completion_tokens", sa.Integer(), nullable=False),
            sa.Column("input", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("output", sa.JSON(none_as_null=True), nullable=True),
            sa.PrimaryKeyConstraint("request_id"),
        )
        op.create_index("ix_traces_ts", "traces", ["ts"], unique=False)
    if "usage" not in have:
        op.create_table(
            "usage",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("ts", sa.Float(), nullable=False),
            sa.Column("day", sa.String(length=10), nullable=False),
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("key_id", sa.String(length=40), nullable=True),
            sa.Column("key_name", sa.String(length=200), nullable=True),
            sa.Column("model", sa.String(length=200), nullable=True),
            sa.Column("application", sa.String(length=200), nullable=True),
            sa.Column("deployment", sa.String(length=300), nullable=True),
            sa.Column("endpoint", sa.String(length=40), nullable=False),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("error_type", sa.String(length=60), nullable=True),
            sa.Column("prompt_tokens", sa.Integer(), nullable=False),
            sa.Column("completion_tokens", sa.Integer(), nullable=False),
            sa.Column("cached_tokens", sa.Integer(), nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_usage_key_ts", "usage", ["key_id", "ts"], unique=False)
        op.create_index("ix_usage_ts", "usage", ["ts"], unique=False)


def downgrade() -> None:
    for name in ("usage", "traces", "spans", "handoffs", "api_keys"):
        op.drop_table(name)
