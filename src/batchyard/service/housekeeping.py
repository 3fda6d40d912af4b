"""The once-a-second pass of the pool features that follow other resources: auto pools whose owner ended
are deleted, and node time is recorded for pool usage. Each part is store-driven and idempotent."""

from __future__ import annotations

import logging

from batchyard.models.clock import monotonic
from batchyard.service import autopools, usage
from batchyard.service.context import Ctx

log = logging.getLogger("batchyard.housekeeping")


_last_usage: dict[int, float] = {}


def tick(ctx: Ctx) -> None:
    try:
        autopools.tick(ctx)
    except Exception:  # the other parts still run; the next pass retries
        log.exception("auto pool pass failed")
    now = monotonic()
    if now - _last_usage.get(id(ctx), 0.0) >= usage.PASS_EVERY:
        _last_usage[id(ctx)] = now
        try:
            usage.tick(ctx)
        except Exception:  # the next pass retries; figures are cumulative, so nothing is lost
            log.exception("pool usage pass failed")


def on_start(ctx: Ctx) -> None:
    """Before the server answers: record that the nodes in the store are here now, so a node removed before
    the first timer pass is not taken to have left before this start (service.usage)."""
    usage.tick(ctx)
    _last_usage[id(ctx)] = monotonic()
