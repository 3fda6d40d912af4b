"""The one error catalogue: every Batch error the service can answer with.

Handlers and the service layer raise `BatchError` built by the named constructors below; the API renders
it once, in the real service's JSON shape. Codes and statuses follow the Batch REST error table.
"""

from __future__ import annotations

from collections.abc import Sequence


class BatchError(Exception):
    """A Batch error: HTTP status, error code, message and key/value details."""

    def __init__(self, status: int, code: str, message: str, values: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"({code}) {message}")
        self.status = status
        self.code = code
        self.message = message
        self.values = list(values)


def _e(status: int, code: str, message: str, **values: str) -> BatchError:
    return BatchError(status, code, message, [(k, v) for k, v in values.items()])


# --- request shape -----------------------------------------------------------------------------------------


def invalid_request_body(reason: str) -> BatchError:
    return _e(
        400, "InvalidRequestBody", "The specified Request Body is not syntactically valid.", Reason=reason
    )


def missing_required_property(name: str) -> BatchError:
    return _e(
        400,
        "MissingRequiredProperty",
        "A required property was not specified in the request body.",
        PropertyName=name,
    )


def invalid_property_value(name: str, value: object, reason: str = "") -> BatchError:
    vals = {"PropertyName": name, "PropertyValue": "" if value is None else str(value)}
    if reason:
        vals["Reason"] = reason
    return _e(
        400,
        "InvalidPropertyValue",
        "The value provided for one of the properties in the request body is invalid.",
        **vals,
    )


def unsupported_property(name: str) -> BatchError:
    return _e(
        400,
        "UnsupportedProperty",
        "One of the properties specified in the request body is not supported.",
        PropertyName=name,
    )


def request_body_too_large(reason: str = "") -> BatchError:
    vals = {"Reason": reason} if reason else {}
    return _e(
        413,
        "RequestBodyTooLarge",
        "The request body is too large and exceeds the maximum permissible limit.",
        **vals,
    )


def invalid_header_value(name: str, value: str) -> BatchError:
    return _e(
        400,
        "InvalidHeaderValue",
        "The value for one of the HTTP headers is not in the correct format.",
        HeaderName=name,
        HeaderValue=value,
    )


def missing_required_header(name: str) -> BatchError:
    return _e(
        400,
        "MissingRequiredHeader",
        "An HTTP header that's mandatory for this request is not specified.",
        HeaderName=name,
    )


def missing_query_parameter(name: str) -> BatchError:
    return _e(
        400,
        "MissingRequiredQueryParameter",
        "A query parameter that's mandatory for this request is not specified.",
        QueryParameterName=name,
    )


def invalid_query_parameter(name: str, value: str, reason: str = "") -> BatchError:
    vals = {"QueryParameterName": name, "QueryParameterValue": value}
    if reason:
        vals["Reason"] = reason
    return _e(
        400,
        "InvalidQueryParameterValue",
        "Value for one of the query parameters specified in the request URI is invalid.",
        **vals,
    )


def out_of_range_query_parameter(name: str, value: str) -> BatchError:
    return _e(
        400,
        "OutOfRangeQueryParameterValue",
        "One of the query parameters specified in the request URI is outside the permissible range.",
        QueryParameterName=name,
        QueryParameterValue=value,
    )


def unsupported_request_version(version: str) -> BatchError:
    return _e(
        400,
        "UnsupportedRequestVersion",
        "The specified api-version is not supported by this server.",
        QueryParameterName="api-version",
        QueryParameterValue=version,
    )


def invalid_uri() -> BatchError:
    return _e(400, "InvalidUri", "The requested URI does not represent any resource on the server.")


def unsupported_http_verb(verb: str) -> BatchError:
    return _e(
        405, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.", HttpVerb=verb
    )


def invalid_range(value: str) -> BatchError:
    return _e(
        416,
        "InvalidRange",
        "The range specified is invalid for the current size of the resource.",
        HeaderName="ocp-range",
        HeaderValue=value,
    )


def not_implemented(operation: str) -> BatchError:
    return _e(
        501,
        "NotImplemented",
        f"The operation '{operation}' is not implemented by this batchyard server yet.",
        Operation=operation,
    )


def internal_error() -> BatchError:
    return _e(500, "InternalError", "The server encountered an internal error. Please retry the request.")


# --- authentication --------------------------------------------------------------------------------------


