"""Wire bodies of pools, jobs, tasks and nodes with the defaults the real service materialises.

Inputs are validated create/update bodies already in wire form (camelCase dicts); outputs are the
stored resource bodies. Pure functions: time comes in as an argument.
"""

from __future__ import annotations

import copy
from typing import Any

from batchyard.models import errors

INFINITE = "P10675199DT2H48M5.4775807S"
Body = dict[str, Any]

# The images batchyard accepts: tasks run on this host's Linux, so the list names Linux images only.
SUPPORTED_IMAGES: list[Body] = [
    {
        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
        "imageReference": {
            "publisher": "canonical",
            "offer": "0001-com-ubuntu-server-jammy",
            "sku": "22_04-lts",
            "version": "latest",
        },
        "osType": "linux",
        "capabilities": [],
        "verificationType": "verified",
    },
    {
        "nodeAgentSKUId": "batch.node.ubuntu 24.04",
        "imageReference": {
            "publisher": "canonical",
            "offer": "ubuntu-24_04-lts",
            "sku": "server",
            "version": "latest",
        },
        "osType": "linux",
        "capabilities": [],
        "verificationType": "verified",
    },
    {
        "nodeAgentSKUId": "batch.node.ubuntu 20.04",
        "imageReference": {
            "publisher": "canonical",
            "offer": "0001-com-ubuntu-server-focal",
            "sku": "20_04-lts",
            "version": "latest",
        },
        "osType": "linux",
        "capabilities": [],
        "verificationType": "verified",
    },
    {
        "nodeAgentSKUId": "batch.node.debian 12",
        "imageReference": {"publisher": "debian", "offer": "debian-12", "sku": "12", "version": "latest"},
        "osType": "linux",
        "capabilities": [],
        "verificationType": "verified",
    },
]

_NODE_AGENT_SKUS = {img["nodeAgentSKUId"].lower() for img in SUPPORTED_IMAGES}

_FILL_TYPES = {"spread": "Spread", "pack": "Pack"}


def _lower_enum(d: Body, key: str, allowed: set[str], prop: str) -> None:
    if key in d and d[key] is not None:
        v = str(d[key]).lower()
        if v not in allowed:
            raise errors.invalid_property_value(prop, d[key])
        d[key] = v


