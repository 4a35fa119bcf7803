"""An index on request_meta.ts: the retention purge deletes its old rows by time.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "ix_request_meta_ts" in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("request_meta")}:
        return  # a database this branch's create_all made before migrations
    op.create_index("ix_request_meta_ts", "request_meta", ["ts"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_request_meta_ts", table_name="request_meta")
