"""Tables: each row holds the resource as JSON plus the columns that queries and the scheduler index."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

pools = Table(
    "pools",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("alloc_state", String(16), nullable=False),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("creation_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("pool_key", String(64), nullable=False, index=True),
    Column("state", String(24), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("token", String(64), nullable=False),
    Column("pid", Integer, nullable=True),
    Column("server_url", String(256), nullable=True),
    Column("state_transition_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("pool_key", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("task_seq", BigInteger, nullable=False),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("creation_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("job_key", String(64), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("node_id", String(80), nullable=True),
    Column("slots", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("creation_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_tasks_job_state_seq", "job_key", "state", "seq"),
    Index("ix_tasks_job_state_key", "job_key", "state", "key"),
    Index("ix_tasks_node", "node_id"),
)

task_counts = Table(
    "task_counts",
    metadata,
    Column("job_key", String(64), primary_key=True),
    Column("active", BigInteger, nullable=False, default=0),
    Column("running", BigInteger, nullable=False, default=0),
    Column("completed", BigInteger, nullable=False, default=0),
    Column("succeeded", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
    Column("slots_active", BigInteger, nullable=False, default=0),
    Column("slots_running", BigInteger, nullable=False, default=0),
    Column("slots_completed", BigInteger, nullable=False, default=0),
    Column("slots_succeeded", BigInteger, nullable=False, default=0),
    Column("slots_failed", BigInteger, nullable=False, default=0),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
