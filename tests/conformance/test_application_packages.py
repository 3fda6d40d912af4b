"""Application packages: managed with `batchyard app` (batchyard's surface; Azure's is ARM), read through the
official azure-batch 15.1.0 SDK, deployed to nodes by pool and task references.

Azure semantics (reference semantics/data-staging.md §3): `GET /applications[/{id}]` answers id, displayName
and the active versions (404 `ApplicationNotFound`); a pool reference to a package that does not exist is 409
`InvalidApplicationPackageReferences` keyed by application id at create, patch and updateproperties; pool
packages install when a node joins (failure: node `unusable`), task packages before the task (failure:
`ApplicationPackageError`, not retried); `AZ_BATCH_APP_PACKAGE_<app>_<version>` (`.`/`-` → `_`, case-preserved
and upper-cased, plus `AZ_BATCH_APP_PACKAGE_<app>` for the default version) name the unpacked folder
`<app><version><activation time>` under `$AZ_BATCH_NODE_ROOT_DIR/applications`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, raw_deleting_pools
from tests.support.semantics import expect_error, new_job, task, wait_tasks_completed

pytestmark = pytest.mark.slow


def make_zip(files: dict[str, bytes], executable: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            mode = 0o755 if name in executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def app_cli(live: LiveServer, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """`batchyard app ...` as a user runs it: endpoint, account and key from the environment."""
    env = dict(
        os.environ,
        BATCHYARD_ENDPOINT=live.endpoint,
        BATCHYARD_ACCOUNT_NAME=live.account,
        BATCHYARD_ACCOUNT_KEY=live.key,
    )
    r = subprocess.run(
        [sys.executable, "-m", "batchyard.cli.main", "app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def upload(live: LiveServer, tmp: Path, app: str, version: str, files: dict[str, bytes], *extra: str) -> Any:
    z = tmp / f"{app}-{version}-{uuid.uuid4().hex[:6]}.zip"
    z.write_bytes(make_zip(files, executable=tuple(n for n in files if n.endswith(".sh"))))
    return json.loads(app_cli(live, "upload", app, version, str(z), *extra).stdout)


RUN_SH = b"#!/bin/sh\necho tool-$1\n"


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    """A server whose data dir tasks can traverse (pytest's own temp dirs are root's 0700): tasks reach their
    packages by absolute path, as on a real node."""
    d = Path(tempfile.mkdtemp(prefix="batchyard-apppkg-", dir="/tmp"))
    os.chmod(d, 0o755)
    srv = LiveServer(d / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


@pytest.fixture(scope="module")
def packages(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two applications: `tool-<uid>` (1.0 and 2.0-beta, default 1.0) and `data-<uid>` (v1, no default)."""
    tmp = tmp_path_factory.mktemp("zips")
    uid = uuid.uuid4().hex[:6]
    tool, data = f"Tool-{uid}", f"data-{uid}"
    app_cli(live, "create", tool, "--display-name", "The tool")
    upload(live, tmp, tool, "1.0", {"bin/run.sh": RUN_SH, "README": b"one\n"}, "--set-default")
    upload(live, tmp, tool, "2.0-beta", {"bin/run.sh": b"#!/bin/sh\necho beta-$1\n"})
    upload(live, tmp, data, "v1", {"d/x.txt": b"payload\n"})
    return {"tool": tool, "data": data}


def test_cli_manages_and_sdk_reads(client: BatchClient, live: LiveServer, packages: dict[str, str]) -> None:
    tool, data = packages["tool"], packages["data"]
    shown = json.loads(app_cli(live, "show", tool).stdout)
    assert shown["defaultVersion"] == "1.0"
    assert [p["version"] for p in shown["packages"]] == ["1.0", "2.0-beta"]
    assert all(p["state"] == "active" for p in shown["packages"])

    got = client.get_application(tool.lower())  # ids are case-insensitive
    assert (got.id, got.display_name, sorted(got.versions)) == (tool, "The tool", ["1.0", "2.0-beta"])
    listed = {a.id: a for a in client.list_applications()}
    assert sorted(listed[data].versions) == ["v1"] and listed[data].display_name == data
    paged = list(client.list_applications(max_results=1))
    assert {a.id for a in paged} == set(listed), "paging with maxresults=1 returns every application"
    expect_error(lambda: client.get_application("no-such-app"), 404, "ApplicationNotFound")

    listing = json.loads(app_cli(live, "list").stdout)["value"]
    assert {a["id"] for a in listing} >= {tool, data}
    bad = app_cli(live, "set-default", data, "v9", ok=False)
    assert bad.returncode == 1 and "InvalidPropertyValue" in bad.stderr


