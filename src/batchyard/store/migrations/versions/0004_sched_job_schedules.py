"""Job schedules, and job keys long enough for the jobs they create (`<scheduleId>:job-<n>`).

Revision ID: 0004_sched
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_sched"
down_revision = "0003"
branch_labels = None
depends_on = None

# a 64-character schedule id + ":job-" + the run number: 80 characters (SQLite does not enforce lengths)
JOB_KEY_COLUMNS = (
    ("jobs", "key"),
    ("jobs", "id"),
    ("tasks", "job_key"),
    ("task_deps", "job_key"),
    ("dep_ranges", "job_key"),
    ("dep_satisfied", "job_key"),
    ("task_counts", "job_key"),
)


def upgrade() -> None:
    op.create_table(
        "job_schedules",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("next_run", sa.String(32), nullable=True),
        sa.Column("job_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("etag", sa.String(24), nullable=False),
        sa.Column("last_modified", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_job_schedules_state", "job_schedules", ["state"])
    if op.get_bind().dialect.name == "postgresql":
        for table, column in JOB_KEY_COLUMNS:
            op.alter_column(table, column, type_=sa.String(80))


def downgrade() -> None:
    op.drop_index("ix_job_schedules_state", "job_schedules")
    op.drop_table("job_schedules")
