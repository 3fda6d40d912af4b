"""The official JavaScript client, `@azure/batch` 10.2.0 (api-version 2022-10-01.16.0), unchanged.

`tests/js/flow.cjs` drives the basic flow through the SDK and prints what the SDK returned; the assertions
live here. `scripts/js-deps` (called by the README test command) installs the pinned package; under
`CI=true` a missing Node or package fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LiveServer

JS_DIR = Path(__file__).resolve().parents[1] / "js"
PACKAGE = JS_DIR / "node_modules" / "@azure" / "batch" / "package.json"

pytestmark = pytest.mark.slow


def _require_js() -> str:
    node = shutil.which("node")
    missing = "node is not on PATH" if node is None else None
    if node is not None and not PACKAGE.exists():
        missing = f"@azure/batch is not installed in {JS_DIR} (run scripts/js-deps)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the JavaScript client is required under CI=true: {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def flow(live: LiveServer) -> dict[str, Any]:
    node = _require_js()
    assert json.loads(PACKAGE.read_text())["version"] == "10.2.0"
    env = dict(
        os.environ,
        BATCH_ENDPOINT=live.endpoint,
        BATCH_ACCOUNT=live.account,
        BATCH_KEY=live.key,
        RUN_ID=uuid.uuid4().hex[:8],
    )
    proc = subprocess.run(
        [node, str(JS_DIR / "flow.cjs")], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=240
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output from the JS flow (exit {proc.returncode}): {proc.stderr[-2000:]}"
    out: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in out, (
        f"JS flow failed: {out.get('error')} {proc.stderr[-2000:]}"
    )
    return out


def test_client_speaks_its_own_api_version(flow: dict[str, Any]) -> None:
    assert flow["apiVersion"] == "2022-10-01.16.0"


def test_pool_node_job_and_tasks(flow: dict[str, Any]) -> None:
    assert flow["pool"] == {
        "id": flow["pool"]["id"],
        "vmSize": "standard_d2s_v3",
        "taskSlotsPerNode": 2,
        "etag": True,
    }
    assert flow["poolExists"]["body"] is True
    assert flow["node"] == {"state": "idle", "isDedicated": True}
    assert flow["job"] == {"state": "active", "priority": 10, "usesTaskDependencies": True}
    counts = {"active": 0, "running": 0, "completed": 153, "succeeded": 153, "failed": 0}
    assert flow["taskCounts"] == counts
    assert flow["taskSlotCounts"] == counts
    assert flow["hello"] == {"state": "completed", "exitCode": 0, "result": "success"}


def test_collections_over_100_are_chunked_by_the_caller(flow: dict[str, Any]) -> None:
    # the JS client validates MaxItems 100 itself, before sending anything
    assert flow["over100"] != "accepted"
    assert flow["addedCount"] == 150 and flow["addedStatuses"] == ["Success"]


def test_files_ranges_filters_and_paging(flow: dict[str, Any]) -> None:
    assert flow["stdout"] == "hello from hello\n"
    assert flow["stdoutRange"] == "hello"
    assert flow["fileProps"]["contentLength"] == len("hello from hello\n")
    assert flow["taskFiles"] == ["stderr.txt", "stdout.txt", "wd"]
    assert flow["filtered"] == {"count": 50, "keys": ["id", "state"]}  # t100..t149
    assert flow["paged"] == {"count": 153, "pages": 4}


def test_conditions_and_job_control(flow: dict[str, Any]) -> None:
    assert flow["staleIfMatch"] == {"status": 412, "code": "ConditionNotMet"}
    assert flow["priorityAfterPatch"] == 20
    assert flow["terminated"] == {"state": "completed", "failure": "TaskEnded"}
    assert flow["reactivatedState"] == "active"
    assert flow["disabledState"] == "disabled"
    assert flow["afterUpdate"] == 5
    assert flow["resized"] == 2
    assert flow["jobGone"] == "JobNotFound"


def test_lifetime_job_statistics(flow: dict[str, Any]) -> None:
    stats = flow["lifetimeJobStats"]
    assert stats["hasUrl"]
    assert stats["numSucceededTasks"] >= 153  # the module's server may have run other jobs too
    assert stats["numFailedTasks"] >= 1  # the terminated sleeper
    assert stats["wallClockTime"].startswith("PT")


def test_lifetime_pool_statistics(flow: dict[str, Any]) -> None:
    stats = flow["lifetimePoolStats"]
    assert stats["hasUrl"] and stats["startTime"]
    # the flow's pool had nodes for a few seconds: their core time and what their agents measured
    assert stats["dedicatedCoreTime"].startswith("PT") and stats["dedicatedCoreTime"] != "PT0S"
    assert 0 <= stats["avgCPUPercentage"] <= 100
    assert stats["peakMemoryGiB"] > 0
    assert isinstance(stats["diskReadIOps"], int)
    # usage metrics: the last half hour that has ended (a fresh server may have none yet)
    assert flow["usageMetrics"]["isArray"]


def test_wrong_key_detail_is_the_string_the_js_client_signed(flow: dict[str, Any]) -> None:
    for method in ("DELETE", "GET", "PATCH", "POST"):
        bad = flow["badKey"][method]
        assert bad["status"] == 403 and bad["code"] == "AuthenticationFailed", bad
        # HMAC(wrong key, string shown) == signature the client sent: the detail is exactly what it signed
        assert bad["detailMatchesSignature"], bad["detail"]
    # a bodiless DELETE signs an empty Content-Length line, not "0"
    assert "Server used following string to sign: 'DELETE\n\n\n\n" in flow["badKey"]["DELETE"]["detail"]