def test_data_plane_shape_at_every_version(raw: Raw, packages: dict[str, str]) -> None:
    from batchyard.api.versions import ACCEPTED

    tool = packages["tool"]
    for version in sorted(ACCEPTED):
        r = raw.get(f"/applications/{tool}", api_version=version)
        assert r.status_code == 200, (version, r.text())
        body = r.json()
        assert set(body) == {"odata.metadata", "id", "displayName", "versions"}, (version, body)
        assert body["odata.metadata"].endswith("$metadata#applications/@Element")
        assert r.headers.get("ETag") and r.headers.get("Last-Modified")
        page = raw.json("/applications", api_version=version, params={"maxresults": 1})
        assert len(page["value"]) == 1 and "odata.nextLink" in page, (version, page)
        assert_error(raw.get("/applications/nope", api_version=version), 404, "ApplicationNotFound")


def test_bad_pool_references_are_409(
    client: BatchClient, raw: Raw, packages: dict[str, str], uid: str
) -> None:
    tool = packages["tool"]
    for refs, key in (
        ([{"applicationId": "does-not-exist"}], "does-not-exist"),
        ([{"applicationId": tool, "version": "9.9"}], tool),
        ([{"applicationId": packages["data"]}], packages["data"]),  # no version and no default
    ):
        r = raw.post("/pools", _pool_body(f"bad-{uid}", 0, refs))
        body = assert_error(r, 409, "InvalidApplicationPackageReferences")
        assert body["values"] == [{"key": key, "value": "The specified application package does not exist."}]
    create_pool(client, f"ok-{uid}", nodes=0)
    bad = [{"applicationId": "does-not-exist"}]
    r = raw.request("PATCH", f"/pools/ok-{uid}", json_body={"applicationPackageReferences": bad})
    assert_error(
        r,
        409,
        "InvalidApplicationPackageReferences",
        **{"does-not-exist": "The specified application package does not exist."},
    )
    r = raw.post(
        f"/pools/ok-{uid}/updateproperties",
        {"applicationPackageReferences": bad, "metadata": [], "certificateReferences": []},
    )
    assert_error(r, 409, "InvalidApplicationPackageReferences")
    too_many = [{"applicationId": tool}] * 11
    assert_error(raw.post("/pools", _pool_body(f"many-{uid}", 0, too_many)), 400, "InvalidPropertyValue")
    assert client.get_pool(f"ok-{uid}").application_package_references in (None, [])


def _pool_body(pool_id: str, nodes: int, refs: list[dict[str, str]]) -> dict[str, Any]:
    from tests.support.raw import pool_body

    return pool_body(pool_id, nodes, applicationPackageReferences=refs)


