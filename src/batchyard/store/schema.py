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

# job keys are 80 characters: a schedule's jobs are `<scheduleId>:job-<n>` (migration 0004_sched)
JOB_KEY_LEN = 80

jobs = Table(
    "jobs",
    metadata,
    Column("key", String(JOB_KEY_LEN), primary_key=True),
    Column("id", String(JOB_KEY_LEN), nullable=False),
    Column("pool_key", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("task_seq", BigInteger, nullable=False),
    Column("deadline", String(32), nullable=True),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("creation_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("job_key", String(JOB_KEY_LEN), primary_key=True),
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
    Column("deps_remaining", BigInteger, nullable=False, server_default="0"),
    Column("num_id", BigInteger, nullable=True),
    Column("dep_outcome", String(8), nullable=True),
    Column("exit_code", BigInteger, nullable=True),
    Column("result", String(8), nullable=True),
    Column("start_time", String(32), nullable=True),
    Column("end_time", String(32), nullable=True),
    Column("state_transition_time", String(32), nullable=True),
    Column("cleanup_at", String(32), nullable=True),
    Index("ix_tasks_job_state_seq", "job_key", "state", "seq"),
    Index("ix_tasks_job_state_key", "job_key", "state", "key"),
    Index("ix_tasks_node", "node_id"),
    Index("ix_tasks_runnable", "job_key", "state", "deps_remaining", "seq"),
    Index("ix_tasks_num", "job_key", "num_id"),
    Index("ix_tasks_cleanup", "cleanup_at"),
)

task_deps = Table(
    "task_deps",
    metadata,
    Column("job_key", String(JOB_KEY_LEN), primary_key=True),
    Column("parent_key", String(64), primary_key=True),
    Column("child_key", String(64), primary_key=True),
)

dep_ranges = Table(
    "dep_ranges",
    metadata,
    Column("job_key", String(JOB_KEY_LEN), primary_key=True),
    Column("child_key", String(64), primary_key=True),
    Column("start", BigInteger, primary_key=True),
    Column("end", BigInteger, nullable=False),
    Index("ix_dep_ranges_start", "job_key", "start"),
)

dep_satisfied = Table(
    "dep_satisfied",
    metadata,
    Column("job_key", String(JOB_KEY_LEN), primary_key=True),
    Column("num", BigInteger, primary_key=True),
)

task_counts = Table(
    "task_counts",
    metadata,
    Column("job_key", String(JOB_KEY_LEN), primary_key=True),
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
    # job statistics, accumulated as tasks finish (microseconds, 512-byte blocks)
    Column("st_user_us", BigInteger, nullable=False, server_default="0"),
    Column("st_kernel_us", BigInteger, nullable=False, server_default="0"),
    Column("st_wall_us", BigInteger, nullable=False, server_default="0"),
    Column("st_wait_us", BigInteger, nullable=False, server_default="0"),
    Column("st_read_blocks", BigInteger, nullable=False, server_default="0"),
    Column("st_write_blocks", BigInteger, nullable=False, server_default="0"),
    Column("st_retries", BigInteger, nullable=False, server_default="0"),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

job_schedules = Table(
    "job_schedules",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    # the pending run's due time (nextRunTime) while the schedule has one
    Column("next_run", String(32), nullable=True),
    # the number of jobs created so far: job n is `<id>:job-<n>`, never reused
    Column("job_seq", BigInteger, nullable=False, server_default="0"),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("creation_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

certificates = Table(
    "certificates",
    metadata,
    # `<thumbprintAlgorithm>-<thumbprint>`, lower case (the service compares thumbprints case-insensitively)
    Column("key", String(80), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("state_transition_time", String(32), nullable=False),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

# application packages (batchyard's management surface; the data plane reads them): one row per application,
# its versions in the body (migration 0010_apppkg)
applications = Table(
    "applications",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("etag", String(24), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("creation_time", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

# one row per node presence in a pool: its core time (start..end, end NULL while the node is there) and the
# cumulative resource figures its agent reported (JSON), for pool statistics and usage metrics (0009_pool_usage)
pool_usage = Table(
    "pool_usage",
    metadata,
    Column("node_id", String(80), primary_key=True),
    Column("start", String(32), primary_key=True),
    Column("pool_key", String(64), nullable=False),
    Column("pool_id", String(64), nullable=False),
    Column("pool_created", String(32), nullable=False),
    Column("vm_size", String(64), nullable=False),
    Column("cores", Integer, nullable=False),
    Column("dedicated", Integer, nullable=False),
    Column("end", String(32), nullable=True),
    Column("res", Text, nullable=True),
    Index("ix_pool_usage_pool", "pool_key", "start"),
    Index("ix_pool_usage_end", "end"),
)
