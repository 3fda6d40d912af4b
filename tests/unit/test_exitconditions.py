"""Exit conditions (pure): which exit options apply to a finished task, validation of jobAction, and how a
failure code maps to an outcome. Semantics: peers-and-semantics.md §5.2-5.3, rest_api.md §1.10."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.models.errors import BatchError
from batchyard.models.exitconditions import (
    PRE_PROCESSING_CODES,
    ExitOptions,
    Outcome,
    check,
    outcome_of,
    resolve,
)

EXIT, PRE, UPLOAD = Outcome.EXIT, Outcome.PRE_PROCESSING, Outcome.FILE_UPLOAD
SUCCESS = ExitOptions("none", "satisfy")
FAILURE = ExitOptions("terminate", "block")


def opts(job: str | None = None, dep: str | None = None) -> dict[str, str]:
    out = {}
    if job is not None:
        out["jobAction"] = job
    if dep is not None:
        out["dependencyAction"] = dep
    return out


# --- resolve: defaults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("conditions", [None, {}])
def test_defaults_without_exit_conditions(conditions: dict[str, Any] | None) -> None:
    assert resolve(conditions, 0, EXIT) == SUCCESS
    assert resolve(conditions, 1, EXIT) == FAILURE
    assert resolve(conditions, -9, EXIT) == FAILURE
    assert resolve(conditions, None, PRE) == FAILURE
    assert resolve(conditions, 0, UPLOAD) == FAILURE  # exit 0 but the upload failed: a failure
    assert resolve(conditions, None, EXIT) == FAILURE  # ended without an exit code (e.g. terminated)


# --- resolve: precedence -----------------------------------------------------------------------------------


def test_listed_exit_code_wins_over_ranges_and_default() -> None:
    ec = {
        "exitCodes": [{"code": 3, "exitOptions": opts("none", "satisfy")}],
        "exitCodeRanges": [{"start": 1, "end": 5, "exitOptions": opts("disable", "block")}],
        "default": opts("terminate", "satisfy"),
    }
    assert resolve(ec, 3, EXIT) == ExitOptions("none", "satisfy")
    assert resolve(ec, 2, EXIT) == ExitOptions("disable", "block")
    assert resolve(ec, 9, EXIT) == ExitOptions("terminate", "satisfy")


def test_ranges_are_inclusive_and_may_be_negative() -> None:
    ec = {"exitCodeRanges": [{"start": -5, "end": -1, "exitOptions": opts(dep="satisfy")}]}
    assert resolve(ec, -5, EXIT).dependency_action == "satisfy"
    assert resolve(ec, -1, EXIT).dependency_action == "satisfy"
    assert resolve(ec, 0, EXIT) == SUCCESS
    assert resolve(ec, -6, EXIT) == FAILURE


def test_first_matching_range_applies() -> None:
    ec = {
        "exitCodeRanges": [
            {"start": 1, "end": 10, "exitOptions": opts("none")},
            {"start": 5, "end": 6, "exitOptions": opts("disable")},
        ]
    }
    assert resolve(ec, 5, EXIT).job_action == "none"


def test_missing_fields_take_the_defaults_of_the_condition() -> None:
    """An entry that gives only one action leaves the other at its default for that exit code."""
    ec = {
        "exitCodes": [
            {"code": 0, "exitOptions": opts(dep="block")},
            {"code": 4, "exitOptions": opts(dep="satisfy")},
            {"code": 5, "exitOptions": opts(job="none")},
        ]
    }
    assert resolve(ec, 0, EXIT) == ExitOptions("none", "block")  # code 0: jobAction default stays none
    assert resolve(ec, 4, EXIT) == ExitOptions("terminate", "satisfy")  # nonzero: jobAction default terminate
    assert resolve(ec, 5, EXIT) == ExitOptions("none", "block")  # nonzero: dependencyAction default block


def test_default_never_applies_to_exit_code_zero() -> None:
    ec = {"default": opts("disable", "block")}
    assert resolve(ec, 0, EXIT) == SUCCESS
    assert resolve(ec, 1, EXIT) == ExitOptions("disable", "block")


def test_exit_code_zero_changes_only_when_listed() -> None:
    listed = {"exitCodes": [{"code": 0, "exitOptions": opts("terminate", "block")}]}
    assert resolve(listed, 0, EXIT) == ExitOptions("terminate", "block")
    in_range = {"exitCodeRanges": [{"start": 0, "end": 2, "exitOptions": opts(dep="block")}]}
    assert resolve(in_range, 0, EXIT) == ExitOptions("none", "block")


def test_pre_processing_error_entry_then_default() -> None:
    pre = {"preProcessingError": opts("none", "satisfy"), "default": opts("disable", "block")}
    assert resolve(pre, None, PRE) == ExitOptions("none", "satisfy")
    only_default = {"default": opts("disable", "satisfy")}
    assert resolve(only_default, None, PRE) == ExitOptions("disable", "satisfy")
    # exit code entries do not apply to a task that never ran
    codes = {"exitCodes": [{"code": 0, "exitOptions": opts(dep="satisfy")}]}
    assert resolve(codes, None, PRE) == FAILURE


def test_pre_processing_entry_defaults_to_failure_actions() -> None:
    assert resolve({"preProcessingError": opts(job="none")}, None, PRE) == ExitOptions("none", "block")
    assert resolve({"preProcessingError": opts(dep="satisfy")}, None, PRE) == ExitOptions(
        "terminate", "satisfy"
    )


def test_listed_exit_code_wins_over_file_upload_error() -> None:
    ec = {
        "exitCodes": [{"code": 0, "exitOptions": opts("none", "satisfy")}],
        "fileUploadError": opts("disable", "block"),
        "default": opts("terminate", "satisfy"),
    }
    assert resolve(ec, 0, UPLOAD) == ExitOptions("none", "satisfy")
    assert resolve(ec, 7, UPLOAD) == ExitOptions("disable", "block")
    no_entry = {"default": opts("none", "satisfy")}
    assert resolve(no_entry, 0, UPLOAD) == ExitOptions("none", "satisfy")  # default covers upload errors


def test_actions_are_case_insensitive() -> None:
    ec = {"exitCodes": [{"code": 2, "exitOptions": {"jobAction": "Disable", "dependencyAction": "Satisfy"}}]}
    assert resolve(ec, 2, EXIT) == ExitOptions("disable", "satisfy")


# --- check -------------------------------------------------------------------------------------------------


LOCATIONS = [
    (
        {"exitCodes": [{"code": 1, "exitOptions": opts("none")}]},
        "exitConditions.exitCodes[0].exitOptions.jobAction",
    ),
    (
        {"exitCodeRanges": [{"start": 1, "end": 2, "exitOptions": opts("terminate")}]},
        "exitConditions.exitCodeRanges[0].exitOptions.jobAction",
    ),
    ({"preProcessingError": opts("disable")}, "exitConditions.preProcessingError.jobAction"),
    ({"fileUploadError": opts("none")}, "exitConditions.fileUploadError.jobAction"),
    ({"default": opts("terminate")}, "exitConditions.default.jobAction"),
]


@pytest.mark.parametrize(("conditions", "path"), LOCATIONS)
def test_job_action_needs_perform_exit_options_job_action(conditions: dict[str, Any], path: str) -> None:
    with pytest.raises(BatchError) as info:
        check(conditions, "noaction")
    e = info.value
    assert (e.status, e.code) == (400, "InvalidPropertyValue")
    assert dict(e.values)["PropertyName"] == path
    check(conditions, "performexitoptionsjobaction")  # accepted when the job acts on failures


def test_dependency_action_alone_is_fine_on_any_job() -> None:
    ec = {
        "exitCodes": [{"code": 1, "exitOptions": opts(dep="satisfy")}],
        "exitCodeRanges": [{"start": 2, "end": 3, "exitOptions": opts(dep="block")}],
        "preProcessingError": opts(dep="satisfy"),
        "fileUploadError": {},
        "default": opts(dep="block"),
    }
    check(ec, "noaction")
    check(None, "noaction")
    check({}, "noaction")


@pytest.mark.parametrize(
    ("conditions", "prop"),
    [
        ({"default": opts("explode")}, "exitConditions.default.jobAction"),
        ({"default": opts(dep="maybe")}, "exitConditions.default.dependencyAction"),
        (
            {"exitCodeRanges": [{"start": 5, "end": 1, "exitOptions": opts(dep="block")}]},
            "exitConditions.exitCodeRanges[0]",
        ),
    ],
)
def test_invalid_values_are_refused(conditions: dict[str, Any], prop: str) -> None:
    with pytest.raises(BatchError) as info:
        check(conditions, "performexitoptionsjobaction")
    assert info.value.code == "InvalidPropertyValue"
    assert dict(info.value.values)["PropertyName"] == prop


def test_valid_values_in_any_case() -> None:
    check({"default": {"jobAction": "Terminate", "dependencyAction": "Block"}}, "performexitoptionsjobaction")


# --- outcome_of --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(PRE_PROCESSING_CODES))
def test_pre_processing_failures(code: str) -> None:
    assert outcome_of(code) is PRE


def test_other_outcomes() -> None:
    assert "CommandProgramNotFound" in PRE_PROCESSING_CODES and "BlobNotFound" in PRE_PROCESSING_CODES
    assert outcome_of(None) is EXIT
    assert outcome_of("FailureExitCode") is EXIT
    assert outcome_of("TaskEnded") is EXIT
    assert outcome_of("FileUploadContainerNotFound") is UPLOAD
    assert outcome_of("FileUploadMiscError") is UPLOAD
