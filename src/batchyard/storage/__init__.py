"""Data staging for tasks: resource files in, output files out, on Azure Blob storage (or Azurite) and ``file://``.

The agent calls three things (see the modules for the rules):

* `parse_resource_file` / `parse_output_file`: wire JSON → checked specs (`SpecError` names the property);
* `download_resource_files`: before the command line runs → `DownloadResult` (failure = pre-processing error);
* `upload_output_files`: after the process exits → `UploadResult` (failure = file upload error).

Failures are `StagingFailure` values (the task's ``failureInfo``), never exceptions. This package imports no
other batchyard layer.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchyard.storage.atomic import sweep_partials
    from batchyard.storage.cache import CacheStats, DownloadCache
    from batchyard.storage.connections import Connections
    from batchyard.storage.download import (
        DownloadResult,
        StagingOptions,
        download_resource_files,
        strip_query,
    )
    from batchyard.storage.failures import FailureKind, StagingFailure
    from batchyard.storage.spec import (
        DEFAULT_FILE_MODE,
        OutputFile,
        ResourceFile,
        SourceKind,
        SpecError,
        UploadCondition,
        parse_output_file,
        parse_output_files,
        parse_resource_file,
        parse_resource_files,
    )
    from batchyard.storage.upload import (
        UPLOAD_ERROR_LOG,
        UPLOAD_LOG,
        UploadedFile,
        UploadResult,
        blob_name,
        should_upload,
        upload_output_files,
    )

#: where each name lives: imported on first use, so that a module of this package (the agent's mount points,
#: package unpacking) can be imported without the Azure SDK the transfers need (decision 0181)
_WHERE = {
    "CacheStats": "cache",
    "Connections": "connections",
    "DEFAULT_FILE_MODE": "spec",
    "DownloadCache": "cache",
    "DownloadResult": "download",
    "FailureKind": "failures",
    "OutputFile": "spec",
    "ResourceFile": "spec",
    "SourceKind": "spec",
    "SpecError": "spec",
    "StagingFailure": "failures",
    "StagingOptions": "download",
    "UPLOAD_ERROR_LOG": "upload",
    "UPLOAD_LOG": "upload",
    "UploadCondition": "spec",
    "UploadResult": "upload",
    "UploadedFile": "upload",
    "blob_name": "upload",
    "download_resource_files": "download",
    "parse_output_file": "spec",
    "parse_output_files": "spec",
    "parse_resource_file": "spec",
    "parse_resource_files": "spec",
    "should_upload": "upload",
    "strip_query": "download",
    "sweep_partials": "atomic",
    "upload_output_files": "upload",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_FILE_MODE",
    "UPLOAD_ERROR_LOG",
    "UPLOAD_LOG",
    "CacheStats",
    "Connections",
    "DownloadCache",
    "DownloadResult",
    "FailureKind",
    "OutputFile",
    "ResourceFile",
    "SourceKind",
    "SpecError",
    "StagingFailure",
    "StagingOptions",
    "UploadCondition",
    "UploadResult",
    "UploadedFile",
    "blob_name",
    "download_resource_files",
    "parse_output_file",
    "parse_output_files",
    "parse_resource_file",
    "parse_resource_files",
    "should_upload",
    "strip_query",
    "sweep_partials",
    "upload_output_files",
]
