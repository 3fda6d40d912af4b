"""Multi-instance (MPI) tasks: input rules, node addresses, the instances' environment and the subtask view.

A multi-instance task runs on ``numberOfInstances`` nodes at once, one instance per node: instance 0, the
*primary*, on the master node, the *subtasks* 1…N-1 elsewhere. Every instance runs the coordination command;
the primary then runs the task's command line (decision 0160). Pure: no I/O here.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from batchyard.models import errors

#: The port ``AZ_BATCH_MASTER_NODE`` names; Batch reserves it for itself. Here every node's launcher
#: (``batchyard-rsh``'s server, decision 0161) listens on it at the node's own address.
MASTER_PORT = 6000

#: The most nodes an inter-node-communication pool can have (Batch-service accounts, quota page): a task
#: asking for more instances can never be scheduled.
MAX_INSTANCES = 100

#: Node addresses: 127.<1..254>.<0..255>.<1..254> (each local node has its own loopback address).
_ADDRESS_SPACE = 254 * 256 * 254

INSTANCE_SEP = "~"

Body = dict[str, Any]


def settings(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    mis = body.get("multiInstanceSettings")
    return mis if isinstance(mis, Mapping) else None


def instances(body: Mapping[str, Any]) -> int:
    mis = settings(body)
    return int(mis.get("numberOfInstances", 1)) if mis is not None else 0


def check_new_task(body: Body) -> None:
    """Validate and default ``multiInstanceSettings`` on a task being added (400s name the property)."""
    mis = body.get("multiInstanceSettings")
    if mis is None:
        return
    if not isinstance(mis, dict):
        raise errors.invalid_property_value("multiInstanceSettings", mis)
    n = mis.get("numberOfInstances", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise errors.invalid_property_value(
            "multiInstanceSettings.numberOfInstances", n, "numberOfInstances must be at least 1"
        )
    mis["numberOfInstances"] = n
    if not mis.get("coordinationCommandLine"):
        raise errors.missing_required_property("multiInstanceSettings.coordinationCommandLine")
    if "requiredSlots" in body and body["requiredSlots"] != 1:
        raise errors.invalid_property_value(
            "requiredSlots", body["requiredSlots"], "requiredSlots is not supported for multi-instance tasks"
        )


def address(index: int) -> str:
    """The loopback address of node number ``index`` (any int; wraps around the space)."""
    i = index % _ADDRESS_SPACE
    a, rest = divmod(i, 256 * 254)
    b, c = divmod(rest, 254)
    return f"127.{a + 1}.{b}.{c + 1}"


def pick_address(seed: str, used: set[str]) -> str:
    """A node address not in ``used``, starting from a point that depends on ``seed`` (the data dir), so
    two servers on one host rarely give two nodes the same address."""
    start = zlib.crc32(seed.encode())
    for i in range(_ADDRESS_SPACE):
        a = address(start + i)
        if a not in used:
            return a
    raise RuntimeError("no free node address")


def instance_ref(task_ref: str, index: int) -> str:
    return f"{task_ref}{INSTANCE_SEP}{index}"


def parse_instance_ref(ref: str) -> tuple[str, int, int] | None:
    """``<job>/<task>~<i>#<attempt>`` → (task ref, i, attempt); ``None`` for an ordinary attempt ref."""
    base, _, attempt = ref.rpartition("#")
    task, sep, idx = base.rpartition(INSTANCE_SEP)
    if not sep or not idx.isdigit() or not attempt.isdigit():
        return None
    return task, int(idx), int(attempt)


def gang_env(addresses: Sequence[str], index: int, shared_dir: str, cores: int = 1) -> list[list[str]]:
    """The variables every instance gets (the master's address first), as name/value pairs."""
    master = addresses[0]
    ccp = [str(len(addresses))]
    for a in addresses:
        ccp += [a, str(cores)]
    return [
        ["AZ_BATCH_HOST_LIST", ",".join(addresses)],
        ["AZ_BATCH_NODE_LIST", ";".join(addresses)],
        ["AZ_BATCH_MASTER_NODE", f"{master}:{MASTER_PORT}"],
        ["AZ_BATCH_IS_CURRENT_NODE_MASTER", "true" if index == 0 else "false"],
        ["AZ_BATCH_TASK_SHARED_DIR", shared_dir],
        ["CCP_NODES", " ".join(ccp)],
    ]


def subtask_view(inst: Mapping[str, Any], task_ended: str | None) -> Body:
    """One ``BatchSubtask`` from the gang record; a subtask still open when its task ended is shown ended."""
    out: Body = {"id": int(inst["id"])}
    if isinstance(inst.get("nodeInfo"), Mapping):
        out["nodeInfo"] = dict(inst["nodeInfo"])
    state = str(inst.get("state", "preparing"))
    history = list(inst.get("history") or [])
    if state != "completed" and task_ended is not None:
        history = [*history, [state, str(inst.get("stateTransitionTime", task_ended))]]
        state, changed = "completed", task_ended
        end = {"endTime": task_ended}
    else:
        changed = str(inst.get("stateTransitionTime", ""))
        end = {"endTime": inst["endTime"]} if inst.get("endTime") else {}
    if inst.get("startTime"):
        out["startTime"] = inst["startTime"]
    out.update(end)
    if state == "completed":
        if inst.get("exitCode") is not None:
            out["exitCode"] = int(inst["exitCode"])
        failure = inst.get("failureInfo")
        if isinstance(failure, Mapping):
            out["failureInfo"] = dict(failure)
        out["result"] = "failure" if failure else "success"
    out["state"] = state
    out["stateTransitionTime"] = changed
    if history:
        out["previousState"] = history[-1][0]
        out["previousStateTransitionTime"] = history[-1][1]
    return out