def authentication_failed(detail: str) -> BatchError:
    return _e(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed "
        "correctly including the signature.",
        AuthenticationErrorDetail=detail,
    )


def invalid_authentication_info(detail: str) -> BatchError:
    return _e(
        400,
        "InvalidAuthenticationInfo",
        "Authentication information is not given in the correct format. "
        "Check the value of Authorization header.",
        AuthenticationErrorDetail=detail,
    )


def missing_authentication() -> BatchError:
    return _e(
        401,
        "AuthenticationRequired",
        "Server failed to authenticate the request. Make sure the Authorization header is present.",
    )


# --- conditions --------------------------------------------------------------------------------------------


def condition_not_met(write: bool) -> BatchError:
    return _e(
        412 if write else 304,
        "ConditionNotMet",
        "The condition specified using HTTP conditional header(s) is not met.",
    )


# --- not found ----------------------------------------------------------------------------------------------


def pool_not_found() -> BatchError:
    return _e(404, "PoolNotFound", "The specified pool does not exist.")


def job_not_found() -> BatchError:
    return _e(404, "JobNotFound", "The specified job does not exist.")


def task_not_found() -> BatchError:
    return _e(404, "TaskNotFound", "The specified task does not exist.")


def node_not_found() -> BatchError:
    return _e(404, "NodeNotFound", "The specified node does not exist.")


def file_not_found() -> BatchError:
    return _e(404, "FileNotFound", "The specified file does not exist.")


def job_schedule_not_found() -> BatchError:
    return _e(404, "JobScheduleNotFound", "The specified job schedule does not exist.")


def application_not_found() -> BatchError:
    return _e(404, "ApplicationNotFound", "The specified application does not exist.")


def resource_not_found() -> BatchError:
    return _e(404, "ResourceNotFound", "The specified resource does not exist.")


# --- conflicts -----------------------------------------------------------------------------------------------


def pool_exists() -> BatchError:
    return _e(409, "PoolExists", "The specified pool already exists.")


def job_exists() -> BatchError:
    return _e(409, "JobExists", "The specified job already exists.")


def task_exists() -> BatchError:
    return _e(409, "TaskExists", "The specified task already exists.")


def pool_being_deleted() -> BatchError:
    return _e(
        409, "PoolBeingDeleted", "The specified pool has been marked for deletion and is being reclaimed."
    )


def pool_being_resized() -> BatchError:
    return _e(409, "PoolBeingResized", "The specified pool is currently being resized.")


def job_completed() -> BatchError:
    return _e(409, "JobCompleted", "The specified job is already in a completed state.")


def job_being_deleted() -> BatchError:
    return _e(
        409,
        "JobBeingDeleted",
        "The specified job has been marked for deletion and is being garbage collected.",
    )


def job_being_terminated() -> BatchError:
    return _e(409, "JobBeingTerminated", "The specified job is being terminated.")


def job_not_active() -> BatchError:
    return _e(409, "JobNotActive", "The specified job is not in an active state.")


def job_disabled() -> BatchError:
    return _e(409, "JobDisabled", "The specified job is disabled.")


def task_completed() -> BatchError:
    return _e(409, "TaskCompleted", "The specified task is already completed.")


def task_not_completed() -> BatchError:
    return _e(409, "TaskNotCompleted", "The specified task is not completed.")


def task_succeeded() -> BatchError:
    return _e(409, "TaskSucceeded", "The specified task has already succeeded and cannot be reactivated.")


def task_files_cleaned_up() -> BatchError:
    return _e(
        409, "TaskFilesCleanedup", "The files of the specified task have been cleaned up from the node."
    )


def task_files_unavailable() -> BatchError:
    return _e(409, "TaskFilesUnavailable", "The files of the specified task are not available on a node.")


def task_id_same_as_job_preparation_task() -> BatchError:
    return _e(
        409,
        "TaskIdSameAsJobPreparationTask",
        "The specified task id is the same as the id of the job's Job Preparation task.",
    )


def task_id_same_as_job_release_task() -> BatchError:
    return _e(
        409,
        "TaskIdSameAsJobReleaseTask",
        "The specified task id is the same as the id of the job's Job Release task.",
    )


def job_preparation_task_not_specified() -> BatchError:
    return _e(
        409,
        "JobPreparationTaskNotSpecified",
        "The specified job does not have a Job Preparation task.",
    )