def _env(client: BatchClient, job_id: str, task_id: str) -> dict[str, str]:
    out = b"".join(client.download_task_file(job_id, task_id, "stdout.txt")).decode()
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_pool_and_task_packages_deploy_with_their_variables(
    client: BatchClient, packages: dict[str, str], uid: str
) -> None:
    tool, data = packages["tool"], packages["data"]
    tv = tool.replace("-", "_")  # '.', '-' and '#' become '_' in variable names
    pool_id = f"pkg-{uid}"
    create_pool(
        client,
        pool_id,
        nodes=1,
        slots=2,
        application_package_references=[m.BatchApplicationPackageReference(application_id=tool)],
        # the pool's packages are installed before the start task, which sees their variables too
        start_task=m.BatchStartTask(
            command_line=f"/bin/sh -c 'echo PKG=$AZ_BATCH_APP_PACKAGE_{tv}'", wait_for_success=True
        ),
    )
    (node,) = wait_idle_nodes(client, pool_id, 1)
    started = b"".join(client.download_node_file(pool_id, node.id, "startup/stdout.txt")).decode()
    assert "/applications/" in started and started.startswith("PKG=/"), started
    job_id = f"pkg-{uid}"
    new_job(client, job_id, pool_id)
    client.create_task(
        job_id, task("pool", f"env | grep ^AZ_BATCH_APP_PACKAGE_; $AZ_BATCH_APP_PACKAGE_{tv}/bin/run.sh x")
    )
    client.create_task(
        job_id,
        task(
            "own",
            f"env | grep ^AZ_BATCH_APP_PACKAGE_; cat $AZ_BATCH_APP_PACKAGE_{data.upper().replace('-', '_')}_V1/d/x.txt",
            application_package_references=[
                m.BatchApplicationPackageReference(application_id=data, version="v1"),
                m.BatchApplicationPackageReference(application_id=tool, version="2.0-beta"),
            ],
        ),
    )
    done = wait_tasks_completed(client, job_id, ["pool", "own"], timeout=60)
    for t in done.values():
        err = b"".join(client.download_task_file(job_id, t.id, "stderr.txt")).decode()
        assert t.execution_info.result == "success", (t.id, t.execution_info.failure_info, err)

    env = _env(client, job_id, "pool")
    path = env[f"AZ_BATCH_APP_PACKAGE_{tv}_1_0"]
    root = env.get("AZ_BATCH_NODE_ROOT_DIR") or path.rsplit("/applications/", 1)[0]
    folder = path.rsplit("/", 1)[1]
    assert path.startswith(root + "/applications/") and folder.startswith(f"{tool}1.0"), path
    assert len(folder) == len(f"{tool}1.0") + len("2026-01-01-00-00"), (
        folder
    )  # <app><version><yyyy-mm-dd-HH-MM>
    assert env[f"AZ_BATCH_APP_PACKAGE_{tv.upper()}_1_0"] == path
    assert env[f"AZ_BATCH_APP_PACKAGE_{tv}"] == env[f"AZ_BATCH_APP_PACKAGE_{tv.upper()}"] == path
    assert not any(
        k.upper().startswith(f"AZ_BATCH_APP_PACKAGE_{data.upper().replace('-', '_')}") for k in env
    )
    out = b"".join(client.download_task_file(job_id, "pool", "stdout.txt")).decode()
    assert "tool-x" in out

    own = _env(client, job_id, "own")
    beta = own[f"AZ_BATCH_APP_PACKAGE_{tv}_2_0_beta"]
    assert beta.rsplit("/", 1)[1].startswith(f"{tool}2.0-beta"), beta
    d = data.replace("-", "_")
    assert own[f"AZ_BATCH_APP_PACKAGE_{d}_v1"] == own[f"AZ_BATCH_APP_PACKAGE_{d.upper()}_V1"]
    assert f"AZ_BATCH_APP_PACKAGE_{d}" not in own, "a reference with a version sets no default variable"
    assert own[f"AZ_BATCH_APP_PACKAGE_{tv}_1_0"] == path, "pool packages are visible to every task"
    out = b"".join(client.download_task_file(job_id, "own", "stdout.txt")).decode()
    assert "payload" in out

    # deployed once per node and version: a later task reuses the unpacked folder (same inode, same file times)
    probe = f"echo SEEN=$(stat -c %i.%Y $AZ_BATCH_APP_PACKAGE_{d}_v1/d/x.txt)"
    ref = [m.BatchApplicationPackageReference(application_id=data, version="v1")]
    client.create_task(job_id, task("again1", probe, application_package_references=ref))
    wait_tasks_completed(client, job_id, ["again1"], timeout=60)
    client.create_task(job_id, task("again2", probe, application_package_references=ref))
    wait_tasks_completed(client, job_id, ["again2"], timeout=60)
    assert _env(client, job_id, "again1")["SEEN"] == _env(client, job_id, "again2")["SEEN"]

    node = next(iter(client.list_nodes(pool_id)))
    names = {f.name for f in client.list_node_files(pool_id, node.id, recursive=False)}
    assert "applications" in names


def test_missing_task_package_fails_the_task_without_retry(
    client: BatchClient, packages: dict[str, str], uid: str
) -> None:
    pool_id = f"tp-{uid}"
    create_pool(client, pool_id, nodes=1)
    wait_idle_nodes(client, pool_id, 1)
    job_id = f"tp-{uid}"
    new_job(client, job_id, pool_id)
    refs = {
        "noapp": [m.BatchApplicationPackageReference(application_id="no-such-app")],
        "nover": [m.BatchApplicationPackageReference(application_id=packages["tool"], version="7")],
        "nodefault": [m.BatchApplicationPackageReference(application_id=packages["data"])],
    }
    for tid, r in refs.items():
        client.create_task(
            job_id,
            task(
                tid,
                "echo ran",
                application_package_references=r,
                constraints=m.BatchTaskConstraints(max_task_retry_count=2),
            ),
        )
    done = wait_tasks_completed(client, job_id, list(refs), timeout=60)
    for tid, t in done.items():
        ei = t.execution_info
        assert ei.result == "failure" and ei.exit_code is None and ei.retry_count == 0, (tid, ei)
        fi = ei.failure_info
        assert fi.code == "ApplicationPackageError" and fi.category == "usererror", (tid, fi)
        details = {d.name: d.value for d in fi.details or []}
        assert details["Message"] == "The specified application package does not exist.", details
    assert {d.name: d.value for d in done["nover"].execution_info.failure_info.details}[
        "ApplicationPackageReference"
    ] == f"{packages['tool']}:7"


