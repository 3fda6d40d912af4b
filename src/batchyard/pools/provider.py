"""The node-provider contract: where a compute node's agent runs (decision 0100).

A provider only starts and stops processes that run `batchyard agent`, and wipes a node's local disk. It never
decides anything: the server chooses which nodes exist, which are removed, rebooted or reimaged, and the agent
protocol (decision 0005) is the only source of truth about what runs on a node. A provider reports what its
engine did on its own (a node lost, a spot node preempted) through `events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class NodeSpec:
    """Everything a provider needs to start one node's agent (the same for a first start and a restart)."""

    node_id: str
    token: str  # the node's own agent token (never the account key)
    pool_id: str
    root: Path  # the node's directory ($AZ_BATCH_NODE_ROOT_DIR) as the server sees it
    dedicated: bool
    user_accounts: tuple[dict[str, Any], ...] = field(default=())
    container: dict[str, Any] | None = None  # the pool's containerConfiguration (decision 0170)


class NodeEventKind(StrEnum):
    LOST = "lost"  # the engine says the node is gone (host down, pilot job killed)
    PREEMPTED = "preempted"  # the engine took a low-priority node back


@dataclass(frozen=True)
class NodeEvent:
    node_id: str
    kind: NodeEventKind
    reason: str = ""


#: A provider's handle on a started agent: a pid here, a Slurm job id for pilots; None when not started.
Handle = int | None


@runtime_checkable
class NodeProvider(Protocol):
    """Starts, stops and wipes nodes; called by the pool manager only, off the event loop for `create`."""

    #: The URL the agents it starts talk to (a node started for another URL is restarted on adoption).
    server_url: str

    def create(self, specs: Sequence[NodeSpec]) -> list[int | OSError]:
        """Start the agents of new nodes of a pool; one handle (or the error) per spec, in order."""
        ...

    def start(self, spec: NodeSpec) -> int:
        """Start the agent of an existing node again (after reboot, reimage, deallocation, preemption)."""
        ...

    def alive(self, handle: Handle, node_id: str) -> bool:
        """Whether the node's agent is still running (handles may be reused: check it is this node's)."""
        ...

    def watch(self, handle: Handle, node_id: str) -> bool:
        """Report this agent's exit through `exited` from now on (decision 0185), for an agent known to be
        alive. False when the provider cannot: the pool manager then asks `alive` on each of its passes."""
        ...

    def exited(self) -> list[tuple[Handle, str]]:
        """Watched agents that exited since the last call, as (handle, node id); never blocks. Its cost must
        not grow with the number of agents that are still running: the pool manager calls it every second."""
        ...

    def stop(self, handle: Handle, node_id: str) -> None:
        """Ask the agent to stop: it kills its tasks and exits, keeping the node's disk."""
        ...

    def kill(self, handle: Handle, node_id: str) -> None:
        """Stop the agent and everything it started, now."""
        ...

    def wipe(self, node_id: str, root: Path) -> None:
        """Lose the node's local disk (reimage, removal, preemption); called once its agent is stopped."""
        ...

    def events(self) -> list[NodeEvent]:
        """What the engine did to nodes on its own since the last call (lost, preempted); never blocks."""
        ...
