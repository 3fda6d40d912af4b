"""The task path's data-staging glue: API checks at task add, the agent's node staging, failure outcomes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from batchyard.agent.runner import RunSpec
from batchyard.agent.staging import CACHE_DIR, NodeStaging, user_can_read
from batchyard.api.agent_sync import decode_sync
from batchyard.models import errors
from batchyard.models.exitconditions import Outcome, outcome_of, resolve
from batchyard.service.staging import check_staging


def _spec(tmp_path: Path) -> RunSpec:
    task_dir = tmp_path / "node" / "workitems" / "j" / "job-1" / "t"
    return RunSpec("true", {}, task_dir, task_dir / "wd", None)


@pytest.mark.parametrize(
    ("body", "prop"),
    [
        ({"resourceFiles": [{"httpUrl": "http://h/x", "filePath": "../x"}]}, "resourceFiles[0].filePath"),
        ({"resourceFiles": [{"httpUrl": "http://h/x", "filePath": "/etc/x"}]}, "resourceFiles[0].filePath"),
        ({"resourceFiles": [{"httpUrl": "http://h/x"}]}, "resourceFiles[0].filePath"),
        ({"resourceFiles": [{"httpUrl": "gopher://h/x", "filePath": "x"}]}, "resourceFiles[0].httpUrl"),
        ({"resourceFiles": [{"filePath": "x"}]}, "resourceFiles[0]"),
        (
            {"resourceFiles": [{"httpUrl": "http://h/x", "filePath": "x", "fileMode": "999"}]},
            "resourceFiles[0].fileMode",
        ),
        ({"resourceFiles": "x"}, "resourceFiles"),
        (
            {
                "outputFiles": [
                    {"filePattern": "*", "destination": {"container": {"containerUrl": "http://h/c"}}}
                ]
            },
            "outputFiles[0].uploadOptions",
        ),
        (
            {
                "outputFiles": [
                    {
                        "filePattern": "*",
                        "destination": {"container": {"containerUrl": "http://h/c", "path": "../up"}},
                        "uploadOptions": {"uploadCondition": "taskcompletion"},
                    }
                ]
            },
            "outputFiles[0].destination.container.path",
        ),
    ],
)
def test_bad_specs_name_the_property(body: dict[str, object], prop: str) -> None:
    with pytest.raises(errors.BatchError) as info:
        check_staging(body)
    assert info.value.status == 400
    assert ("PropertyName", prop) in info.value.values


def test_identity_reference_is_not_implemented() -> None:
    body = {
        "resourceFiles": [
            {"httpUrl": "http://h/x", "filePath": "x", "identityReference": {"resourceId": "r"}}
        ]
    }
    with pytest.raises(errors.BatchError) as info:
        check_staging(body)
    assert info.value.status == 501


def test_valid_specs_pass_with_the_enum_spelled_as_the_service_does() -> None:
    body = {
        "resourceFiles": [{"storageContainerUrl": "https://a.blob/c?sig=x", "blobPrefix": "d/"}],
        "outputFiles": [
            {
                "filePattern": "../std*.txt",
                "destination": {"container": {"containerUrl": "file:///srv/out", "path": "p"}},
                "uploadOptions": {"uploadCondition": "TaskFailure"},
            }
        ],
    }
    before = repr(body).replace("TaskFailure", "taskfailure")
    check_staging(body)
    assert repr(body) == before  # only the enum's spelling changed


def test_file_urls_fail_without_configured_roots(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    spec = _spec(tmp_path)
    spec.task_dir.parent.mkdir(parents=True)
    staging = NodeStaging(tmp_path / "node")
    work = {"resourceFiles": [{"httpUrl": f"file://{src}", "filePath": "in.txt"}]}
    failure = asyncio.run(staging.download(spec, work))
    assert failure is not None and failure.code == "BlobAccessDenied"
    assert not (spec.working_dir / "in.txt").exists()
    allowed = NodeStaging(tmp_path / "node", file_roots=(tmp_path,))
    assert asyncio.run(allowed.download(spec, work)) is None
    assert (spec.working_dir / "in.txt").read_text() == "x"
    assert oct((tmp_path / "node" / CACHE_DIR).stat().st_mode & 0o777) == "0o700"


def test_auto_storage_without_a_connection_string_fails(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec.task_dir.parent.mkdir(parents=True)
    work = {"resourceFiles": [{"autoStorageContainerName": "c"}]}
    failure = asyncio.run(NodeStaging(tmp_path / "node").download(spec, work))
    assert failure is not None and failure.code.startswith("ResourceContainer")


def test_user_can_read(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o600)
    other = os.getuid() + 12345
    assert user_can_read(f, os.getuid(), frozenset(), tmp_path)
    assert not user_can_read(f, other, frozenset(), tmp_path)
    os.chmod(f, 0o644)
    assert user_can_read(f, other, frozenset(), tmp_path)
    assert not user_can_read(tmp_path / "missing", other, frozenset(), tmp_path)


def test_staging_failures_are_pre_processing_or_upload_outcomes() -> None:
    for code in ("ResourceContainerNotFound", "ResourceContainerAccessDenied", "ResourceDownloadTimedOut"):
        assert outcome_of(code) is Outcome.PRE_PROCESSING
    assert outcome_of("FileUploadAccessDenied") is Outcome.FILE_UPLOAD
    conds = {"preProcessingError": {"dependencyAction": "satisfy", "jobAction": "none"}}
    assert resolve(conds, None, Outcome.PRE_PROCESSING).dependency_action == "satisfy"
    up = {"fileUploadError": {"dependencyAction": "satisfy"}, "exitCodes": [{"code": 0, "exitOptions": {}}]}
    # an exit code listed in exitCodes wins over the upload error
    assert resolve(up, 0, Outcome.FILE_UPLOAD).dependency_action == "satisfy"
    assert (
        resolve({"fileUploadError": {"dependencyAction": "block"}}, 0, Outcome.FILE_UPLOAD).job_action
        == "terminate"
    )


def test_agent_events_carry_details_and_no_retry() -> None:
    body = decode_sync(
        b'{"nodeId":"n","events":[{"type":"completed","ref":"a/b#0","noRetry":true,'
        b'"failureInfo":{"category":"usererror","code":"BlobNotFound","message":"m",'
        b'"details":[{"name":"FilePath","value":"x"}]}}]}'
    )
    ev = body.events[0]
    assert ev.noRetry and ev.failureInfo is not None and ev.failureInfo.details is not None
    with pytest.raises(errors.BatchError) as info:
        decode_sync(b'{"nodeId":"n","events":[{"type":"completed","ref":"r","noRetry":"yes"}]}')
    assert info.value.status == 400


def test_server_refuses_a_file_url_root_that_is_not_a_directory(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.live import free_port

    env = dict(os.environ, BATCHYARD_FILE_URL_ROOTS=str(tmp_path / "missing"))
    args = [sys.executable, "-m", "batchyard.cli.main", "server", "--port", str(free_port())]
    args += ["--data-dir", str(tmp_path / "d")]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--file-url-root" in out.stderr and "not a directory" in out.stderr


def test_the_node_cache_is_bounded(tmp_path: Path) -> None:
    from tests.support.httpserver import FileServer

    fs = FileServer().start()
    try:
        url = fs.put("in.bin", b"x" * 1000)
        spec = _spec(tmp_path)
        spec.task_dir.parent.mkdir(parents=True)
        work = {"resourceFiles": [{"httpUrl": url, "filePath": "in.bin"}]}

        async def fetch(staging: NodeStaging) -> object:
            try:
                return await staging.download(spec, work)
            finally:
                await staging.aclose()

        assert asyncio.run(fetch(NodeStaging(tmp_path / "node"))) is None
    finally:
        fs.stop()
    cache = tmp_path / "node" / CACHE_DIR

    def size() -> int:
        return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())

    assert size() >= 1000
    NodeStaging(tmp_path / "node", cache_max_bytes=0)  # pruned when the agent starts
    assert size() < 1000
