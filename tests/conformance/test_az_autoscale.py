"""`az batch pool autoscale enable/evaluate/disable` (azure-cli 2.91.0) against a live server."""

from __future__ import annotations

import pytest

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401 - the az fixture (and its live server)
from tests.support.live import wait_for
from tests.support.raw import Raw, pool_body

pytestmark = pytest.mark.az


def test_az_pool_autoscale_enable_evaluate_disable(az: Az, uid: str) -> None:  # noqa: F811
    raw = Raw(az.live)
    pool_id = f"azas-{uid}"
    assert raw.post("/pools", pool_body(pool_id, 0)).status_code == 201
    az.json("batch", "pool", "show", "--pool-id", pool_id)
    wait_for(lambda: raw.json(f"/pools/{pool_id}")["allocationState"] == "steady", 30, 0.05, "steady")

    az.run(
        "batch", "pool", "autoscale", "enable", "--pool-id", pool_id,
        "--auto-scale-formula", "$TargetDedicatedNodes=0;$x=$CurrentDedicatedNodes+1;",
        "--auto-scale-evaluation-interval", "PT5M", "-o", "json",
    )  # fmt: skip
    pool = az.json("batch", "pool", "show", "--pool-id", pool_id)
    assert pool["enableAutoScale"] is True
    assert pool["autoScaleEvaluationInterval"] in ("0:05:00", "PT5M"), pool["autoScaleEvaluationInterval"]
    assert pool["autoScaleRun"]["results"].endswith("$x=1")

    run = az.json(
        "batch", "pool", "autoscale", "evaluate", "--pool-id", pool_id,
        "--auto-scale-formula", "$TargetDedicatedNodes=3",
    )  # fmt: skip
    assert (
        run["results"] == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    )

    bad = az.run(
        "batch", "pool", "autoscale", "evaluate", "--pool-id", pool_id, "--auto-scale-formula", "$x = (", rc=1
    )  # fmt: skip
    assert "AutoScalingFormulaSyntaxError" in bad.stderr or "syntax error" in bad.stderr

    az.run("batch", "pool", "autoscale", "disable", "--pool-id", pool_id, "-o", "json")
    assert az.json("batch", "pool", "show", "--pool-id", pool_id)["enableAutoScale"] is False
    raw.delete(f"/pools/{pool_id}")