def test_packages_added_later_reach_new_nodes_and_a_deleted_one_makes_them_unusable(
    client: BatchClient, live: LiveServer, packages: dict[str, str], uid: str, tmp_path: Path
) -> None:
    gone = f"gone-{uid}"
    upload(live, tmp_path, gone, "1", {"f.txt": b"x"}, "--set-default")
    pool_id = f"late-{uid}"
    create_pool(client, pool_id, nodes=0)
    client.update_pool(
        pool_id,
        m.BatchPoolUpdateOptions(
            application_package_references=[
                m.BatchApplicationPackageReference(application_id=packages["tool"])
            ]
        ),
    )
    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()
    wait_idle_nodes(client, pool_id, 1)
    job_id = f"late-{uid}"
    new_job(client, job_id, pool_id)
    client.create_task(job_id, task("t", "env | grep ^AZ_BATCH_APP_PACKAGE_"))
    wait_tasks_completed(client, job_id, ["t"], timeout=60)
    assert f"AZ_BATCH_APP_PACKAGE_{packages['tool'].replace('-', '_')}_1_0" in _env(client, job_id, "t")

    bad_pool = f"unus-{uid}"
    create_pool(
        client,
        bad_pool,
        nodes=0,
        application_package_references=[m.BatchApplicationPackageReference(application_id=gone)],
    )
    app_cli(live, "delete", gone, "--version", "1")
    client.begin_resize_pool(
        bad_pool, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()

    def unusable() -> m.BatchNode | None:
        nodes = list(client.list_nodes(bad_pool))
        return nodes[0] if nodes and nodes[0].state == "unusable" else None

    node = wait_for(unusable, 60, 0.1, "the node to be unusable")
    err = node.errors[0]
    assert err.code == "ApplicationPackageError", node.errors
    assert {d.name: d.value for d in err.error_details} == {
        "ApplicationPackageReference": gone,
        "Message": "The specified application package does not exist.",
    }


def test_rebooting_an_unusable_node_installs_the_package_again(
    client: BatchClient, raw: Raw, live: LiveServer, uid: str, tmp_path: Path
) -> None:
    """A node made `unusable` by a pool package recovers by a reboot once the package exists again (the
    service's advice); the reboot is an agent start, which installs the pool's packages before the first sync."""
    app = f"back-{uid}"
    upload(live, tmp_path, app, "1", {"f.txt": b"x"}, "--set-default")
    pool_id = f"reboot-{uid}"
    create_pool(
        client,
        pool_id,
        nodes=0,
        application_package_references=[m.BatchApplicationPackageReference(application_id=app)],
    )
    app_cli(live, "delete", app, "--version", "1")
    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()
    node = wait_for(
        lambda: next((n for n in client.list_nodes(pool_id) if n.state == "unusable"), None),
        60,
        0.1,
        "the node to be unusable",
    )
    upload(live, tmp_path, app, "1", {"f.txt": b"back"}, "--set-default")
    # (the 15.1.0 SDK's begin_reboot_node fails before sending: it builds no content-type)
    r = raw.post(f"/pools/{pool_id}/nodes/{node.id}/reboot", {})
    assert r.status_code == 202, r.text()
    wait_idle_nodes(client, pool_id, 1)
    assert not client.get_node(pool_id, node.id).errors
    job_id = f"reboot-{uid}"
    new_job(client, job_id, pool_id)
    client.create_task(job_id, task("t", f"cat $AZ_BATCH_APP_PACKAGE_{app.replace('-', '_')}/f.txt"))
    t = wait_tasks_completed(client, job_id, ["t"], timeout=60)["t"]
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert b"".join(client.download_task_file(job_id, "t", "stdout.txt")) == b"back"
