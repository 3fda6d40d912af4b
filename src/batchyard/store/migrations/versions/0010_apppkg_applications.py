"""Applications and their package versions (one row per application, versions in the JSON body).

Revision ID: 0010_apppkg
Revises: 0009_pool_usage
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_apppkg"
down_revision = "0009_pool_usage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("etag", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("applications")
