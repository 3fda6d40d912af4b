"""Job statistics accumulated with the task counts.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    "st_user_us",
    "st_kernel_us",
    "st_wall_us",
    "st_wait_us",
    "st_read_blocks",
    "st_write_blocks",
    "st_retries",
)


def upgrade() -> None:
    with op.batch_alter_table("task_counts") as b:
        for c in COLUMNS:
            b.add_column(sa.Column(c, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("task_counts") as b:
        for c in COLUMNS:
            b.drop_column(c)