def operation_invalid_for_current_state(reason: str = "") -> BatchError:
    vals = {"Reason": reason} if reason else {}
    return _e(
        409,
        "OperationInvalidForCurrentState",
        "The operation is not allowed on the resource in its current state.",
        **vals,
    )


def node_state_unusable() -> BatchError:
    return _e(409, "NodeStateUnusable", "The node is in an unusable state.")


# --- node operations (decision 0101) -------------------------------------------------------------------------


def node_being_created() -> BatchError:
    return _e(409, "NodeBeingCreated", "The specified node is being created.")


def node_being_started() -> BatchError:
    return _e(409, "NodeBeingStarted", "The specified node is being started.")


def node_being_rebooted() -> BatchError:
    return _e(409, "NodeBeingRebooted", "The specified node is being rebooted.")


def node_being_reimaged() -> BatchError:
    return _e(409, "NodeBeingReimaged", "The specified node is being reimaged.")


def node_already_in_target_scheduling_state() -> BatchError:
    return _e(
        409,
        "NodeAlreadyInTargetSchedulingState",
        "The specified node is already in the target scheduling state.",
    )


def operation_not_valid_on_node(reason: str) -> BatchError:
    return _e(
        409,
        "OperationNotValidOnNode",
        "The specified operation is not valid on the node in its current state.",
        Reason=reason,
    )


def operation_not_valid_on_pool(reason: str, **values: str) -> BatchError:
    return _e(
        409,
        "OperationNotValidOnPool",
        "The specified operation is not valid on the pool in its current state.",
        Reason=reason,
        **values,
    )


# --- pool images (decision 0060) --------------------------------------------------------------------------


def image_not_supported(publisher: str, offer: str, sku: str) -> BatchError:
    """What the service answers for an image it does not list (recorded: no PropertyValue, a Reason)."""
    return _e(
        400,
        "InvalidPropertyValue",
        "The value provided for one of the properties in the request body is invalid.",
        PropertyName="imageReference",
        Reason=f"The specified imageReference with publisher {publisher} offer {offer} sku {sku} is not supported.",
    )


def cloud_service_pools_retired() -> BatchError:
    """Cloud service pools were retired on 29 February 2024 (no recording shows the text: inferred)."""
    return _e(
        400,
        "InvalidPropertyValue",
        "The value provided for one of the properties in the request body is invalid.",
        PropertyName="cloudServiceConfiguration",
        Reason="Cloud Services Configuration pools were retired on 29 February 2024; "
        "use virtualMachineConfiguration.",
    )


# --- connection handling (answered by the HTTP layer) -------------------------------------------------------


def server_busy() -> BatchError:
    return _e(
        503, "ServerBusy", "The server is currently unable to receive requests. Please retry your request."
    )


def request_timeout(seconds: float) -> BatchError:
    return _e(
        408,
        "RequestTimeout",
        "The server timed out waiting for the rest of the request.",
        Reason=f"No part of the request body arrived for {seconds:g} seconds.",
    )


def unparsable_request() -> BatchError:
    return _e(400, "InvalidInput", "The HTTP request could not be parsed (request line, URL or headers).")


# --- job schedules --------------------------------------------------------------------------------------------


def job_schedule_exists() -> BatchError:
    return _e(409, "JobScheduleExists", "The specified job schedule already exists.")


def job_with_same_id_exists() -> BatchError:
    """Creating a schedule whose id a job already has (one namespace for both)."""
    return _e(
        409,
        "JobWithSameIdExists",
        "A job with the specified job schedule id exists. Job and job schedule cannot have the same id.",
    )


def job_schedule_with_same_id_exists() -> BatchError:
    """Creating a job whose id a schedule already has (one namespace for both)."""
    return _e(
        409,
        "JobScheduleWithSameIdExists",
        "A job schedule with the specified job id exists. Job and job schedule cannot have the same id.",
    )


def job_schedule_being_deleted() -> BatchError:
    return _e(
        409,
        "JobScheduleBeingDeleted",
        "The specified job schedule has been marked for deletion and is being reclaimed.",
    )


def job_schedule_being_terminated() -> BatchError:
    return _e(409, "JobScheduleBeingTerminated", "The specified job schedule is being terminated.")


def job_schedule_disabled() -> BatchError:
    return _e(409, "JobScheduleDisabled", "The specified job schedule is disabled.")


