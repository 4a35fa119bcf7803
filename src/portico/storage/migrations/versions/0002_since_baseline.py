"""What was added after the baseline: key tool grants, the approval queue and tool audit, feedback, evaluations,
stored responses.

Databases made between the baseline release and migrations were kept up to date by ``create_all`` plus an
add-missing-columns stopgap, so they hold some of this already: each step runs only if its table or column is
missing (a fresh database gets all of it).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = set(inspector.get_table_names())

    def columns(table: str) -> set[str]:
        return {c["name"] for c in inspector.get_columns(table)}

    if "approvals" not in have:
        op.create_table(
            "approvals",
            sa.Column("id", sa.String(length=40), nullable=False),
            sa.Column("tool", sa.String(length=64), nullable=False),
            sa.Column("status", sa.String(length=12), nullable=False),
            sa.Column("approval_by", sa.String(length=10), nullable=False),
            sa.Column("arguments", sa.JSON(), nullable=False),
            sa.Column("original_arguments", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("key_id", sa.String(length=40), nullable=True),
            sa.Column("key_name", sa.String(length=200), nullable=True),
            sa.Column("user_id", sa.String(length=200), nullable=True),
            sa.Column("application", sa.String(length=200), nullable=True),
            sa.Column("request_id", sa.String(length=128), nullable=True),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("conversation", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=False),
            sa.Column("decided_at", sa.Float(), nullable=True),
            sa.Column("decided_by", sa.String(length=200), nullable=True),
            sa.Column("note", sa.Text(), nullable=True),
            sa.Column("timeout", sa.Float(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=True),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_approvals_status_created", "approvals", ["status", "created_at"], unique=False)
    if "dataset_items" not in have:
        op.create_table(
            "dataset_items",
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("idx", sa.Integer(), nullable=False),
            sa.Column("item", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("name", "version", "idx"),
        )
    if "datasets" not in have:
        op.create_table(
            "datasets",
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("hash", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("items", sa.Integer(), nullable=False),
            sa.Column("source", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("name", "version"),
        )
    if "eval_pairs" not in have:
        op.create_table(
            "eval_pairs",
            sa.Column("run_id", sa.String(length=120), nullable=False),
            sa.Column("judge", sa.String(length=200), nullable=False),
            sa.Column("item_id", sa.String(length=200), nullable=False),
            sa.Column("a", sa.String(length=200), nullable=False),
            sa.Column("b", sa.String(length=200), nullable=False),
            sa.Column("winner", sa.String(length=8), nullable=False),
            sa.Column("details", sa.JSON(none_as_null=True), nullable=True),
            sa.PrimaryKeyConstraint("run_id", "judge", "item_id", "a", "b"),
        )
    if "eval_results" not in have:
        op.create_table(
            "eval_results",
            sa.Column("run_id", sa.String(length=120), nullable=False),
            sa.Column("item_id", sa.String(length=200), nullable=False),
            sa.Column("variant", sa.String(length=200), nullable=False),
            sa.Column("repeat", sa.Integer(), nullable=False),
            sa.Column("ts", sa.Float(), nullable=False),
            sa.Column("output", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("scores", sa.JSON(), nullable=False),
            sa.Column("details", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("cost_usd", sa.Float(), nullable=True),
            sa.Column("latency_ms", sa.Float(), nullable=True),
            sa.Column("tokens", sa.Integer(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("run_id", "item_id", "variant", "repeat"),
        )
    if "eval_runs" not in have:
        op.create_table(
            "eval_runs",
            sa.Column("run_id", sa.String(length=120), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("dataset", sa.String(length=200), nullable=False),
            sa.Column("dataset_version", sa.Integer(), nullable=False),
            sa.Column("dataset_hash", sa.String(length=64), nullable=False),
            sa.Column("spec", sa.JSON(), nullable=False),
            sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
            sa.PrimaryKeyConstraint("run_id"),
        )
        op.create_index("ix_eval_runs_name", "eval_runs", ["name", "created_at"], unique=False)
    if "feedback" not in have:
        op.create_table(
            "feedback",
            sa.Column("feedback_id", sa.String(length=128), nullable=False),
            sa.Column("ts", sa.Float(), nullable=False),
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("other_request_id", sa.String(length=128), nullable=True),
            sa.Column("metric", sa.String(length=64), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("value_num", sa.Float(), nullable=True),
            sa.Column("value_text", sa.Text(), nullable=True),
            sa.Column("value", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("key_id", sa.String(length=40), nullable=True),
            sa.Column("key_name", sa.String(length=200), nullable=True),
            sa.Column("user", sa.String(length=200), nullable=True),
            sa.Column("session", sa.String(length=200), nullable=True),
            sa.Column("application", sa.String(length=200), nullable=True),
            sa.Column("version", sa.String(length=40), nullable=True),
            sa.Column("model", sa.String(length=200), nullable=True),
            sa.Column("other_application", sa.String(length=200), nullable=True),
            sa.Column("other_version", sa.String(length=40), nullable=True),
            sa.Column("other_model", sa.String(length=200), nullable=True),
            sa.PrimaryKeyConstraint("feedback_id"),
        )
        op.create_index("ix_feedback_request", "feedback", ["request_id"], unique=False)
        op.create_index("ix_feedback_ts", "feedback", ["ts"], unique=False)
    if "request_meta" not in have:
        op.create_table(
            "request_meta",
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("ts", sa.Float(), nullable=False),
            sa.Column("key_id", sa.String(length=40), nullable=True),
            sa.Column("key_name", sa.String(length=200), nullable=True),
            sa.Column("application", sa.String(length=200), nullable=True),
            sa.Column("version", sa.String(length=40), nullable=True),
            sa.Column("model", sa.String(length=200), nullable=True),
            sa.Column("deployment", sa.String(length=300), nullable=True),
            sa.Column("status", sa.Integer(), nullable=True),
            sa.Column("user", sa.String(length=200), nullable=True),
            sa.Column("session", sa.String(length=200), nullable=True),
            sa.Column("variant", sa.String(length=200), nullable=True),
            sa.PrimaryKeyConstraint("request_id"),
        )
        op.create_index("ix_request_meta_session", "request_meta", ["session"], unique=False)
    if "responses" not in have:
        op.create_table(
            "responses",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("owner", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=True),
            sa.Column("response", sa.JSON(), nullable=False),
            sa.Column("input_items", sa.JSON(), nullable=False),
            sa.Column("context", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_responses_expires", "responses", ["expires_at"], unique=False)
    if "tool_audit" not in have:
        op.create_table(
            "tool_audit",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("ts", sa.Float(), nullable=False),
            sa.Column("actor", sa.String(length=200), nullable=True),
            sa.Column("action", sa.String(length=24), nullable=False),
            sa.Column("tool", sa.String(length=64), nullable=False),
            sa.Column("approval_id", sa.String(length=40), nullable=True),
            sa.Column("request_id", sa.String(length=128), nullable=True),
            sa.Column("arguments_sha256", sa.String(length=64), nullable=True),
            sa.Column("status", sa.String(length=24), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_tool_audit_ts", "tool_audit", ["ts"], unique=False)
    if "tools" not in columns("api_keys"):
        op.add_column("api_keys", sa.Column("tools", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "tools")
    for name in (
        "tool_audit",
        "responses",
        "request_meta",
        "feedback",
        "eval_runs",
        "eval_results",
        "eval_pairs",
        "datasets",
        "dataset_items",
        "approvals",
    ):
        op.drop_table(name)
