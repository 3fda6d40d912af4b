"""Account-wide figures: the lifetime job statistics of the older api-versions (`GET /lifetimejobstats`).

The service aggregates the statistics of every job the account ever ran, deleted ones included. Live jobs
keep theirs in their `task_counts` row; when a job is deleted its figures are folded into one row under a
key no job id can take (`~deleted`), so the lifetime totals are one SUM over the table.
"""

from __future__ import annotations

from datetime import UTC, datetime

from batchyard.models.clock import format_time, utcnow
from batchyard.models.statistics import job_stats
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import Tx

#: The task_counts row holding the figures of deleted jobs (Batch ids cannot contain '~').
DELETED_JOBS_KEY = "~deleted"
#: The counters row holding when the account's statistics started (microseconds since the epoch).
EPOCH_COUNTER = "account_stats_epoch_us"

_LIFETIME_COLUMNS = (
    "succeeded",
    "failed",
    "st_user_us",
    "st_kernel_us",
    "st_wall_us",
    "st_wait_us",
    "st_read_blocks",
    "st_write_blocks",
    "st_retries",
)


def fold_deleted_job(tx: Tx, job_key: str) -> None:
    """Keep a deleted job's figures in the account totals; call before its task_counts row goes."""
    row = tx.get(schema.task_counts, job_key=job_key)
    if not row:
        return
    deltas = {c: int(row.get(c) or 0) for c in _LIFETIME_COLUMNS}
    if not tx.exists(schema.task_counts, job_key=DELETED_JOBS_KEY):
        tx.insert(schema.task_counts, {"job_key": DELETED_JOBS_KEY, **{c: 0 for c in _LIFETIME_COLUMNS}})
    tx.add_counts(DELETED_JOBS_KEY, deltas)


def _epoch(tx: Tx) -> str:
    row = tx.get(schema.counters, name=EPOCH_COUNTER)
    if row is None:
        now = utcnow()
        tx.insert(schema.counters, {"name": EPOCH_COUNTER, "value": int(now.timestamp() * 1e6)})
        return format_time(now)
    return format_time(datetime.fromtimestamp(int(row["value"]) / 1e6, UTC))


def account_epoch(tx: Tx) -> str:
    """When the account's statistics begin (recorded on the first read if the store predates it)."""
    return _epoch(tx)


def ensure_epoch(ctx: Ctx) -> None:
    """Record when the account's statistics begin (the first start of a new store)."""
    with ctx.store.tx() as tx:
        _epoch(tx)


def lifetime_job_stats(ctx: Ctx, url: str) -> Body:
    with ctx.store.tx() as tx:
        start = _epoch(tx)
        totals = tx.sums(schema.task_counts, _LIFETIME_COLUMNS)
    return job_stats(url, start, format_time(utcnow()), totals)