def job_schedule_completed() -> BatchError:
    return _e(409, "JobScheduleCompleted", "The specified job schedule is already in completed state.")


# --- autoscale ---------------------------------------------------------------------------------------------


def autoscale_enabled() -> BatchError:
    """Resize of a pool with automatic scaling (409 per the resize docs; the code is not on record)."""
    return _e(409, "AutoScalingEnabled", "The pool has automatic scaling enabled.")


def autoscale_not_enabled() -> BatchError:
    """Evaluate on a pool without automatic scaling (409 per the docs' error map; code inferred)."""
    return operation_invalid_for_current_state("Automatic scaling is not enabled on the pool")


def invalid_autoscale_settings(reason: str) -> BatchError:
    return _e(
        400, "InvalidAutoScalingSettings", "The specified autoscale settings are invalid.", Reason=reason
    )


def autoscale_formula(code: str, message: str, values: Sequence[tuple[str, str]]) -> BatchError:
    """A formula refused at enable/create/evaluate: the language's code, message and `Message` value."""
    return BatchError(400, code, message, values)


def too_many_enable_autoscale_requests() -> BatchError:
    """Enable autoscale again within 30 s on one pool (503 in the service's error table)."""
    return _e(
        503,
        "TooManyEnableAutoScaleRequests",
        "The enable autoscale request was made too soon after the previous one for this pool.",
    )


# --- certificates, node users, node access (issue 9) ----------------------------------------------------------


def certificate_not_found() -> BatchError:
    return _e(404, "CertificateNotFound", "The specified certificate does not exist.")


def certificate_exists() -> BatchError:
    return _e(409, "CertificateExists", "The specified certificate already exists.")


def certificate_being_deleted() -> BatchError:
    return _e(409, "CertificateBeingDeleted", "The specified certificate has been marked for deletion.")


def certificate_state_active() -> BatchError:
    """The recorded answer to canceldelete on an active certificate."""
    return _e(409, "CertificateStateActive", "The specified certificate is in active state.")


def invalid_certificate_references(missing: Sequence[str]) -> BatchError:
    """A pool naming certificates the account does not have (values keyed like the auto-pool error)."""
    return BatchError(
        409,
        "InvalidCertificateReferences",
        "One or more certificates specified for the pool are invalid",
        [(name, "The specified certificate does not exist.") for name in missing],
    )


def node_user_exists(reason: str = "") -> BatchError:
    vals = {"Reason": reason} if reason else {}
    return _e(409, "NodeUserExists", "The specified node user already exists.", **vals)


def node_user_not_found() -> BatchError:
    return _e(404, "NodeUserNotFound", "The specified node user does not exist.")


_NODE_BUSY = {
    "creating": ("NodeBeingCreated", "The specified node is being created."),
    "starting": ("NodeBeingStarted", "The specified node is being started."),
    "waitingforstarttask": ("NodeBeingStarted", "The specified node is being started."),
    "rebooting": ("NodeBeingRebooted", "The specified node is being rebooted."),
    "reimaging": ("NodeBeingReimaged", "The specified node is being reimaged."),
    "unusable": ("NodeStateUnusable", "The node is in an unusable state."),
}


def node_not_ready(state: str) -> BatchError:
    """Node users and remote access need a node that is up (idle or running); the code names why not."""
    code, message = _NODE_BUSY.get(
        state, ("OperationNotValidOnNode", "The operation is not valid on the node in its current state.")
    )
    return _e(409, code, message, Reason=f"The node is {state}; the operation needs an idle or running node")


def node_access_unavailable(reason: str) -> BatchError:
    """What the server cannot do on this host (not root, a tool missing): refused, never faked."""
    return _e(
        501, "NotImplemented", "The requested operation is not implemented on this server.", Reason=reason
    )


def extension_not_found() -> BatchError:
    return _e(404, "ResourceNotFound", "The specified extension does not exist.")


def remote_desktop_needs_cloud_service() -> BatchError:
    """`GET …/rdp` (api-versions before 2024-07-01) works only on the retired cloud service pools."""
    return _e(
        409,
        "OperationNotValidOnPool",
        "The operation is not valid on the pool.",
        Reason="The RDP file is available only for pools with a cloud service configuration, retired on 29 "
        "February 2024; use GetRemoteLoginSettings for virtual machine configuration pools",
    )
