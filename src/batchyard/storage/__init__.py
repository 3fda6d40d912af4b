"""Data staging for tasks: resource files in, output files out, on Azure Blob storage (or Azurite) and ``file://``.

The agent calls three things (see the modules for the rules):

* `parse_resource_file` / `parse_output_file`: wire JSON → checked specs (`SpecError` names the property);
* `download_resource_files`: before the command line runs → `DownloadResult` (failure = pre-processing error);
* `upload_output_files`: after the process exits → `UploadResult` (failure = file upload error).

Failures are `StagingFailure` values (the task's ``failureInfo``), never exceptions. This package imports no
other batchyard layer.
"""

from batchyard.storage.atomic import sweep_partials
from batchyard.storage.cache import CacheStats, DownloadCache
from batchyard.storage.connections import Connections
from batchyard.storage.download import DownloadResult, StagingOptions, download_resource_files, strip_query
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
