"""The api-version hooks of the request pipeline: which shape a body or an entity is, and when to reshape.

Requests in an older api-version are checked and upgraded on the raw JSON before the strict decode (their
old property names are unknown to the current structs); requests in the newest version are checked after
it, on the decoded body, so the common path parses once. Responses are cut to the client's version.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batchyard.models import errors, versions
from batchyard.models.decode import check_json_depth

Body = dict[str, Any]

ACCEPTED = versions.ACCEPTED

# request body struct (by class name, so routes added later are covered) -> its root in the version table
_REQUEST_ROOTS: dict[str, str] = {
    "BatchPoolCreateOptions": "pool.create",
    "BatchPoolUpdateOptions": "pool.patch",
    "BatchPoolReplaceOptions": "pool.replace",
    "BatchPoolResizeOptions": "pool.resize",
    "BatchPoolEnableAutoScaleOptions": "pool.enableautoscale",
    "BatchPoolEvaluateAutoScaleOptions": "pool.evaluateautoscale",
    "BatchNodeRemoveOptions": "pool.removenodes",
    "BatchNodeRebootOptions": "node.reboot",
    "BatchNodeReimageOptions": "node.reimage",
    "BatchNodeDisableSchedulingOptions": "node.disablescheduling",
    "BatchNodeDeallocateOptions": "node.deallocate",
    "BatchNodeUserCreateOptions": "node.user.create",
    "BatchNodeUserReplaceOptions": "node.user.replace",
    "UploadBatchServiceLogsOptions": "node.uploadlogs",
    "BatchJobCreateOptions": "job.create",
    "BatchJobUpdateOptions": "job.patch",
    "BatchJob": "job.update",
    "BatchJobTerminateOptions": "job.terminate",
    "BatchJobDisableOptions": "job.disable",
    "BatchJobScheduleCreateOptions": "jobschedule.create",
    "BatchJobScheduleUpdateOptions": "jobschedule.patch",
    "BatchJobSchedule": "jobschedule.update",
    "BatchTaskCreateOptions": "task.create",
    "BatchTaskGroup": "task.collection",
    "BatchTask": "task.update",
}

# the odata.metadata kind of a response -> its root in the version table
_RESPONSE_ROOTS = {
    "pools": "pool",
    "jobs": "job",
    "tasks": "task",
    "nodes": "node",
    "supportedimages": "image",
    "poolnodecounts": "nodecounts",
    "taskcounts": "taskcounts",
    "taskcountsresult": "taskcounts",
    "files": "file",
    "taskaddresult": "taskaddresult",
    "jobschedules": "jobschedule",
    "applications": "application",
    "poolusagemetrics": "poolusagemetrics",
    "extensions": "extension",
    "jobpreparationandreleasetaskstatuslist": "preparationandreleasestatus",
    "subtaskinformation": "subtask",
}


def _newest(version: str) -> bool:
    return versions.canonical(version) == versions.NEWEST


def before_decode(model: type[Any], version: str, data: bytes) -> bytes:
    """Older versions: check the raw body against the version and rename old properties (re-encoded).
    Bodies that are not a JSON object are passed on for the decoder to report."""
    root = _REQUEST_ROOTS.get(model.__name__)
    if root is None or _newest(version):
        return data
    check_json_depth(data)  # untyped decoding recurses: bound it first, as decode_body does
    try:
        raw = msgspec.json.decode(data[3:] if data[:3] == b"\xef\xbb\xbf" else data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return data  # decode_body reports it with the service's error
    if not isinstance(raw, dict):
        return data
    upgraded = versions.upgrade_request(root, version, raw)
    return msgspec.json.encode(upgraded)


def after_decode(model: type[Any], version: str, body: Body) -> None:
    """The newest version: refuse decoded properties its spec does not have (legacy fields of the structs)."""
    root = _REQUEST_ROOTS.get(model.__name__)
    if root is not None and _newest(version):
        versions.upgrade_request(root, version, body)


def response(kind: str, version: str, body: Body) -> Body:
    """An entity of odata kind `kind` (`pools`, `nodes`, ...) in the client's api-version."""
    root = _RESPONSE_ROOTS.get(kind)
    if root is None:
        return body
    return versions.render(root, version, body)


def error(version: str | None, err: errors.BatchError) -> errors.BatchError:
    """An error about a renamed property names it as the client's api-version spells it."""
    if not version or version not in ACCEPTED:
        return err
    return versions.error_in_version(version, err)
