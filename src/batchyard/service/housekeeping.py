"""The once-a-second pass of the pool features that follow other resources: auto pools whose owner ended
are deleted, and node time is recorded for pool usage. Each part is store-driven and idempotent."""

from __future__ import annotations

import logging

from batchyard.service import autopools
from batchyard.service.context import Ctx

log = logging.getLogger("batchyard.housekeeping")


def tick(ctx: Ctx) -> None:
    try:
        autopools.tick(ctx)
    except Exception:  # the other parts still run; the next pass retries
        log.exception("auto pool pass failed")
