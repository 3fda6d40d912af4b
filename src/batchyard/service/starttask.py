"""The server's side of pool start tasks: input checks, and what a node's agent reports at and after boot.

Each agent process has a boot id. The first sync with a new boot id is a node (re)start (join, reboot,
reimage, an agent respawned after a crash): the pool's start task *as it is now* is snapshotted into the node
(`_startTask`), the node's `startTaskInfo` is cleared, and the agent is handed the snapshot. The agent runs
and retries it and reports each attempt's start and the final end; `models.starttask.gate` turns that into
the node's state. A pool start task changed later reaches a node only at its next boot, as on Azure
(decision 0110). An agent that dies during its start task is a node failure: the node's agent is started
again, with a new boot id, and the start task runs from the beginning with `retryCount` 0. A node in
`rebooting`/`reimaging`/`unusable` whose new agent process syncs has booted: it goes back to `starting`, and on
through its start task (a node provider only restarts the agent).
"""

from __future__ import annotations

import copy
from typing import Any

from batchyard.models import errors, starttask
from batchyard.service.staging import _value_at
from batchyard.storage import SpecError, parse_resource_files
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

Body = dict[str, Any]

STARTED = "startTaskStarted"
COMPLETED = "startTaskCompleted"
KINDS = (STARTED, COMPLETED)
#: States a node leaves for `starting` when a new agent process of it syncs (its restart is done).
BOOTING = ("rebooting", "reimaging", "unusable", "starting", "creating")


def check(pool: Body) -> None:
    """The pool body's start task, validated and defaulted in place (400/413/501 name the property)."""
    st = pool.get("startTask")
    if st is None:
        pool.pop("startTask", None)
        return
    st = starttask.normalise(st, pool.get("userAccounts") or ())
    try:
        parse_resource_files(st.get("resourceFiles"), "startTask.resourceFiles")
    except SpecError as e:
        if e.unsupported:
            raise errors.not_implemented(e.prop) from None
        value = _value_at({"startTask": st}, e.prop)
        shown = value if isinstance(value, (str, int, float)) else ""
        raise errors.invalid_property_value(e.prop, shown, e.reason) from None
    pool["startTask"] = st


def ref(boot: str) -> str:
    """The `ref` of a boot's start-task events (never a task reference: it has no `/`)."""
    return f"starttask:{boot}"


def work(st: Body) -> Body:
    """What the agent needs to run a start task (environment as ordered pairs, like a task's)."""
    return {
        "commandLine": st["commandLine"],
        "environment": [[e["name"], e.get("value") or ""] for e in st.get("environmentSettings") or []],
        "userIdentity": st.get("userIdentity"),
        "resourceFiles": st.get("resourceFiles") or [],
        "maxTaskRetryCount": int(st.get("maxTaskRetryCount", 0)),
        "waitForSuccess": bool(st.get("waitForSuccess", True)),
    }


def apply(tx: Tx, node: Row, boot: str | None, events: list[Body]) -> tuple[bool, bool]:
    """A new boot and the start-task events of this sync, applied to the node body: whether the body changed,
    and whether this sync is the first of a new agent process (a node that was rebooting has booted).

    Events of another boot (a previous agent process of the node) are ignored, and so are events already
    applied (each sync's events are applied in `seq` order; the agent may resend after a lost answer).
    """
    if boot is None:
        return False, False
    body = node["body"]
    dirty = booted = False
    if body.get("_boot") != boot:
        booted = True
        pool = tx.get(schema.pools, key=node["pool_key"])
        st = (pool["body"] if pool is not None else {}).get("startTask")
        body["_boot"] = boot
        body["_stSeq"] = 0
        body.pop("startTaskInfo", None)
        if st:
            body["_startTask"] = copy.deepcopy(st)
        else:
            body.pop("_startTask", None)
        dirty = True
    mine = ref(boot)
    for ev in sorted(events, key=lambda e: int(e.get("seq", 0))):
        seq = int(ev.get("seq", 0))
        if ev.get("ref") != mine or seq <= int(body.get("_stSeq", 0)) or "_startTask" not in body:
            continue
        body["_stSeq"] = seq
        info = body.get("startTaskInfo")
        retries = int(ev.get("retryCount") or 0)
        if ev.get("type") == STARTED:
            body["startTaskInfo"] = starttask.started(str(ev.get("time")), retries)
        else:
            failure = ev.get("failureInfo")
            if isinstance(failure, dict) and not failure.get("details"):
                failure = {k: v for k, v in failure.items() if k != "details"}
            start = ev.get("startTime") or (info or {}).get("startTime") or ev.get("endTime")
            body["startTaskInfo"] = starttask.completed(
                info, str(start), str(ev.get("endTime")), retries, ev.get("exitCode"), failure
            )
        dirty = True
    return dirty, booted


def reply(node_body: Body, boot: str | None, need: bool) -> Body:
    """The start task for an agent that asks for its boot's (``None``: the pool had none at boot)."""
    if boot is None or not need or node_body.get("_boot") != boot:
        return {}
    st = node_body.get("_startTask")
    return {"startTask": work(st) if isinstance(st, dict) else None}


def gate(node_body: Body) -> str | None:
    return starttask.gate(node_body)
