"""Pool usage: one row per node presence in a pool (core time for usage statistics and metrics) with the
resource figures its agent reported.

Revision ID: 0009_pool_usage
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_pool_usage"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_usage",
        sa.Column("node_id", sa.String(80), primary_key=True),
        sa.Column("start", sa.String(32), primary_key=True),
        sa.Column("pool_key", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(64), nullable=False),
        sa.Column("pool_created", sa.String(32), nullable=False),
        sa.Column("vm_size", sa.String(64), nullable=False),
        sa.Column("cores", sa.Integer, nullable=False),
        sa.Column("dedicated", sa.Integer, nullable=False),
        sa.Column("end", sa.String(32), nullable=True),
        sa.Column("res", sa.Text, nullable=True),
    )
    op.create_index("ix_pool_usage_pool", "pool_usage", ["pool_key", "start"])
    op.create_index("ix_pool_usage_end", "pool_usage", ["end"])


def downgrade() -> None:
    op.drop_index("ix_pool_usage_end", "pool_usage")
    op.drop_index("ix_pool_usage_pool", "pool_usage")
    op.drop_table("pool_usage")
