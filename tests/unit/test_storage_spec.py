"""Resource/output file specs, path rules, upload conditions and destination naming (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.storage import (
    DEFAULT_FILE_MODE,
    SourceKind,
    SpecError,
    UploadCondition,
    blob_name,
    parse_output_file,
    parse_resource_file,
    should_upload,
)
from batchyard.storage.azblob import upload_kwargs
from batchyard.storage.failures import BLOB_NOT_FOUND, FailureKind
from batchyard.storage.glob import Matched
from batchyard.storage.paths import PathRefused, join_checked, relative_segments


def test_resource_file_sources() -> None:
    http = parse_resource_file({"httpUrl": "https://h/x/in.txt?sig=1", "filePath": "data/in.txt"})
    assert http.kind is SourceKind.HTTP_URL and http.file_path == "data/in.txt"
    assert http.file_mode == DEFAULT_FILE_MODE == 0o770
    cont = parse_resource_file(
        {"storageContainerUrl": "https://h/c?sig", "blobPrefix": "in/", "fileMode": "0644"}
    )
    assert (
        cont.is_container and cont.file_path is None and cont.blob_prefix == "in/" and cont.file_mode == 0o644
    )
    auto = parse_resource_file({"autoStorageContainerName": "inputs", "filePath": "dir"})
    assert auto.kind is SourceKind.AUTO_STORAGE_CONTAINER_NAME and auto.file_path == "dir"
    local = parse_resource_file({"httpUrl": "file:///srv/data/a.bin", "filePath": "a.bin"})
    assert local.source == "file:///srv/data/a.bin"


@pytest.mark.parametrize(
    ("body", "prop"),
    [
        ({}, "rf"),
        ({"httpUrl": "https://h/a", "storageContainerUrl": "https://h/c", "filePath": "a"}, "rf"),
        ({"httpUrl": "https://h/a"}, "rf.filePath"),
        ({"httpUrl": "https://h/a", "filePath": ""}, "rf.filePath"),
        ({"httpUrl": "https://h/a", "filePath": "../escape.txt"}, "rf.filePath"),
        ({"httpUrl": "https://h/a", "filePath": "a/../../b"}, "rf.filePath"),
        ({"httpUrl": "https://h/a", "filePath": "/etc/passwd"}, "rf.filePath"),
        ({"storageContainerUrl": "https://h/c", "filePath": ".."}, "rf.filePath"),
        ({"httpUrl": "https://h/a", "filePath": "a", "fileMode": "rwx"}, "rf.fileMode"),
        ({"httpUrl": "https://h/a", "filePath": "a", "fileMode": "0999"}, "rf.fileMode"),
        ({"httpUrl": "https://h/a", "filePath": "a", "fileMode": "07777"}, "rf.fileMode"),
        ({"httpUrl": "https://h/a", "filePath": "a", "blobPrefix": "x"}, "rf.blobPrefix"),
        ({"httpUrl": "ftp://h/a", "filePath": "a"}, "rf.httpUrl"),
        ({"httpUrl": "file://otherhost/a", "filePath": "a"}, "rf.httpUrl"),
        ({"storageContainerUrl": "not a url"}, "rf.storageContainerUrl"),
        ({"autoStorageContainerName": ""}, "rf.autoStorageContainerName"),
        ({"httpUrl": 5, "filePath": "a"}, "rf.httpUrl"),
    ],
)
def test_bad_resource_files_name_the_property(body: dict[str, object], prop: str) -> None:
    with pytest.raises(SpecError) as ei:
        parse_resource_file(body, "rf")
    assert ei.value.prop == prop
    assert not ei.value.unsupported


def test_identity_reference_is_refused_as_unsupported() -> None:
    with pytest.raises(SpecError) as ei:
        parse_resource_file(
            {"storageContainerUrl": "https://h/c", "identityReference": {"resourceId": "/sub/x"}}, "rf"
        )
    assert ei.value.unsupported and ei.value.prop == "rf.identityReference"
    assert "managed identities" in ei.value.reason
    out = {
        "filePattern": "*.txt",
        "destination": {
            "container": {"containerUrl": "https://h/c", "identityReference": {"resourceId": "x"}}
        },
        "uploadOptions": {"uploadCondition": "taskCompletion"},
    }
    with pytest.raises(SpecError) as ei:
        parse_output_file(out, "of")
    assert ei.value.unsupported and ei.value.prop == "of.destination.container.identityReference"


def _out(**container: object) -> dict[str, object]:
    return {
        "filePattern": "../std*.txt",
        "destination": {"container": {"containerUrl": "https://h/c?sv=x", **container}},
        "uploadOptions": {"uploadCondition": "TaskSuccess"},
    }


def test_output_file_parse() -> None:
    o = parse_output_file(_out(path="task1", uploadHeaders=[{"name": "Content-Type", "value": "text/plain"}]))
    assert o.path == "task1" and o.upload_condition is UploadCondition.TASK_SUCCESS
    assert o.upload_headers == (("Content-Type", "text/plain"),)


@pytest.mark.parametrize(
    ("body", "prop"),
    [
        ({"destination": {}, "uploadOptions": {}}, "of.filePattern"),
        ({**_out(), "filePattern": "out/[z-a].txt"}, "of.filePattern"),
        ({**_out(), "filePattern": "   "}, "of.filePattern"),
        ({"filePattern": "x", "uploadOptions": {"uploadCondition": "tasksuccess"}}, "of.destination"),
        ({"filePattern": "x", "destination": {}, "uploadOptions": {}}, "of.destination.container"),
        (
            {"filePattern": "x", "destination": {"container": {}}, "uploadOptions": {}},
            "of.destination.container.containerUrl",
        ),
        ({**_out(), "uploadOptions": {"uploadCondition": "always"}}, "of.uploadOptions.uploadCondition"),
        ({k: v for k, v in _out().items() if k != "uploadOptions"}, "of.uploadOptions"),
        (_out(path="a/../../b"), "of.destination.container.path"),
        (_out(uploadHeaders=[{"value": "x"}]), "of.destination.container.uploadHeaders[0].name"),
        (_out(uploadHeaders="x"), "of.destination.container.uploadHeaders"),
    ],
)
def test_bad_output_files_name_the_property(body: dict[str, object], prop: str) -> None:
    with pytest.raises(SpecError) as ei:
        parse_output_file(body, "of")
    assert ei.value.prop == prop


@pytest.mark.parametrize(
    ("condition", "exit_code", "expected"),
    [
        (UploadCondition.TASK_SUCCESS, 0, True),
        (UploadCondition.TASK_SUCCESS, 1, False),
        (UploadCondition.TASK_FAILURE, 0, False),
        (UploadCondition.TASK_FAILURE, 137, True),
        (UploadCondition.TASK_COMPLETION, 0, True),
        (UploadCondition.TASK_COMPLETION, 2, True),
        (UploadCondition.TASK_COMPLETION, None, False),  # the process never ran
        (UploadCondition.TASK_FAILURE, None, False),
    ],
)
def test_should_upload(condition: UploadCondition, exit_code: int | None, expected: bool) -> None:
    assert should_upload(condition, exit_code) is expected


def test_destination_naming_rules() -> None:
    f = Path("/n/wd/out/r.txt")
    literal = Matched(f, "r.txt", True)
    assert blob_name(parse_output_file(_out()), literal) == "r.txt"  # no path: the file name
    assert (
        blob_name(parse_output_file(_out(path="t1/result.txt")), literal) == "t1/result.txt"
    )  # full blob name
    wild = Matched(Path("/n/stdout.txt"), "stdout.txt", False)
    assert blob_name(parse_output_file(_out(path="mytask")), wild) == "mytask/stdout.txt"  # the docs' example
    assert blob_name(parse_output_file(_out(path="mytask/")), wild) == "mytask/stdout.txt"
    deep = Matched(Path("/n/wd/d/e/c.txt"), "d/e/c.txt", False)
    assert blob_name(parse_output_file(_out(path="p")), deep) == "p/d/e/c.txt"
    assert blob_name(parse_output_file(_out()), deep) == "d/e/c.txt"


def test_path_rules() -> None:
    assert relative_segments("a//./b/") == ["a", "b"]
    for bad in ("/abs", "..", "a/../..", "x/\x00"):
        with pytest.raises(PathRefused):
            relative_segments(bad)
    root = Path("/n/wd")
    assert join_checked(root, "d", "x/y.txt") == Path("/n/wd/d/x/y.txt")
    with pytest.raises(PathRefused):
        join_checked(root, "d", "../../etc/passwd")


def test_upload_headers_become_blob_properties() -> None:
    kw = upload_kwargs(
        [
            ("content-TYPE", "text/csv"),
            ("x-ms-meta-run", "7"),
            ("Cache-Control", "no-cache"),
            ("x-custom", "1"),
        ]
    )
    assert kw["content_settings"].content_type == "text/csv"
    assert kw["content_settings"].cache_control == "no-cache"
    assert kw["metadata"] == {"run": "7"}
    assert kw["headers"] == {"x-custom": "1"}
    tier = upload_kwargs([("x-ms-access-tier", "cool")])
    assert tier["standard_blob_tier"].value == "Cool"
    # an unknown tier is passed through for storage to judge (a 400 there is a FileUploadMiscError)
    assert upload_kwargs([("x-ms-access-tier", "Lukewarm")]) == {"headers": {"x-ms-access-tier": "Lukewarm"}}


def test_failure_wire_shape() -> None:
    fi = BLOB_NOT_FOUND.with_details(("FilePath", "in.txt"))
    assert fi.kind is FailureKind.PRE_PROCESSING
    assert fi.to_wire() == {
        "category": "usererror",
        "code": "BlobNotFound",
        "message": "One of the specified Azure Blob(s) is not found.",
        "details": [{"name": "FilePath", "value": "in.txt"}],
    }


def test_lists_name_the_index() -> None:
    from batchyard.storage import parse_output_files, parse_resource_files

    assert parse_resource_files(None) == [] and parse_output_files(None) == []
    good = {"httpUrl": "https://h/a", "filePath": "a"}
    with pytest.raises(SpecError) as ei:
        parse_resource_files([good, {"httpUrl": "https://h/a", "filePath": "../a"}])
    assert ei.value.prop == "resourceFiles[1].filePath"
    with pytest.raises(SpecError) as ei:
        parse_resource_files({"httpUrl": "x"})
    assert ei.value.prop == "resourceFiles"
    with pytest.raises(SpecError) as ei:
        parse_output_files([_out(), "x"])
    assert ei.value.prop == "outputFiles[1]"
