"""Wire bodies of pools, jobs, tasks and nodes with the defaults the real service materialises.

Inputs are validated create/update bodies already in wire form (camelCase dicts); outputs are the
stored resource bodies. Pure functions: time comes in as an argument.
"""

from __future__ import annotations

import copy
import datetime
import re
from typing import Any

from batchyard.models import containers, errors, images, mounts, multiinstance, starttask
from batchyard.models.decode import parse_duration

INFINITE = "P10675199DT2H48M5.4775807S"
Body = dict[str, Any]

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


auto_user = _auto_user  # also the start task's defaults (models.starttask)

#: The service's limit on user account names ("up to a maximum length of 20").
MAX_USER_NAME = 20


def check_user_accounts(body: Body) -> None:
    """Validate a pool's ``userAccounts`` (in place: defaults added, passwords dropped); see decision 0010.

    Refused: a second account with the same name (case-insensitively), names over 20 characters, more
    accounts than a node has uids for, ``uid`` without ``gid`` (the spec: together or not at all), uid or gid
    0 for a non-admin account, ``windowsUserConfiguration`` on a Linux pool (400); an admin account
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
        agent = str((body.get("virtualMachineConfiguration") or {}).get("nodeAgentSKUId", ""))
        if ua.get("windowsUserConfiguration") and images.os_type_of(agent) != "windows":
            raise errors.invalid_property_value(
                f"{at}.windowsUserConfiguration",
                "set",
                "windowsUserConfiguration applies to Windows pools only",
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


# Nested pool properties with an effect a local node does not have: VM extensions install software, application
# licenses enable licensed renderers. (Container configurations run under Podman: decision 0170.)
_POOL_VM_NOT_YET = ("extensions",)


def refuse_unsupported(body: Body, kind: str) -> None:
    """Properties batchyard cannot honour: refused clearly instead of stored and ignored (decision 0062).
    (Pool `certificateReferences` are checked by service.certificates, `applicationPackageReferences` by
    service.applications.)"""
    if kind == "pool":
        if body.get("applicationLicenses") not in (None, []):
            raise errors.not_implemented("applicationLicenses on pools")
        vmc = body.get("virtualMachineConfiguration") or {}
        for prop in _POOL_VM_NOT_YET:
            if vmc.get(prop) not in (None, [], {}):
                raise errors.not_implemented(f"virtualMachineConfiguration.{prop} on pools")


def new_pool(spec: Body, now: str) -> Body:
    body = copy.deepcopy(spec)
    refuse_unsupported(body, "pool")
    images.check_cloud_service(body)
    if not body.get("virtualMachineConfiguration"):
        raise errors.missing_required_property("virtualMachineConfiguration")
    images.check_image(body["virtualMachineConfiguration"])
    if body["virtualMachineConfiguration"].get("containerConfiguration") is not None:
        containers.check_pool_configuration(body["virtualMachineConfiguration"]["containerConfiguration"])
    auto = bool(body.get("enableAutoScale", False))  # formula and interval checked by service.autoscale
    check_resize_timeout(body.get("resizeTimeout"))
    # neither target given (and no autoscale): the service creates an empty pool (both targets 0)
    tdn = int(body.get("targetDedicatedNodes", 0) or 0)
    tln = int(body.get("targetLowPriorityNodes", 0) or 0)
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
    vm_configuration_defaults(body["virtualMachineConfiguration"])
    if body.get("startTask") is not None:
        body["startTask"] = starttask.normalise(body["startTask"], body.get("userAccounts") or ())
    if body.get("networkConfiguration") is not None:
        body["networkConfiguration"] = network_configuration(body["networkConfiguration"])
    check_user_accounts(body)
    if body.get("mountConfiguration") is not None:
        body["mountConfiguration"] = mounts.check(body["mountConfiguration"])  # mounted by each node
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
            "enableAutoScale": auto,
            "enableInterNodeCommunication": bool(body.get("enableInterNodeCommunication", False)),
            "taskSlotsPerNode": slots,
            "taskSchedulingPolicy": policy,
        }
    )
    return body


# OS disk caching comes back PascalCase except `none` (recorded: readwrite -> ReadWrite)
_OS_DISK_CACHING = {"none": "none", "readonly": "ReadOnly", "readwrite": "ReadWrite"}


def check_resize_timeout(value: object) -> None:
    """The service refuses a resize timeout under 5 minutes with 400 (pool add and resize docs)."""
    if not isinstance(value, str):
        return
    try:
        too_short = parse_duration(value) < datetime.timedelta(minutes=5)
    except ValueError:
        raise errors.invalid_property_value("resizeTimeout", value) from None
    if too_short:
        raise errors.invalid_property_value("resizeTimeout", value, "The minimum resize timeout is 5 minutes")


def vm_configuration_defaults(vmc: Body) -> None:
    """The defaults the service fills into a pool's virtual machine configuration (create and PATCH).

    A data disk's storage type defaults inside `managedDisk` (its place since 2025-06-01, as recorded); a disk
    sent by an older client with the top-level `storageAccountType` keeps it there.
    """
    img = vmc.get("imageReference")
    if isinstance(img, dict) and "virtualMachineImageId" not in img:
        img.setdefault("version", "latest")
    for disk in vmc.get("dataDisks") or []:
        disk.setdefault("caching", "none")
        if "storageAccountType" not in disk:
            disk.setdefault("managedDisk", {}).setdefault("storageAccountType", "standard_lrs")
    os_disk = vmc.get("osDisk")
    if isinstance(os_disk, dict):
        os_disk.setdefault("ephemeralOSDiskSettings", {})
        if isinstance(os_disk.get("managedDisk"), dict):
            os_disk["managedDisk"].setdefault("storageAccountType", "standard_lrs")
        if "caching" in os_disk:
            os_disk["caching"] = _OS_DISK_CACHING.get(str(os_disk["caching"]).lower(), os_disk["caching"])
    security = vmc.get("securityProfile")
    if isinstance(security, dict) and isinstance(security.get("securityType"), str):
        security["securityType"] = security["securityType"].lower()  # `trustedlaunch`, as recorded
    placement = vmc.get("nodePlacementConfiguration")
    if isinstance(placement, dict) and isinstance(placement.get("policy"), str):
        placement["policy"] = placement["policy"].capitalize()  # `Zonal`, as recorded


def network_configuration(spec: Body) -> Body:
    """A pool's network configuration with the service's defaults; what a local node cannot do is refused.

    Nodes run on this host: there is no virtual network to join and no firewall in front of them, so a subnet,
    a public IP choice other than the default and deny rules cannot be honoured. Inbound NAT pools are
    reported on every node as its inbound endpoints (see `node_endpoints`).
    """
    net = copy.deepcopy(spec)
    if net.get("subnetId"):
        raise errors.not_implemented("networkConfiguration.subnetId on pools")
    if str(net.get("dynamicVNetAssignmentScope", "none")) != "none":
        raise errors.not_implemented("networkConfiguration.dynamicVNetAssignmentScope job on pools")
    pip = net.get("publicIPAddressConfiguration") or {}
    if str(pip.get("provision", "batchmanaged")) != "batchmanaged" or pip.get("ipAddressIds"):
        raise errors.not_implemented("networkConfiguration.publicIPAddressConfiguration on pools")
    nats = (net.get("endpointConfiguration") or {}).get("inboundNATPools") or []
    check_nat_pools(nats)
    for nat in nats:
        for rule in nat.get("networkSecurityGroupRules") or []:
            if str(rule.get("access", "")) == "deny":
                raise errors.not_implemented("networkSecurityGroupRules with access deny on pools")
            rule.setdefault("sourcePortRanges", ["*"])
    out: Body = {"dynamicVNetAssignmentScope": "none"}  # the service's key order
    out.update(net)
    out["enableAcceleratedNetworking"] = bool(net.get("enableAcceleratedNetworking", False))
    return out


_NAT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,75}[A-Za-z0-9_])?$")
_RESERVED_BACKEND = (29876, 29877)
_RESERVED_FRONTEND = (50000, 55000)
MAX_NAT_POOLS = 5
MAX_NSG_RULES = 25


def check_nat_pools(nats: list[Body]) -> None:
    """The rules the service states for inbound NAT pools (each breach is a 400 naming the property)."""
    at = "networkConfiguration.endpointConfiguration.inboundNATPools"
    if len(nats) > MAX_NAT_POOLS:
        raise errors.invalid_property_value(
            at, len(nats), f"A pool has at most {MAX_NAT_POOLS} inbound NAT pools"
        )
    names: set[str] = set()
    backends: set[int] = set()
    ranges: list[tuple[int, int]] = []
    rules = 0
    for i, nat in enumerate(nats):
        here = f"{at}[{i}]"
        name = str(nat.get("name", ""))
        if not _NAT_NAME.match(name):
            raise errors.invalid_property_value(f"{here}.name", name)
        if name.lower() in names:
            raise errors.invalid_property_value(
                f"{here}.name", name, "Another inbound NAT pool has this name"
            )
        names.add(name.lower())
        if str(nat.get("protocol", "")).lower() not in ("tcp", "udp"):
            raise errors.invalid_property_value(f"{here}.protocol", nat.get("protocol"))
        backend = nat.get("backendPort")
        if not isinstance(backend, int) or not 1 <= backend <= 65535 or backend in _RESERVED_BACKEND:
            raise errors.invalid_property_value(f"{here}.backendPort", backend)
        if backend in backends:
            raise errors.invalid_property_value(
                f"{here}.backendPort", backend, "Another inbound NAT pool has this backend port"
            )
        backends.add(backend)
        start, end = nat.get("frontendPortRangeStart"), nat.get("frontendPortRangeEnd")
        for prop, v in (("frontendPortRangeStart", start), ("frontendPortRangeEnd", end)):
            if (
                not isinstance(v, int)
                or not 1 <= v <= 65534
                or _RESERVED_FRONTEND[0] <= v <= _RESERVED_FRONTEND[1]
            ):
                raise errors.invalid_property_value(f"{here}.{prop}", v)
        assert isinstance(start, int) and isinstance(end, int)
        if end - start + 1 < 40:
            raise errors.invalid_property_value(
                f"{here}.frontendPortRangeEnd", end, "Each frontend port range must contain at least 40 ports"
            )
        if start <= _RESERVED_FRONTEND[0] and end >= _RESERVED_FRONTEND[1]:
            raise errors.invalid_property_value(
                f"{here}.frontendPortRangeEnd", end, "Ports 50000-55000 are reserved"
            )
        for a, b in ranges:
            if start <= b and a <= end:
                raise errors.invalid_property_value(
                    f"{here}.frontendPortRangeStart",
                    start,
                    "The frontend port ranges of a pool cannot overlap",
                )
        ranges.append((start, end))
        rules += len(nat.get("networkSecurityGroupRules") or [])
    if rules > MAX_NSG_RULES:
        raise errors.invalid_property_value(
            at, rules, f"A pool has at most {MAX_NSG_RULES} network security group rules"
        )


def stopped_resize_errors(pool: Body) -> list[Body]:
    """The `resizeErrors` the service reports when a stopped resize left a target unreached (recorded text)."""
    out = []
    for kind, target, current in (
        ("dedicated", "targetDedicatedNodes", "currentDedicatedNodes"),
        ("low priority", "targetLowPriorityNodes", "currentLowPriorityNodes"),
    ):
        if int(pool.get(current, 0)) < int(pool.get(target, 0)):
            out.append(
                {
                    "code": "ResizeStopped",
                    "message": f"Desired number of {kind} nodes could not be allocated due to a stop resize "
                    "operation",
                }
            )
    return out


def pool_view(body: Body) -> Body:
    """Read-time properties of a pool: the node communication mode is reported once it has nodes.

    batchyard's agents open every connection to the server (a long-poll), which is the simplified mode.
    """
    if int(body.get("currentDedicatedNodes", 0)) + int(body.get("currentLowPriorityNodes", 0)) > 0:
        body = dict(body, currentNodeCommunicationMode="simplified")
    if body.get("mountConfiguration"):
        body = dict(body, mountConfiguration=mounts.view(body["mountConfiguration"]))
    if body.get("userAccounts"):
        agent = str((body.get("virtualMachineConfiguration") or {}).get("nodeAgentSKUId", ""))
        body = dict(
            body, userAccounts=[_user_account_view(u, images.os_type_of(agent)) for u in body["userAccounts"]]
        )
    cc = (body.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
    if cc and cc.get("containerRegistries"):
        vmc = dict(
            body["virtualMachineConfiguration"], containerConfiguration=containers.pool_configuration_view(cc)
        )
        body = dict(body, virtualMachineConfiguration=vmc)
    return body


def _user_account_view(account: Body, os_type: str) -> Body:
    """A pool user account as the service returns it (recorded): never the password, `elevationLevel`
    defaulted, and on Windows pools `windowsUserConfiguration.loginMode: batch` in place of any Linux settings."""
    out = {k: v for k, v in account.items() if k != "password"}
    out.setdefault("elevationLevel", "nonadmin")
    if os_type == images.WINDOWS:
        out.pop("linuxUserConfiguration", None)
        out["windowsUserConfiguration"] = {
            "loginMode": "batch",
            **(out.get("windowsUserConfiguration") or {}),
        }
    return out


# The remote-access port the service opens on every node without inbound NAT pools: SSH on Linux, RDP on Windows.
_REMOTE_PORT = {images.LINUX: 22, images.WINDOWS: 3389}


def endpoint_rules(pool: Body) -> list[tuple[str, str, int, tuple[int, int] | None]]:
    """A pool's inbound rules: (name, protocol, backend port, frontend port range or None for the default
    remote-access rule, whose frontend port the service picks itself)."""
    vmc = pool.get("virtualMachineConfiguration") or {}
    nats = ((pool.get("networkConfiguration") or {}).get("endpointConfiguration") or {}).get(
        "inboundNATPools"
    )
    rules: list[tuple[str, str, int, tuple[int, int] | None]] = [
        (
            str(n["name"]),
            str(n.get("protocol", "tcp")),
            int(n["backendPort"]),
            (int(n["frontendPortRangeStart"]), int(n["frontendPortRangeEnd"])),
        )
        for n in nats or []
    ]
    if not rules:
        port = _REMOTE_PORT[images.os_type_of(str(vmc.get("nodeAgentSKUId", "")))]
        rules = [("SSHRule", "tcp", port, None)]
    return rules


def remote_port(pool: Body) -> int:
    """The remote-access port of the pool's OS (SSH on Linux, RDP on Windows)."""
    vmc = pool.get("virtualMachineConfiguration") or {}
    return _REMOTE_PORT[images.os_type_of(str(vmc.get("nodeAgentSKUId", "")))]


