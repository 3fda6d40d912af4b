"""The seed tutorial (section 10, steps 6-10 + cleanup) run with the real azure-cli 2.91.0 against a live server.

Source: ../shared/reference/seeds/azure-batch-tutorial-devopsschool.txt. Every command is the tutorial's, with
`-o json` instead of `-o table` so the output can be checked. Shared-key auth comes from the environment
(AZURE_BATCH_ENDPOINT/ACCOUNT/ACCESS_KEY), as a self-hosted user would set it instead of `az batch account login`.

The CLI quirks this exercises (see reference/azure-batch-api/az_cli.md): integer options are sent as JSON strings
(`"targetDedicatedNodes": "1"`), `task create` POSTs and then GETs the task and prints it, output keys are renamed
(`nodeAgentSKUId` -> `nodeAgentSkuId`), create/delete print nothing, and a 404 exits with code 3.

az is found via BATCHYARD_AZ (path to the az executable) or $REPO/.venv-az/bin/az, which `scripts/az-venv` creates.
Without it the module is skipped, except under CI=true where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LiveServer, wait_for

pytestmark = pytest.mark.az

REPO = Path(__file__).resolve().parents[2]
AZ_CLI_VERSION = "2.91.0"
AZ_TIMEOUT = 120.0  # per az invocation; each normally takes about a second


def _unavailable(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{msg} (required under CI=true)")
    pytest.skip(msg)


def find_az() -> Path:
    explicit = os.environ.get("BATCHYARD_AZ")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"BATCHYARD_AZ={explicit} is not an executable file")
        return path
    path = REPO / ".venv-az" / "bin" / "az"
    if not (path.is_file() and os.access(path, os.X_OK)):
        _unavailable(
            f"azure-cli not found at {path}: run scripts/az-venv (or set BATCHYARD_AZ to an az executable)"
        )
    return path


@dataclass
class Az:
    """Runs `az` against the live server and checks exit codes, with a readable transcript on failure."""

    exe: Path
    env: dict[str, str]
    live: LiveServer

    def run(self, *args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.exe), *args]
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=AZ_TIMEOUT, check=False)
        if p.returncode != rc:
            raise AssertionError(
                f"az {' '.join(args)}\nexit code {p.returncode}, expected {rc}\n--- stdout\n{p.stdout}\n"
                f"--- stderr\n{p.stderr}\n--- server log tail\n{self.live.log_tail()}"
            )
        if rc == 0:
            assert "ERROR" not in p.stderr and "Traceback" not in p.stderr, f"az {' '.join(args)}: {p.stderr}"
        return p

    def json(self, *args: str) -> Any:
        """Run a command that must succeed and print JSON; return the parsed output."""
        p = self.run(*args, "-o", "json")
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"az {' '.join(args)} printed non-JSON: {p.stdout!r}") from e

    def silent(self, *args: str) -> None:
        """Run a create/delete command: the SDK call returns None, so az prints nothing."""
        p = self.run(*args, "-o", "json")
        assert p.stdout.strip() == "", f"az {' '.join(args)} printed {p.stdout!r}"


@pytest.fixture(scope="module")
def az(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Az:
    exe = find_az()  # before starting the server, so a missing az skips at once
    live: LiveServer = request.getfixturevalue("live")
    # Only our AZURE_* settings: a developer's own az config (auth mode, defaults) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AZURE_")}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1", "localhost"]))
    env.update(
        AZURE_BATCH_ENDPOINT=live.endpoint,
        AZURE_BATCH_ACCOUNT=live.account,
        AZURE_BATCH_ACCESS_KEY=live.key,
        AZURE_CORE_COLLECT_TELEMETRY="no",
        AZURE_CORE_SURVEY_MESSAGE="no",
        AZURE_CORE_NO_COLOR="true",
        AZURE_CONFIG_DIR=str(tmp_path_factory.mktemp("azure-config")),
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
    )
    runner = Az(exe, env, live)
    version = runner.json("version")
    if version.get("azure-cli") != AZ_CLI_VERSION:
        pytest.fail(
            f"{exe} is azure-cli {version.get('azure-cli')}, expected {AZ_CLI_VERSION}: run scripts/az-venv"
        )
    return runner


def test_tutorial_section_10(az: Az, uid: str, tmp_path: Path) -> None:
    pool_id, job_id = f"pool1-{uid}", f"job1-{uid}"

    # Step 6: discover a supported Linux image and its node agent SKU instead of guessing.
    images = az.json("batch", "pool", "supported-images", "list")
    assert isinstance(images, list) and images
    for img in images:
        assert "nodeAgentSkuId" in img and "nodeAgentSKUId" not in img, img  # the CLI's rename
        assert {"publisher", "offer", "sku", "version"} <= img["imageReference"].keys(), img
        assert img["osType"] in ("linux", "windows"), img  # Windows images are listed (decision 0060)
    ubuntu = [i for i in images if i["nodeAgentSkuId"].startswith("batch.node.ubuntu")]
    assert ubuntu, f"no Ubuntu image in {images}"
    chosen = max(ubuntu, key=lambda i: i["nodeAgentSkuId"])  # the newest Ubuntu
    ref, sku_id = chosen["imageReference"], chosen["nodeAgentSkuId"]
    image = f"{ref['publisher']}:{ref['offer']}:{ref['sku']}:{ref['version']}"

    # Step 7: a one-node pool; az sends "targetDedicatedNodes": "1" (a string) and prints nothing.
    az.silent(
        "batch",
        "pool",
        "create",
        "--id",
        pool_id,
        "--vm-size",
        "Standard_D2s_v3",
        "--target-dedicated-nodes",
        "1",
        "--image",
        image,
        "--node-agent-sku-id",
        sku_id,
    )
    pool = az.json("batch", "pool", "show", "--pool-id", pool_id)
    assert pool["id"] == pool_id and pool["state"] == "active"
    assert pool["vmSize"].lower() == "standard_d2s_v3"
    assert pool["targetDedicatedNodes"] == 1  # the string "1" came back as an integer
    vmc = pool["virtualMachineConfiguration"]
    assert vmc["nodeAgentSkuId"] == sku_id
    assert {k: vmc["imageReference"][k] for k in ("publisher", "offer", "sku", "version")} == {
        k: ref[k] for k in ("publisher", "offer", "sku", "version")
    }

    pool_query = (
        "{id:id, state:state, allocationState:allocationState, currentDedicatedNodes:currentDedicatedNodes}"
    )
    summary = az.json("batch", "pool", "show", "--pool-id", pool_id, "--query", pool_query)
    assert summary["id"] == pool_id and summary["state"] == "active"
    assert summary["allocationState"] in ("resizing", "steady")

    def pool_allocated() -> dict[str, Any] | None:
        s = az.json("batch", "pool", "show", "--pool-id", pool_id, "--query", pool_query)
        return s if s["allocationState"] == "steady" and s["currentDedicatedNodes"] == 1 else None

    wait_for(pool_allocated, 60, 0.5, f"pool {pool_id} steady with 1 dedicated node")

    def node_idle() -> list[dict[str, Any]] | None:
        nodes = az.json("batch", "node", "list", "--pool-id", pool_id)
        return nodes if len(nodes) == 1 and nodes[0]["state"] == "idle" else None

    [node] = wait_for(node_idle, 60, 0.5, f"the node of {pool_id} to be idle")
    assert node["id"] and node["isDedicated"] is True and node["schedulingState"] == "enabled"

    # Step 8: a job on the pool.
    az.silent("batch", "job", "create", "--id", job_id, "--pool-id", pool_id)
    job = az.json("batch", "job", "show", "--job-id", job_id)
    assert job["id"] == job_id and job["state"] == "active" and job["poolInfo"] == {"poolId": pool_id}
    assert az.json("batch", "job", "show", "--job-id", job_id, "--query", "{id:id, poolInfo:poolInfo}") == {
        "id": job_id,
        "poolInfo": {"poolId": pool_id},
    }

    # Step 9: five tasks. The tutorial sleeps 10 s, but one node with one slot runs them one after another
    # (50 s), so this sleeps 1 s to keep the suite fast. `$(hostname)` reaches az unexpanded, as in the
    # tutorial's `\$(hostname)`, and is expanded by bash on the node.
    command_lines = {
        f"task{i}": f"/bin/bash -c 'echo Task {i} on host: $(hostname); sleep 1; echo done'"
        for i in range(1, 6)
    }
    for task_id, command_line in command_lines.items():
        # az POSTs the task, then GETs it and prints that.
        task = az.json(
            "batch",
            "task",
            "create",
            "--job-id",
            job_id,
            "--task-id",
            task_id,
            "--command-line",
            command_line,
        )
        assert task["id"] == task_id and task["commandLine"] == command_line, task
        assert task["state"] in ("active", "preparing", "running", "completed"), task

    listed = az.json("batch", "task", "list", "--job-id", job_id)
    assert sorted(t["id"] for t in listed) == sorted(command_lines)

    task_query = "[].{id:id,state:state,exitCode:executionInfo.exitCode}"

    def tasks_completed() -> list[dict[str, Any]] | None:
        rows = az.json("batch", "task", "list", "--job-id", job_id, "--query", task_query)
        return rows if len(rows) == 5 and all(r["state"] == "completed" for r in rows) else None

    rows = wait_for(tasks_completed, 120, 0.5, f"the five tasks of {job_id} to complete")
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": t, "state": "completed", "exitCode": 0} for t in sorted(command_lines)
    ]
    for t in az.json("batch", "task", "list", "--job-id", job_id):
        info = t["executionInfo"]
        assert info["result"] == "success" and info["exitCode"] == 0, t
        assert info["startTime"] <= info["endTime"], t
        assert t["nodeInfo"]["poolId"] == pool_id and t["nodeInfo"]["nodeId"] == node["id"], t

    # Step 10: download stdout (and stderr) of task1.
    out_dir = tmp_path / "batch-output"
    out_dir.mkdir()
    for name in ("stdout.txt", "stderr.txt"):
        dest = out_dir / f"task1-{name}"
        az.silent(
            "batch",
            "task",
            "file",
            "download",
            "--job-id",
            job_id,
            "--task-id",
            "task1",
            "--file-path",
            name,
            "--destination",
            str(dest),
        )
        assert dest.is_file()
    stdout = (out_dir / "task1-stdout.txt").read_text()
    assert "Task 1 on host:" in stdout and "done" in stdout, stdout
    assert re.fullmatch(r"Task 1 on host: \S+\ndone\n", stdout), stdout
    assert (out_dir / "task1-stderr.txt").read_bytes() == b""

    # Validation checklist: the pool still has its one allocated node.
    check = az.json(
        "batch",
        "pool",
        "show",
        "--pool-id",
        pool_id,
        "--query",
        "{allocationState:allocationState,currentDedicatedNodes:currentDedicatedNodes}",
    )
    assert check == {"allocationState": "steady", "currentDedicatedNodes": 1}

    # Cleanup: delete the job, then the pool; both disappear from the lists.
    az.silent("batch", "job", "delete", "--job-id", job_id, "--yes")
    az.silent("batch", "pool", "delete", "--pool-id", pool_id, "--yes")

    def job_gone() -> bool:
        return job_id not in [j["id"] for j in az.json("batch", "job", "list")]

    def pool_gone() -> bool:
        return pool_id not in [p["id"] for p in az.json("batch", "pool", "list")]

    wait_for(job_gone, 60, 0.5, f"{job_id} to leave `az batch job list`")
    wait_for(pool_gone, 120, 0.5, f"{pool_id} to leave `az batch pool list`")


def test_job_show_not_found(az: Az) -> None:
    p = az.run("batch", "job", "show", "--job-id", "nope", "-o", "json", rc=3)
    assert "(JobNotFound)" in p.stderr, p.stderr
    assert p.stdout.strip() == "", p.stdout
