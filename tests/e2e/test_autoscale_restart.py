"""A SIGKILLed server neither repeats nor skips an autoscale evaluation: the due time is in the store."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.models.clock import parse_time
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, pool_body

pytestmark = pytest.mark.slow


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path / "data", extra_args=["--autoscale-min-interval", "PT1S"]).start()
    try:
        yield s
    finally:
        s.stop()


def test_sigkill_restart_keeps_the_autoscale_schedule(srv: LiveServer) -> None:
    raw = Raw(srv)
    body = pool_body(
        "p",
        enableAutoScale=True,
        autoScaleFormula="$TargetDedicatedNodes=0;",
        autoScaleEvaluationInterval="PT6S",
    )
    body.pop("targetDedicatedNodes")
    assert raw.post("/pools", body).status_code == 201
    first = raw.json("/pools/p")["autoScaleRun"]["timestamp"]
    srv.kill(signal.SIGKILL)
    srv.start()  # same data dir and port, well before the next run is due
    raw = Raw(srv)
    history = raw.json("/batchyard/pools/p/autoscalehistory")
    assert history["runs"] == []  # not repeated on restart: it was not due
    assert raw.json("/pools/p")["autoScaleRun"]["timestamp"] == first
    assert (parse_time(history["nextEvaluationTime"]) - parse_time(first)).total_seconds() == 6
    # and not skipped: the run due 6 s after the first one happens on the new server
    second = wait_for(
        lambda: (t := raw.json("/pools/p")["autoScaleRun"]["timestamp"]) != first and t,
        20,
        0.1,
        "the next run",
    )
    gap = (parse_time(second) - parse_time(first)).total_seconds()
    assert 6 <= gap < 9, gap
    assert len(raw.json("/batchyard/pools/p/autoscalehistory")["runs"]) == 1
