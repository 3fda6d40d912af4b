"""Account certificates (the legacy /certificates operations).

Revision ID: 0008
Revises: 0004_sched
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0004_sched"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_transition_time", sa.String(32), nullable=False),
        sa.Column("etag", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("certificates")
