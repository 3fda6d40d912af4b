"""The server's side of mounting a pool's `mountConfiguration` on a node (decision 0142).

An agent reports `mounts: {state, errors}` on its syncs until it has mounted everything (agent.mounts). While the
state is `unknown` or `pending` the node stays `starting` (no task is placed on it); `unknown` gets the pool's
configuration in the reply; `failed` makes the node `unusable` with the agent's node errors, as a node whose
mount failed is on Azure Batch; `ok` (or no field, the usual case) leaves the state to the other rules.
"""

from __future__ import annotations

from typing import Any

from batchyard.service.common import Body
from batchyard.store import schema
from batchyard.store.sql import Tx

#: States a mount report may hold back (a node in another state, e.g. rebooting, keeps it).
_HELD = (
    "creating",
    "starting",
    "idle",
    "running",
    "unknown",
    "offline",
    "waitingforstarttask",
    "starttaskfailed",
)


def gate(
    tx: Tx, pool_key: str, current: str, report: dict[str, Any] | None, new_state: str, nbody: Body
) -> tuple[str, Body, bool]:
    """The node's state given its agent's mount report, what the reply adds (the configuration), and whether
    the start task must wait (mounts come first, as on the service; a node whose mounts failed never runs it)."""
    if report is None:
        return new_state, {}, False
    state = str(report.get("state", "unknown"))
    extra: Body = {}
    if state == "unknown":
        pool = tx.get(schema.pools, key=pool_key)
        entries = (pool["body"].get("mountConfiguration") or []) if pool is not None else []
        extra["mountConfiguration"] = entries
        if not entries:
            return new_state, extra, False
    if new_state not in _HELD:
        return new_state, extra, state != "ok"
    if state in ("unknown", "pending"):
        return ("starting" if current in ("creating", "starting") else current), extra, True
    if state == "failed":
        nbody["errors"] = list(report.get("errors") or [])
        return "unusable", extra, True
    return new_state, extra, False
