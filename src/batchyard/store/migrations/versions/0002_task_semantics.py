"""Task dependencies, filterable execution columns, retention.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as b:
        b.add_column(sa.Column("deps_remaining", sa.BigInteger, nullable=False, server_default="0"))
        b.add_column(sa.Column("num_id", sa.BigInteger, nullable=True))
        b.add_column(sa.Column("dep_outcome", sa.String(8), nullable=True))
        b.add_column(sa.Column("exit_code", sa.BigInteger, nullable=True))
        b.add_column(sa.Column("result", sa.String(8), nullable=True))
        b.add_column(sa.Column("start_time", sa.String(32), nullable=True))
        b.add_column(sa.Column("end_time", sa.String(32), nullable=True))
        b.add_column(sa.Column("state_transition_time", sa.String(32), nullable=True))
        b.add_column(sa.Column("cleanup_at", sa.String(32), nullable=True))
    op.create_index("ix_tasks_runnable", "tasks", ["job_key", "state", "deps_remaining", "seq"])
    op.create_index("ix_tasks_num", "tasks", ["job_key", "num_id"])
    op.create_index("ix_tasks_cleanup", "tasks", ["cleanup_at"])
    op.create_table(
        "task_deps",
        sa.Column("job_key", sa.String(64), primary_key=True),
        sa.Column("parent_key", sa.String(64), primary_key=True),
        sa.Column("child_key", sa.String(64), primary_key=True),
    )
    op.create_table(
        "dep_ranges",
        sa.Column("job_key", sa.String(64), primary_key=True),
        sa.Column("child_key", sa.String(64), primary_key=True),
        sa.Column("start", sa.BigInteger, primary_key=True),
        sa.Column("end", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_dep_ranges_start", "dep_ranges", ["job_key", "start"])
    op.create_table(
        "dep_satisfied",
        sa.Column("job_key", sa.String(64), primary_key=True),
        sa.Column("num", sa.BigInteger, primary_key=True),
    )
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("deadline", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.drop_column("deadline")
    for t in ("dep_satisfied", "dep_ranges", "task_deps"):
        op.drop_table(t)
    for ix in ("ix_tasks_cleanup", "ix_tasks_num", "ix_tasks_runnable"):
        op.drop_index(ix, "tasks")
    with op.batch_alter_table("tasks") as b:
        for c in (
            "cleanup_at",
            "state_transition_time",
            "end_time",
            "start_time",
            "result",
            "exit_code",
            "dep_outcome",
            "num_id",
            "deps_remaining",
        ):
            b.drop_column(c)