def _auto_user(identity: Body | None, prop: str = "userIdentity") -> Body:
    if not identity:
        return {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    out = copy.deepcopy(identity)
    if out.get("username") and out.get("autoUser"):
        raise errors.invalid_property_value(
            prop, "username and autoUser", "The userName and autoUser properties are mutually exclusive"
        )
    if "autoUser" in out and "username" not in out:
        au = out["autoUser"]
        au.setdefault("scope", "pool")
        au.setdefault("elevationLevel", "nonadmin")
        _lower_enum(au, "scope", {"pool", "task"}, "userIdentity.autoUser.scope")
        _lower_enum(au, "elevationLevel", {"nonadmin", "admin"}, "userIdentity.autoUser.elevationLevel")
    return out


#: The service's limit on user account names ("up to a maximum length of 20").
MAX_USER_NAME = 20


def check_user_accounts(body: Body) -> None:
    """Validate a pool's ``userAccounts`` (in place: defaults added, passwords dropped); see decision 0010.

    Refused: a second account with the same name (case-insensitively), names over 20 characters, more
    accounts than a node has uids for, ``uid`` without ``gid`` (the spec: together or not at all), uid or gid
    0 for a non-admin account, ``windowsUserConfiguration`` on these Linux-only pools (400); an admin account
    with a pinned uid, and ``sshPrivateKey`` with inter-node communication (501: batchyard configures neither
    sudo nor SSH).
    """
    from batchyard.models.identity import MAX_USER_ACCOUNTS

    accounts = body.get("userAccounts") or []
    if len(accounts) > MAX_USER_ACCOUNTS:
        raise errors.invalid_property_value(
            "userAccounts", len(accounts), f"A pool has at most {MAX_USER_ACCOUNTS} user accounts here"
        )
    seen: set[str] = set()
    for i, ua in enumerate(accounts):
        at = f"userAccounts[{i}]"
        name = ua.get("name")
        if not isinstance(name, str) or not name:
            raise errors.missing_required_property(f"{at}.name")
        if len(name) > MAX_USER_NAME or "/" in name or "\x00" in name:
            raise errors.invalid_property_value(f"{at}.name", name)
        if name.lower() in seen:
            raise errors.invalid_property_value(f"{at}.name", name, "Another user account has this name")
        seen.add(name.lower())
        ua.setdefault("elevationLevel", "nonadmin")
        _lower_enum(ua, "elevationLevel", {"nonadmin", "admin"}, f"{at}.elevationLevel")
        ua.pop("password", None)
        if ua.get("windowsUserConfiguration"):
            raise errors.invalid_property_value(
                f"{at}.windowsUserConfiguration", "set", "Only Linux pools are supported"
            )
        linux = ua.get("linuxUserConfiguration") or {}
        uid, gid = linux.get("uid"), linux.get("gid")
        if (uid is None) != (gid is None):
            raise errors.invalid_property_value(
                f"{at}.linuxUserConfiguration", "uid/gid", "uid and gid must be specified together"
            )
        if uid is not None:
            if ua["elevationLevel"] == "admin":
                raise errors.not_implemented(
                    "userAccounts with elevationLevel admin and a linuxUserConfiguration uid"
                )
            for k, v in (("uid", uid), ("gid", gid)):
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v >= 2**31 - 1:
                    raise errors.invalid_property_value(f"{at}.linuxUserConfiguration.{k}", v)
        if linux.get("sshPrivateKey"):
            if body.get("enableInterNodeCommunication"):
                raise errors.not_implemented("userAccounts linuxUserConfiguration.sshPrivateKey")
            del ua["linuxUserConfiguration"]["sshPrivateKey"]  # ignored without inter-node communication


def check_vm_configuration(vmc: Body | None) -> None:
    """batchyard runs Linux nodes on this host; say so clearly for anything else."""
    if not vmc:
        raise errors.missing_required_property("virtualMachineConfiguration")
    sku = str(vmc.get("nodeAgentSKUId", ""))
    if sku.lower() not in _NODE_AGENT_SKUS:
        raise errors.invalid_property_value(
            "nodeAgentSKUId",
            sku,
            "batchyard supports the node agent SKUs listed by GET /supportedimages (Linux only)",
        )


# Properties batchyard stores but cannot honour yet: refused clearly instead of silently ignored.
_NOT_YET = {
    "pool": ("startTask", "mountConfiguration", "applicationPackageReferences", "certificateReferences"),
    "task": (
        "resourceFiles",
        "outputFiles",
        "multiInstanceSettings",
        "applicationPackageReferences",
        "containerSettings",
    ),
}


def refuse_unsupported(body: Body, kind: str) -> None:
    for prop in _NOT_YET[kind]:
        if body.get(prop) not in (None, [], {}):
            raise errors.not_implemented(f"{prop} on {kind}s")


def new_pool(spec: Body, now: str) -> Body:
    body = copy.deepcopy(spec)
    refuse_unsupported(body, "pool")
    check_vm_configuration(body.get("virtualMachineConfiguration"))
    auto = bool(body.get("enableAutoScale", False))
    if auto:
        raise errors.not_implemented("enableAutoScale on pools")
    tdn = int(body.get("targetDedicatedNodes", 0) or 0)
    tln = int(body.get("targetLowPriorityNodes", 0) or 0)
    if "targetDedicatedNodes" not in body and "targetLowPriorityNodes" not in body:
        raise errors.missing_required_property("targetDedicatedNodes")
    for name, v in (("targetDedicatedNodes", tdn), ("targetLowPriorityNodes", tln)):
        if v < 0:
            raise errors.invalid_property_value(name, v)
    slots = int(body.get("taskSlotsPerNode", 1))
    if slots < 1 or slots > 256:
        raise errors.invalid_property_value(
            "taskSlotsPerNode", slots, "taskSlotsPerNode must be between 1 and 256"
        )
    policy = dict(body.get("taskSchedulingPolicy") or {})
    fill = str(policy.get("nodeFillType", "spread")).lower()
    if fill not in _FILL_TYPES:
        raise errors.invalid_property_value("taskSchedulingPolicy.nodeFillType", policy.get("nodeFillType"))
    policy["nodeFillType"] = _FILL_TYPES[fill]
    order = str(policy.get("jobDefaultOrder", "none")).lower()
    if order not in ("none", "creationtime"):
        raise errors.invalid_property_value(
            "taskSchedulingPolicy.jobDefaultOrder", policy.get("jobDefaultOrder")
        )
    policy["jobDefaultOrder"] = order
    vmc = body["virtualMachineConfiguration"]
    img = vmc.get("imageReference")
    if isinstance(img, dict) and "virtualMachineImageId" not in img:
        img.setdefault("version", "latest")
    for disk in vmc.get("dataDisks") or []:
        disk.setdefault("caching", "none")
        disk.setdefault("storageAccountType", "standard_lrs")
    if "startTask" in body:
        st = body["startTask"]
        st["userIdentity"] = _auto_user(st.get("userIdentity"))
        st.setdefault("maxTaskRetryCount", 0)
        st.setdefault("waitForSuccess", True)
    check_user_accounts(body)
    if "vmSize" in body:
        body["vmSize"] = str(body["vmSize"]).lower()  # the service reports VM sizes in lower case
    body.update(
        {
            "state": "active",
            "stateTransitionTime": now,
            "allocationState": "resizing",
            "allocationStateTransitionTime": now,
            "creationTime": now,
            "resizeTimeout": body.get("resizeTimeout", "PT15M"),
            "currentDedicatedNodes": 0,
            "currentLowPriorityNodes": 0,
            "targetDedicatedNodes": tdn,
            "targetLowPriorityNodes": tln,
            "enableAutoScale": False,
            "enableInterNodeCommunication": bool(body.get("enableInterNodeCommunication", False)),
            "taskSlotsPerNode": slots,
            "taskSchedulingPolicy": policy,
        }
    )
    return body


def new_job(spec: Body, now: str, pool_id: str) -> Body:
    body = copy.deepcopy(spec)
    pr = int(body.get("priority", 0))
    if pr < -1000 or pr > 1000:
        raise errors.invalid_property_value("priority", pr, "priority must be between -1000 and 1000")
    mpt = int(body.get("maxParallelTasks", -1))
    if mpt == 0 or mpt < -1:
        raise errors.invalid_property_value("maxParallelTasks", mpt)
    cons = dict(body.get("constraints") or {})
    cons.setdefault("maxWallClockTime", INFINITE)
    cons["maxTaskRetryCount"] = int(cons.get("maxTaskRetryCount", 0))
    if cons["maxTaskRetryCount"] < -1:
        raise errors.invalid_property_value("constraints.maxTaskRetryCount", cons["maxTaskRetryCount"])
    _lower_enum(body, "onAllTasksComplete", {"noaction", "terminatejob"}, "onAllTasksComplete")
    _lower_enum(body, "onTaskFailure", {"noaction", "performexitoptionsjobaction"}, "onTaskFailure")
    body.update(
        {
            "state": "active",
            "stateTransitionTime": now,
            "creationTime": now,
            "priority": pr,
            "maxParallelTasks": mpt,
            "usesTaskDependencies": bool(body.get("usesTaskDependencies", False)),
            "allowTaskPreemption": bool(body.get("allowTaskPreemption", False)),
            "constraints": cons,
            "onAllTasksComplete": body.get("onAllTasksComplete", "noaction"),
            "onTaskFailure": body.get("onTaskFailure", "noaction"),
            "executionInfo": {"startTime": now, "poolId": pool_id},
        }
    )
    return body


def new_task(spec: Body, now: str, job: Body) -> Body:
    body = copy.deepcopy(spec)
    refuse_unsupported(body, "task")
    if not body.get("commandLine"):
        raise errors.missing_required_property("commandLine")
    cons = dict(body.get("constraints") or {})
    cons.setdefault("maxWallClockTime", INFINITE)
    cons.setdefault("retentionTime", "P7D")
    cons["maxTaskRetryCount"] = int(cons.get("maxTaskRetryCount", job["constraints"]["maxTaskRetryCount"]))
    if cons["maxTaskRetryCount"] < -1:
        raise errors.invalid_property_value("constraints.maxTaskRetryCount", cons["maxTaskRetryCount"])
    slots = int(body.get("requiredSlots", 1))
    if slots < 1:
        raise errors.invalid_property_value("requiredSlots", slots)
    if body.get("dependsOn") and not job.get("usesTaskDependencies"):
        raise errors.BatchError(
            400,
            "TaskDependenciesNotSpecifiedOnJob",
            "The task specifies dependencies but the job does not have usesTaskDependencies set.",
        )
    body.update(
        {
            "state": "active",
            "stateTransitionTime": now,
            "creationTime": now,
            "userIdentity": _auto_user(body.get("userIdentity")),
            "constraints": cons,
            "requiredSlots": slots,
            "executionInfo": {"retryCount": 0, "requeueCount": 0},
        }
    )
    return body


def select_props(body: Body, select: list[str] | None) -> Body:
    """$select keeps only the named top-level properties."""
    if not select:
        return body
    wanted = {s.strip().lower() for s in select if s.strip()}
    return {k: v for k, v in body.items() if k.lower() in wanted}
