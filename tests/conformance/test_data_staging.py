"""Resource files and output files through the official azure-batch 15.1.0 SDK, against a real Azurite.

Azure semantics (reference semantics/data-staging.md): resource files download into the working directory while
the task is `running`, before the command line; a failed download completes the task with `failureInfo`
(`BlobNotFound`, …), no exit code and no retry, and `exitConditions.preProcessingError` applies; output files
upload after the process exits, per `uploadCondition`, before the task is reported completed; a failed upload
is `fileUploadError` (`FileUploadAccessDenied`, …). `file://` URLs are batchyard-only and need
`--file-url-root`; `autoStorageContainerName` needs `--auto-storage`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.azurite import Azurite, azurite_server  # noqa: F401
from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.httpserver import FileServer
from tests.support.live import LiveServer, wait_for
from tests.support.semantics import expect_error, new_job, task, wait_tasks_completed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def file_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="batchyard-files-", dir="/tmp"))
    os.chmod(d, 0o755)
    (d / "inputs").mkdir()
    (d / "inputs" / "local.txt").write_bytes(b"from the host\n")
    (d / "results").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite, file_root: Path) -> Iterator[LiveServer]:
    srv = LiveServer(
        tmp_path_factory.mktemp("srv"),
        extra_args=["--auto-storage", azurite.connection_string, "--file-url-root", str(file_root)],
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"stage-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1, slots=4)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    fs = FileServer().start()
    try:
        yield fs
    finally:
        fs.stop()


def stdout(client: BatchClient, job_id: str, task_id: str) -> str:
    return b"".join(client.download_task_file(job_id, task_id, "stdout.txt")).decode()


def to_container(
    url: str, pattern: str, path: str | None = None, when: str = "taskcompletion"
) -> m.OutputFile:
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=url, path=path)
        ),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=when),
    )


def test_container_prefix_in_and_patterns_out(
    client: BatchClient, pool: str, azurite: Azurite, uid: str
) -> None:
    azurite.create_container(
        f"in-{uid}", {"data/a.txt": b"alpha\n", "data/sub/b.txt": b"beta\n", "other/c.txt": b"no\n"}
    )
    azurite.create_container(f"out-{uid}")
    job_id = f"stage-c-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task(
            "t",
            "cat in/data/a.txt in/data/sub/b.txt > r1.txt; ls in > r2.txt; whoami; id -u",
            resource_files=[
                m.ResourceFile(
                    storage_container_url=azurite.container_sas_url(f"in-{uid}", "rl"),
                    blob_prefix="data/",
                    file_path="in",
                )
            ],
            output_files=[
                to_container(azurite.container_sas_url(f"out-{uid}", "w"), "r*.txt", "results"),
                to_container(
                    azurite.container_sas_url(f"out-{uid}", "w"), "../stdout.txt", "logs/stdout.txt"
                ),
            ],
        ),
    )
    t = wait_tasks_completed(client, job_id, ["t"])["t"]
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert t.execution_info.exit_code == 0
    assert azurite.blob_names(f"out-{uid}") == ["logs/stdout.txt", "results/r1.txt", "results/r2.txt"]
    assert azurite.read_blob(f"out-{uid}", "results/r1.txt") == b"alpha\nbeta\n"
    assert azurite.read_blob(f"out-{uid}", "results/r2.txt") == b"data\n"  # blob "directories" kept
    # the upload logs are in the task directory, readable through the file API
    log = b"".join(client.download_task_file(job_id, "t", "fileuploadout.txt")).decode()
    assert "r1.txt" in log


def test_http_url_file_mode_and_404(client: BatchClient, pool: str, files: FileServer, uid: str) -> None:
    url = files.put(f"tool-{uid}.sh", b"#!/bin/sh\necho tool ran\n")
    job_id = f"stage-h-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task(
            "ok",
            "./bin/tool.sh; stat -c %a bin/tool.sh; stat -c %a plain.txt",
            resource_files=[
                m.ResourceFile(http_url=url, file_path="bin/tool.sh", file_mode="0755"),
                m.ResourceFile(http_url=url, file_path="plain.txt"),
            ],
        ),
    )
    client.create_task(
        job_id,
        task(
            "missing",
            "exit 0",
            resource_files=[m.ResourceFile(http_url=f"{files.url}/files/nope-{uid}", file_path="x")],
            constraints=m.BatchTaskConstraints(max_task_retry_count=3),
        ),
    )
    ts = wait_tasks_completed(client, job_id, ["ok", "missing"])
    assert ts["ok"].execution_info.result == "success", ts["ok"].execution_info.failure_info
    assert stdout(client, job_id, "ok").split() == ["tool", "ran", "755", "770"]
    miss = ts["missing"].execution_info
    assert miss.result == "failure"
    assert miss.exit_code is None
    assert miss.retry_count == 0  # a pre-processing error is not retried
    assert miss.failure_info.code == "BlobNotFound"
    assert miss.failure_info.category == "usererror"
    assert miss.start_time is not None and miss.end_time is not None


def test_auto_storage_container(client: BatchClient, pool: str, azurite: Azurite, uid: str) -> None:
    azurite.create_container(f"auto-{uid}", {"in.txt": b"linked storage\n"})
    job_id = f"stage-a-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task("t", "cat in.txt", resource_files=[m.ResourceFile(auto_storage_container_name=f"auto-{uid}")]),
    )
    client.create_task(
        job_id,
        task("gone", "true", resource_files=[m.ResourceFile(auto_storage_container_name=f"none-{uid}")]),
    )
    ts = wait_tasks_completed(client, job_id, ["t", "gone"])
    assert ts["t"].execution_info.result == "success", ts["t"].execution_info.failure_info
    assert stdout(client, job_id, "t") == "linked storage\n"
    assert ts["gone"].execution_info.failure_info.code == "ResourceContainerNotFound"


def test_file_urls_inside_and_outside_the_root(
    client: BatchClient, pool: str, file_root: Path, uid: str
) -> None:
    job_id = f"stage-f-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task(
            "in",
            "cp local.txt copy.txt",
            resource_files=[
                m.ResourceFile(http_url=f"file://{file_root}/inputs/local.txt", file_path="local.txt")
            ],
            output_files=[to_container(f"file://{file_root}/results", "copy.txt", f"{uid}/copy.txt")],
        ),
    )
    client.create_task(
        job_id,
        task("out", "true", resource_files=[m.ResourceFile(http_url="file:///etc/hostname", file_path="h")]),
    )
    ts = wait_tasks_completed(client, job_id, ["in", "out"])
    assert ts["in"].execution_info.result == "success", ts["in"].execution_info.failure_info
    assert (file_root / "results" / uid / "copy.txt").read_bytes() == b"from the host\n"
    assert ts["out"].execution_info.failure_info.code == "BlobAccessDenied"


def test_bad_specs_are_refused_at_add(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"stage-b-{uid}"
    new_job(client, job_id, pool)
    exc = expect_error(
        lambda: client.create_task(
            job_id,
            task("t", "true", resource_files=[m.ResourceFile(http_url="http://x/y", file_path="../up")]),
        ),
        400,
        "InvalidPropertyValue",
    )
    assert "resourceFiles[0].filePath" in str(exc)
    expect_error(
        lambda: client.create_task(
            job_id,
            task("t", "true", resource_files=[m.ResourceFile(http_url="http://x/y", file_path="/abs")]),
        ),
        400,
        "InvalidPropertyValue",
    )
    exc = expect_error(
        lambda: client.create_task(
            job_id,
            task(
                "t",
                "true",
                resource_files=[
                    m.ResourceFile(
                        http_url="http://x/y",
                        file_path="y",
                        identity_reference=m.BatchNodeIdentityReference(resource_id="/x"),
                    )
                ],
            ),
        ),
        501,
        "NotImplemented",
    )
    assert "identityReference" in str(exc)
    # the collection route checks each task the same way
    res = client.create_task_collection(
        job_id,
        m.BatchTaskGroup(task_values=[task("c", "true", output_files=[to_container("ftp://x/y", "*.txt")])]),
    )
    assert res.result_values[0].error.code == "InvalidPropertyValue"


def test_upload_conditions_and_upload_failure(
    client: BatchClient, pool: str, azurite: Azurite, uid: str
) -> None:
    azurite.create_container(f"cond-{uid}")
    w = azurite.container_sas_url(f"cond-{uid}", "w")
    job_id = f"stage-u-{uid}"
    new_job(client, job_id, pool)
    outs = [
        to_container(w, "f.txt", "fail/f.txt", "taskfailure"),
        to_container(w, "f.txt", "ok/f.txt", "tasksuccess"),
    ]
    client.create_task(job_id, task("bad", "echo x > f.txt; exit 3", output_files=outs))
    client.create_task(job_id, task("good", "echo x > f.txt", output_files=outs))
    read_only = azurite.container_sas_url(f"cond-{uid}", "r")
    client.create_task(
        job_id,
        task(
            "denied",
            "echo x > f.txt",
            output_files=[to_container(read_only, "f.txt", "denied/f.txt")],
            constraints=m.BatchTaskConstraints(max_task_retry_count=2),
        ),
    )
    ts = wait_tasks_completed(client, job_id, ["bad", "good", "denied"])
    names = azurite.blob_names(f"cond-{uid}")
    assert "fail/f.txt" in names and "ok/f.txt" in names
    assert ts["bad"].execution_info.exit_code == 3
    d = ts["denied"].execution_info
    assert d.result == "failure" and d.exit_code == 0 and d.retry_count == 0
    assert d.failure_info.code == "FileUploadAccessDenied"
    assert "denied/f.txt" not in names
    err = b"".join(client.download_task_file(job_id, "denied", "fileuploaderr.txt")).decode()
    assert err


def test_pre_processing_error_exit_conditions(
    client: BatchClient, pool: str, files: FileServer, uid: str
) -> None:
    job_id = f"stage-e-{uid}"
    new_job(
        client, job_id, pool, uses_task_dependencies=True, task_failure_mode="performexitoptionsjobaction"
    )
    missing = [m.ResourceFile(http_url=f"{files.url}/files/absent-{uid}", file_path="x")]
    client.create_task(
        job_id,
        task(
            "parent",
            "true",
            resource_files=missing,
            exit_conditions=m.ExitConditions(
                pre_processing_error=m.ExitOptions(job_action="none", dependency_action="satisfy")
            ),
        ),
    )
    client.create_task(job_id, task("child", "true", depends_on=m.BatchTaskDependencies(task_ids=["parent"])))
    ts = wait_tasks_completed(client, job_id, ["parent", "child"])
    assert ts["parent"].execution_info.failure_info.code == "BlobNotFound"
    assert ts["child"].execution_info.result == "success"
    assert client.get_job(job_id).state == "active"
    client.create_task(
        job_id,
        task(
            "fatal",
            "true",
            resource_files=missing,
            exit_conditions=m.ExitConditions(pre_processing_error=m.ExitOptions(job_action="terminate")),
        ),
    )
    wait_for(lambda: client.get_job(job_id).state == "completed", 30, what="job terminated")


def test_quickstart_flow(client: BatchClient, pool: str, azurite: Azurite, uid: str) -> None:
    """The official Python quickstart's shape: inputs uploaded, one task per file, outputs back to storage."""
    inputs = {f"taskdata{i}.txt": f"line {i}\n".encode() * (i + 1) for i in range(3)}
    azurite.create_container(f"input-{uid}", inputs)
    azurite.create_container(f"output-{uid}")
    out = azurite.container_sas_url(f"output-{uid}", "w")
    job_id = f"quick-{uid}"
    new_job(client, job_id, pool)
    tasks = [
        task(
            f"Task{i}",
            f"wc -l {name} > {name}.count",
            resource_files=[
                m.ResourceFile(http_url=azurite.blob_sas_url(f"input-{uid}", name), file_path=name)
            ],
            output_files=[to_container(out, "*.count", None, "tasksuccess")],
        )
        for i, name in enumerate(inputs)
    ]
    client.create_task_collection(job_id, m.BatchTaskGroup(task_values=tasks))
    ts = wait_tasks_completed(client, job_id, [f"Task{i}" for i in range(3)])
    assert all(t.execution_info.result == "success" for t in ts.values())
    for i, name in enumerate(inputs):
        assert azurite.read_blob(f"output-{uid}", f"{name}.count").split()[0] == str(i + 1).encode()


