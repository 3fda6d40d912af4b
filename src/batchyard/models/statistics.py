"""Task and job statistics (`$expand=stats`) in the service's wire shape. Pure.

CPU times come from the task processes' resource usage (wait4). I/O is what Linux accounts for a process in
512-byte blocks (`ru_inblock`/`ru_oublock`): the byte totals are exact, and the IOps figures are those block
counts, since per-call counts are gone once a process has exited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from batchyard.models.decode import format_duration

GIB = float(1 << 30)


def _dur(seconds: float) -> str:
    return format_duration(timedelta(seconds=max(seconds, 0.0)))


def task_stats(url: str, start: str, last_update: str, acc: dict[str, Any]) -> dict[str, Any]:
    rb, wb = int(acc.get("rb", 0)), int(acc.get("wb", 0))
    return {
        "url": url,
        "startTime": start,
        "lastUpdateTime": last_update,
        "userCPUTime": _dur(float(acc.get("user", 0.0))),
        "kernelCPUTime": _dur(float(acc.get("kernel", 0.0))),
        "wallClockTime": _dur(float(acc.get("wall", 0.0))),
        "readIOps": str(rb),
        "writeIOps": str(wb),
        "readIOGiB": rb * 512 / GIB,
        "writeIOGiB": wb * 512 / GIB,
        "waitTime": _dur(float(acc.get("wait", 0.0))),
    }


def job_stats(url: str, start: str, last_update: str, counts: dict[str, Any]) -> dict[str, Any]:
    rb, wb = int(counts.get("st_read_blocks", 0)), int(counts.get("st_write_blocks", 0))
    return {
        "url": url,
        "startTime": start,
        "lastUpdateTime": last_update,
        "userCPUTime": _dur(int(counts.get("st_user_us", 0)) / 1e6),
        "kernelCPUTime": _dur(int(counts.get("st_kernel_us", 0)) / 1e6),
        "wallClockTime": _dur(int(counts.get("st_wall_us", 0)) / 1e6),
        "readIOps": str(rb),
        "writeIOps": str(wb),
        "readIOGiB": rb * 512 / GIB,
        "writeIOGiB": wb * 512 / GIB,
        "numSucceededTasks": str(int(counts.get("succeeded", 0))),
        "numFailedTasks": str(int(counts.get("failed", 0))),
        "numTaskRetries": str(int(counts.get("st_retries", 0))),
        "waitTime": _dur(int(counts.get("st_wait_us", 0)) / 1e6),
    }


def attempt_usage(
    usage: dict[str, Any] | None, start_s: float, end_s: float, created_s: float
) -> tuple[dict[str, float], dict[str, int]]:
    """One finished attempt: what it adds to the task's totals and (as integer deltas) to its job's."""
    u = usage or {}
    add = {
        "user": float(u.get("user", 0.0)),
        "kernel": float(u.get("kernel", 0.0)),
        "wall": max(end_s - start_s, 0.0),
        "wait": max(start_s - created_s, 0.0),
        "rb": float(u.get("readOps", 0)),
        "wb": float(u.get("writeOps", 0)),
    }
    deltas = {
        "st_user_us": int(add["user"] * 1e6),
        "st_kernel_us": int(add["kernel"] * 1e6),
        "st_wall_us": int(add["wall"] * 1e6),
        "st_wait_us": int(add["wait"] * 1e6),
        "st_read_blocks": int(add["rb"]),
        "st_write_blocks": int(add["wb"]),
    }
    return add, deltas
