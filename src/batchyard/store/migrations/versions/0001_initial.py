"""Initial schema: pools, nodes, jobs, tasks, task counts, counters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("alloc_state", sa.String(16), nullable=False),
        sa.Column("etag", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("pool_key", sa.String(64), nullable=False, index=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("server_url", sa.String(256), nullable=True),
        sa.Column("state_transition_time", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("pool_key", sa.String(64), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("task_seq", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("job_key", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(80), nullable=True),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("etag", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_tasks_job_state_seq", "tasks", ["job_key", "state", "seq"])
    op.create_index("ix_tasks_job_state_key", "tasks", ["job_key", "state", "key"])
    op.create_index("ix_tasks_node", "tasks", ["node_id"])
    counts = [
        sa.Column(n, sa.BigInteger, nullable=False, server_default="0")
        for n in (
            "active",
            "running",
            "completed",
            "succeeded",
            "failed",
            "slots_active",
            "slots_running",
            "slots_completed",
            "slots_succeeded",
            "slots_failed",
        )
    ]
    op.create_table("task_counts", sa.Column("job_key", sa.String(64), primary_key=True), *counts)
    op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for t in ("counters", "task_counts", "tasks", "jobs", "nodes", "pools"):
        op.drop_table(t)