@pytest.mark.skipif(os.geteuid() != 0, reason="tasks run as other users only under a root server")
def test_outputs_are_only_what_the_task_user_may_read(
    client: BatchClient, pool: str, azurite: Azurite, uid: str, tmp_path: Path
) -> None:
    """The agent uploads as root: a symlink to a root-only file is skipped, and a symlink planted under the
    upload log's name is replaced, not written through."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"root only\n")
    os.chmod(secret, 0o600)
    victim = tmp_path / "victim"
    victim.write_bytes(b"intact\n")
    azurite.create_container(f"leak-{uid}")
    job_id = f"stage-l-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task(
            "t",
            f"ln -s {secret} s.txt; echo mine > m.txt; ln -sf {victim} ../fileuploadout.txt",
            output_files=[to_container(azurite.container_sas_url(f"leak-{uid}", "w"), "*.txt")],
        ),
    )
    t = wait_tasks_completed(client, job_id, ["t"])["t"]
    assert t.execution_info.exit_code == 0
    assert azurite.blob_names(f"leak-{uid}") == ["m.txt"]
    assert victim.read_bytes() == b"intact\n"
    assert "s.txt" in b"".join(client.download_task_file(job_id, "t", "fileuploaderr.txt")).decode()


def test_terminate_during_a_download_leaves_no_partial_file(
    client: BatchClient, pool: str, files: FileServer, uid: str
) -> None:
    files.files[f"big-{uid}"] = os.urandom(1 << 20)
    files.stalled.clear()
    job_id = f"stage-k-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task(
            "t",
            "echo ran",
            resource_files=[m.ResourceFile(http_url=f"{files.url}/stall/big-{uid}", file_path="big.bin")],
        ),
    )
    wait_for(files.stalled.is_set, 30, what="the download to stall half way")
    assert client.get_task(job_id, "t").state == "running"  # downloads happen while running
    client.terminate_task(job_id, "t")
    t = wait_tasks_completed(client, job_id, ["t"])["t"]
    assert t.execution_info.result == "failure"
    assert t.execution_info.exit_code is None

    def no_partials() -> list[str] | None:
        names = [f.name for f in client.list_task_files(job_id, "t", recursive=True)]
        return names if not any("big" in n for n in names) else None

    names = wait_for(no_partials, 10, what="the partial download to be removed")
    assert not any(n.endswith("stdout.txt") for n in names), names  # the command line never started
