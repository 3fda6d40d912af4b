"""A pool's start task: the defaults the service materialises, its input rules, and the node's start gate.

Pure: the stored start task (a wire dict) in, the stored form or a Batch error out; the node side is a
function of the node body's `startTaskInfo` (decision 0110). Recorded defaults (pool create, PATCH and
updateproperties alike): `userIdentity.autoUser {scope: pool, elevationLevel: nonadmin}`,
`maxTaskRetryCount: 0`, `waitForSuccess: true`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from batchyard.models import errors

Body = dict[str, Any]

#: "The maximum size of a start task is 32,768 characters, including resource files and environment
#: variables" (application packages page); measured here as the start task's compact JSON.
MAX_START_TASK_CHARS = 32_768


def normalise(spec: Body, accounts: Iterable[Body] = ()) -> Body:
    """The start task as stored and returned: validated, with the service's defaults.

    400s name the property under `startTask.`; `containerSettings` is refused with 501 (no container
    runtime on local nodes yet).
    """
    from batchyard.models.resources import auto_user

    st = copy.deepcopy(spec)
    if not isinstance(st.get("commandLine"), str) or not st["commandLine"].strip():
        raise errors.missing_required_property("startTask.commandLine")
    if st.get("containerSettings") not in (None, {}):
        raise errors.not_implemented("startTask.containerSettings")
    st.pop("containerSettings", None)
    retries = st.get("maxTaskRetryCount", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
        raise errors.invalid_property_value("startTask.maxTaskRetryCount", retries)
    st["maxTaskRetryCount"] = retries
    wait = st.get("waitForSuccess", True)
    st["waitForSuccess"] = bool(wait)
    seen: set[str] = set()
    for i, env in enumerate(st.get("environmentSettings") or []):
        name = env.get("name") if isinstance(env, dict) else None
        if not isinstance(name, str) or not name:
            raise errors.missing_required_property(f"startTask.environmentSettings[{i}].name")
        if "=" in name or "\x00" in name:
            raise errors.invalid_property_value(f"startTask.environmentSettings[{i}].name", name)
        if "\x00" in str(env.get("value") or ""):
            raise errors.invalid_property_value(f"startTask.environmentSettings[{i}].value", "")
        if name in seen:
            raise errors.invalid_property_value(
                f"startTask.environmentSettings[{i}].name", name, "The name is given twice"
            )
        seen.add(name)
    st["userIdentity"] = auto_user(st.get("userIdentity"), "startTask.userIdentity")
    username = st["userIdentity"].get("username")
    if username is not None:
        names = {str(a.get("name")) for a in accounts}
        if username not in names:
            raise errors.invalid_property_value(
                "startTask.userIdentity.username",
                username,
                "The pool has no user account with this name",
            )
    order = ("commandLine", "resourceFiles", "environmentSettings", "userIdentity")
    st = {k: st[k] for k in (*order, "maxTaskRetryCount", "waitForSuccess") if k in st} | {
        k: v for k, v in st.items() if k not in order
    }  # the service's property order (recorded)
    size = len(json.dumps(st, separators=(",", ":"), ensure_ascii=False))
    if size > MAX_START_TASK_CHARS:
        raise errors.request_body_too_large(
            f"The start task is {size} characters; at most {MAX_START_TASK_CHARS} are allowed, "
            "including its resource files and environment settings"
        )
    return st


# --- the node's start gate ----------------------------------------------------------------------------------

STARTING = "starting"
WAITING = "waitingforstarttask"
FAILED = "starttaskfailed"


def gate(node: Body) -> str | None:
    """The state a node's start task holds it in, or ``None`` when it may take tasks.

    Without `waitForSuccess` the node takes tasks at once, whatever its start task does. With it, the node is
    `starting` until the agent starts the start task, `waitingforstarttask` while it runs (retries included),
    and `starttaskfailed` once it has failed for good; it takes tasks only after a success.
    """
    st = node.get("_startTask")
    if not isinstance(st, dict) or not st.get("waitForSuccess", True):
        return None
    info = node.get("startTaskInfo")
    if not isinstance(info, dict):
        return STARTING
    if info.get("state") == "running":
        return WAITING
    return None if info.get("result") == "success" else FAILED


def started(time: str, retry_count: int) -> Body:
    """`startTaskInfo` once an attempt has started: `running`, the end of any earlier attempt cleared."""
    out: Body = {"state": "running", "startTime": time, "retryCount": retry_count}
    if retry_count > 0:
        out["lastRetryTime"] = time
    return out


def completed(
    info: Body | None,
    start_time: str,
    end_time: str,
    retry_count: int,
    exit_code: int | None,
    failure: Body | None,
) -> Body:
    """`startTaskInfo` once the start task has finished for good (success, final failure, or a failure before
    its command ran: no exit code then)."""
    out: Body = {"state": "completed", "startTime": start_time, "endTime": end_time}
    if exit_code is not None:
        out["exitCode"] = exit_code
    ok = failure is None and exit_code == 0
    if not ok:
        out["failureInfo"] = failure or {
            "category": "usererror",
            "code": "FailureExitCode",
            "message": "The task exited with an exit code representing a failure",
        }
    out["retryCount"] = retry_count
    if retry_count > 0:
        last = (info or {}).get("lastRetryTime")
        out["lastRetryTime"] = last if isinstance(last, str) else start_time
    out["result"] = "success" if ok else "failure"
    return out