#: Where each rule of a node is reachable from outside: rule name -> (address, frontend port).
Frontends = dict[str, tuple[str, int]]


def node_endpoints(pool: Body, ordinal: int, address: str, frontends: Frontends | None = None) -> Body:
    """A node's `endpointConfiguration`: one endpoint per inbound NAT pool, else the SSH/RDP rule.

    The service names them `<natPool>.<n>` (default rule: `SSHRule.<n>`, on Windows too). The frontend is
    where the server forwards that rule for this node (decision 0132); a rule without a forwarder is reported
    at the node's own address and backend port, which reach a program listening on a local node directly.
    """
    out = []
    for name, protocol, port, _ in endpoint_rules(pool):
        public, front = (frontends or {}).get(name, (address, port))
        out.append(
            {
                "name": f"{name}.{ordinal}",
                "protocol": protocol,
                "publicIPAddress": public,
                "publicFQDN": "localhost",
                "frontendPort": front,
                "backendPort": port,
            }
        )
    return {"inboundEndpoints": out}


def node_view(node: Body, pool: Body, ordinal: int, frontends: Frontends | None = None) -> Body:
    """Read-time shape of a node: endpoints, the image's exact version, no state history, agent info once up.

    Nodes have no `previousState` in the service's model (only jobs and tasks do).
    """
    out = {k: v for k, v in node.items() if k not in ("previousState", "previousStateTransitionTime")}
    if out.get("state") in ("creating", "starting"):
        out.pop("nodeAgentInfo", None)  # the agent has not reported yet (recorded creating/starting nodes)
    out["endpointConfiguration"] = node_endpoints(
        pool, ordinal, str(node.get("ipAddress", "127.0.0.1")), frontends
    )
    info = out.get("virtualMachineInfo")
    if isinstance(info, dict) and isinstance(info.get("imageReference"), dict):
        ref = dict(info["imageReference"])
        if "version" in ref:
            ref.setdefault("exactVersion", ref["version"])  # the service reports "latest" as it was asked
        out["virtualMachineInfo"] = dict(info, imageReference=ref)
    return out


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
    if body.get("allowTaskPreemption"):
        raise errors.not_implemented("allowTaskPreemption on jobs")  # the scheduler never preempts
    if body.get("networkConfiguration") is not None:
        raise errors.not_implemented("networkConfiguration on jobs")  # no virtual network to join
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


def new_task(spec: Body, now: str, job: Body, owned: bool = False) -> Body:
    """The stored body of a new task; `owned=True` when the caller hands over `spec` (a freshly decoded
    request body) so it is completed in place instead of deep-copied."""
    body = spec if owned else copy.deepcopy(spec)
    refuse_unsupported(body, "task")
    if not body.get("commandLine"):
        raise errors.missing_required_property("commandLine")
    if body.get("containerSettings") is not None:
        containers.check_task_settings(body["containerSettings"])
    cons = dict(body.get("constraints") or {})
    cons.setdefault("maxWallClockTime", INFINITE)
    cons.setdefault("retentionTime", "P7D")
    cons["maxTaskRetryCount"] = int(cons.get("maxTaskRetryCount", job["constraints"]["maxTaskRetryCount"]))
    if cons["maxTaskRetryCount"] < -1:
        raise errors.invalid_property_value("constraints.maxTaskRetryCount", cons["maxTaskRetryCount"])
    multiinstance.check_new_task(body)
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
