"""Exit conditions: what a finished task means for its dependents and for its job. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batchyard.models import errors


class Outcome(StrEnum):
    """How the task ended, as exit conditions see it."""

    EXIT = "exit"  # the process ran and exited (any code)
    PRE_PROCESSING = "preprocessing"  # it could not start: missing program, launch failure, resource files
    FILE_UPLOAD = "fileupload"  # output files could not be uploaded


@dataclass(frozen=True)
class ExitOptions:
    job_action: str  # none | disable | terminate
    dependency_action: str  # satisfy | block


def _defaults(success: bool) -> ExitOptions:
    return ExitOptions("none", "satisfy") if success else ExitOptions("terminate", "block")


def _merge(opts: dict[str, Any] | None, success: bool) -> ExitOptions:
    base = _defaults(success)
    if not opts:
        return base
    return ExitOptions(
        str(opts.get("jobAction") or base.job_action).lower(),
        str(opts.get("dependencyAction") or base.dependency_action).lower(),
    )


def resolve(conditions: dict[str, Any] | None, exit_code: int | None, outcome: Outcome) -> ExitOptions:
    """The exit options that apply: a listed exit code wins (also over an upload error), then exit code
    ranges, then the pre-processing / file-upload entries, then `default` (never for exit code 0)."""
    ec = conditions or {}
    success = outcome is Outcome.EXIT and exit_code == 0
    if exit_code is not None and outcome is not Outcome.PRE_PROCESSING:
        for entry in ec.get("exitCodes") or []:
            if int(entry["code"]) == exit_code:
                return _merge(entry.get("exitOptions"), exit_code == 0)
        for entry in ec.get("exitCodeRanges") or []:
            if int(entry["start"]) <= exit_code <= int(entry["end"]):
                return _merge(entry.get("exitOptions"), exit_code == 0)
    if outcome is Outcome.PRE_PROCESSING and ec.get("preProcessingError"):
        return _merge(ec["preProcessingError"], False)
    if outcome is Outcome.FILE_UPLOAD and ec.get("fileUploadError"):
        return _merge(ec["fileUploadError"], False)
    if success:
        return _defaults(True)
    return _merge(ec.get("default"), False)


def check(conditions: dict[str, Any] | None, on_task_failure: str) -> None:
    """A jobAction may only be given when the job acts on task failures (400 otherwise, as the service does)."""
    if not conditions:
        return
    entries: list[tuple[str, dict[str, Any] | None]] = []
    for i, e in enumerate(conditions.get("exitCodes") or []):
        entries.append((f"exitConditions.exitCodes[{i}].exitOptions", e.get("exitOptions")))
    for i, e in enumerate(conditions.get("exitCodeRanges") or []):
        if int(e["start"]) > int(e["end"]):
            raise errors.invalid_property_value(
                f"exitConditions.exitCodeRanges[{i}]", f"{e['start']}-{e['end']}"
            )
        entries.append((f"exitConditions.exitCodeRanges[{i}].exitOptions", e.get("exitOptions")))
    for k in ("preProcessingError", "fileUploadError", "default"):
        entries.append((f"exitConditions.{k}", conditions.get(k)))
    for path, opts in entries:
        if not opts:
            continue
        ja = opts.get("jobAction")
        if ja is not None:
            if str(ja).lower() not in ("none", "disable", "terminate"):
                raise errors.invalid_property_value(path + ".jobAction", ja)
            if on_task_failure != "performexitoptionsjobaction":
                raise errors.invalid_property_value(
                    path + ".jobAction",
                    ja,
                    "jobAction can be specified only when the job's onTaskFailure is performexitoptionsjobaction",
                )
        da = opts.get("dependencyAction")
        if da is not None and str(da).lower() not in ("satisfy", "block"):
            raise errors.invalid_property_value(path + ".dependencyAction", da)


PRE_PROCESSING_CODES = frozenset(
    {
        "CommandProgramNotFound",
        "CommandLaunchFailed",
        "ResourceDirectoryCreateFailed",
        "ResourceFileCreateFailed",
        "ResourceFileWriteFailed",
        "BlobNotFound",
        "BlobAccessDenied",
        "BlobDownloadTimedOut",
        "BlobDownloadMiscError",
        "ResourceContainerNotFound",
        "ResourceContainerAccessDenied",
        "ResourceContainerListTimedOut",
        "ResourceContainerListMiscError",
        "ResourceDownloadTimedOut",
        "DiskFull",
        "ApplicationPackageError",
    }
)


def outcome_of(failure_code: str | None) -> Outcome:
    if failure_code in PRE_PROCESSING_CODES:
        return Outcome.PRE_PROCESSING
    if failure_code and failure_code.startswith("FileUpload"):
        return Outcome.FILE_UPLOAD
    return Outcome.EXIT
