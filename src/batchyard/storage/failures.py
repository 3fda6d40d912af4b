"""The task ``failureInfo`` values that data staging reports, in the service's codes and words.

A resource-file download failure is a *pre-processing error* and an output-file upload failure a *file upload
error*; both complete the task with ``failureInfo`` set and are never retried. Codes are the .NET SDK's
``TaskFailureInformationCodes``. Messages are the service's where a source records them (the REST error table,
the output-files docs, the storage-firewall troubleshooting page); the others are written in the same style and
say so in a comment. Categories use the wire enum (``usererror``/``servererror``) like the agent's runner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

USER_ERROR = "usererror"
SERVER_ERROR = "servererror"


class FailureKind(StrEnum):
    """Which ``exitConditions`` entry applies to the failure."""

    PRE_PROCESSING = "preProcessingError"
    FILE_UPLOAD = "fileUploadError"


@dataclass(frozen=True)
class StagingFailure:
    """One task ``failureInfo``: category, code, message and ``details`` as ``(name, value)`` pairs."""

    kind: FailureKind
    category: str
    code: str
    message: str
    details: tuple[tuple[str, str], ...] = ()

    def with_details(self, *pairs: tuple[str, str]) -> StagingFailure:
        return replace(self, details=self.details + tuple(pairs))

    def to_wire(self) -> dict[str, object]:
        """The ``failureInfo`` JSON object as the service returns it."""
        out: dict[str, object] = {"category": self.category, "code": self.code, "message": self.message}
        if self.details:
            out["details"] = [{"name": n, "value": v} for n, v in self.details]
        return out


def _pre(category: str, code: str, message: str) -> StagingFailure:
    return StagingFailure(FailureKind.PRE_PROCESSING, category, code, message)


def _up(category: str, code: str, message: str) -> StagingFailure:
    return StagingFailure(FailureKind.FILE_UPLOAD, category, code, message)


# --- resource files (pre-processing errors) -----------------------------------------------------------------

BLOB_NOT_FOUND = _pre(USER_ERROR, "BlobNotFound", "One of the specified Azure Blob(s) is not found.")
BLOB_ACCESS_DENIED = _pre(
    USER_ERROR, "BlobAccessDenied", "Access for one of the specified Azure Blob(s) is denied."
)
BLOB_DOWNLOAD_TIMED_OUT = _pre(
    SERVER_ERROR,
    "BlobDownloadTimedOut",
    "Timeout encountered while downloading one of the specified Azure Blob(s).",
)
BLOB_DOWNLOAD_MISC_ERROR = _pre(
    SERVER_ERROR,
    "BlobDownloadMiscError",
    "Miscellaneous error encountered while downloading one of the specified Azure Blob(s).",
)
# The troubleshooting page quotes this one (without a final full stop).
RESOURCE_CONTAINER_ACCESS_DENIED = _pre(
    USER_ERROR,
    "ResourceContainerAccessDenied",
    "Access for one of the specified Azure Blob container(s) is denied",
)
# Not quoted by any source: same wording pattern as the two above.
RESOURCE_CONTAINER_NOT_FOUND = _pre(
    USER_ERROR, "ResourceContainerNotFound", "One of the specified Azure Blob container(s) is not found"
)
RESOURCE_CONTAINER_LIST_TIMED_OUT = _pre(
    SERVER_ERROR,
    "ResourceContainerListTimedOut",
    "Timeout encountered while listing one of the specified Azure Blob container(s)",
)
RESOURCE_CONTAINER_LIST_MISC_ERROR = _pre(
    SERVER_ERROR,
    "ResourceContainerListMiscError",
    "Miscellaneous error encountered while listing one of the specified Azure Blob container(s)",
)
# Node agent 1.9.6 added this code for downloads that never finish; its message is not recorded.
RESOURCE_DOWNLOAD_TIMED_OUT = _pre(
    SERVER_ERROR,
    "ResourceDownloadTimedOut",
    "Timeout encountered while downloading the task's resource files.",
)
RESOURCE_DIRECTORY_CREATE_FAILED = _pre(
    SERVER_ERROR,
    "ResourceDirectoryCreateFailed",
    "Failure encountered creating resource directory for the task.",
)
RESOURCE_FILE_CREATE_FAILED = _pre(
    SERVER_ERROR, "ResourceFileCreateFailed", "Failure encountered creating resource file."
)
RESOURCE_FILE_WRITE_FAILED = _pre(
    SERVER_ERROR, "ResourceFileWriteFailed", "Failure encountered writing resource file."
)
DISK_FULL = _pre(
    SERVER_ERROR, "DiskFull", "There is not enough disk space on the node that was selected to run the task."
)

# --- output files (file upload errors) ----------------------------------------------------------------------

# Quoted by the output-files docs.
FILE_UPLOAD_CONTAINER_NOT_FOUND = _up(
    USER_ERROR,
    "FileUploadContainerNotFound",
    "One of the specified Azure container(s) was not found while attempting to upload an output file",
)
# Not quoted by any source: same wording pattern.
FILE_UPLOAD_ACCESS_DENIED = _up(
    USER_ERROR,
    "FileUploadAccessDenied",
    "Access for one of the specified Azure container(s) was denied while attempting to upload an output file",
)
FILE_UPLOAD_CONFLICT = _up(
    USER_ERROR,
    "FileUploadConflict",
    "A conflict was encountered while attempting to upload an output file",
)
FILE_UPLOAD_TIMED_OUT = _up(
    SERVER_ERROR,
    "FileUploadTimedOut",
    "Timeout encountered while attempting to upload an output file",
)
FILE_UPLOAD_MISC_ERROR = _up(
    SERVER_ERROR,
    "FileUploadMiscError",
    "Miscellaneous error encountered while attempting to upload an output file",
)
