"""Autoscale's in-memory side: the server's interval floor, the per-pool metric samples and the run history.

Samples are kept in memory only (as on the service, a new pool or a restarted server starts with no history:
formulas must cope with `GetSamplePercent` < 100). Due times and the last run are persisted in the pool body.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: The service's shortest evaluation interval; a batchyard server may be configured lower (an extension).
SERVICE_MIN_INTERVAL = timedelta(minutes=5)
MAX_INTERVAL = timedelta(hours=168)
DEFAULT_INTERVAL = timedelta(minutes=15)
#: The service samples every metric every 30 s.
SERVICE_SAMPLE_PERIOD = timedelta(seconds=30)
#: How far back samples are kept per pool and metric (batchyard's choice; the service does not say).
HISTORY_WINDOW = timedelta(hours=24)
#: The most samples kept per pool and metric, whatever the period (bounds memory with a short period).
MAX_SAMPLES = 5000
#: Runs kept per pool for `GET /batchyard/pools/{id}/autoscalehistory`.
RUN_HISTORY = 50


@dataclass
class AutoscaleState:
    """Per-server autoscale settings and memory (one per `Ctx`)."""

    min_interval: timedelta = SERVICE_MIN_INTERVAL
    # pool key -> metric name -> (time, value), oldest first
    samples: dict[str, dict[str, deque[tuple[datetime, float]]]] = field(default_factory=dict)
    last_sample: dict[str, datetime] = field(default_factory=dict)
    runs: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    # keys of the pools with autoscale on; None until the first timer pass has read them from the store
    enabled: set[str] | None = None
    # pool key -> its next evaluation (a copy of the body's, so an idle timer pass reads no pool)
    next_due: dict[str, datetime] = field(default_factory=dict)

    @property
    def sample_period(self) -> timedelta:
        """30 s like the service, shorter when the interval floor is shorter (so fast formulas see fresh data)."""
        return min(SERVICE_SAMPLE_PERIOD, max(self.min_interval, timedelta(seconds=1)))

    def record(self, pool_key: str, now: datetime, values: dict[str, float]) -> None:
        per = self.samples.setdefault(pool_key, {})
        oldest = now - HISTORY_WINDOW
        for name, v in values.items():
            q = per.setdefault(name, deque(maxlen=MAX_SAMPLES))
            q.append((now, float(v)))
            while q and q[0][0] < oldest:
                q.popleft()
        self.last_sample[pool_key] = now

    def remember(self, pool_key: str, run: dict[str, Any]) -> None:
        self.runs.setdefault(pool_key, deque(maxlen=RUN_HISTORY)).append(run)

    def track(self, pool_key: str, on: bool) -> None:
        if self.enabled is not None:
            if on:
                self.enabled.add(pool_key)
            else:
                self.enabled.discard(pool_key)
        if not on:
            self.next_due.pop(pool_key, None)

    def forget(self, pool_key: str) -> None:
        self.track(pool_key, False)
        self.samples.pop(pool_key, None)
        self.last_sample.pop(pool_key, None)
        self.runs.pop(pool_key, None)
