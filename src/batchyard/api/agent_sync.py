"""`POST /batchyard/agent/v1/sync`: the agent protocol's one route, authenticated before its body is read.

The agent names its node in `x-batchyard-node-id` and proves it with `x-batchyard-node-token`; the token is
checked (against a small cache, else the store) before a byte of the body is read. The body is then bounded
(`limits.AGENT_MAX_BODY`) and decoded into `SyncBody`, so a malformed one is a 400 Batch error naming the
property, never a 500. Unknown properties are refused: a field added to the agent's events must be added
here too (it would otherwise be dropped on the way to `service.agents`).

An agent without the node-id header (an older agent the server re-adopted) is authenticated by
`service.agents.sync` from the `nodeId` in its (bounded, validated) body, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any, Literal

import msgspec

from batchyard.models import errors
from batchyard.models.decode import MAX_JSON_DEPTH
from batchyard.service import agents, usage
from batchyard.service.context import Ctx

NODE_ID_HEADER = "x-batchyard-node-id"
TOKEN_HEADER = "x-batchyard-node-token"
MAX_WAIT = 30.0


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Usage(_Strict):
    user: float = 0.0
    kernel: float = 0.0
    readOps: int = 0
    writeOps: int = 0


class NameValue(_Strict):
    name: str = ""
    value: str = ""


class FailureInfo(_Strict):
    category: str = ""
    code: str = ""
    message: str = ""
    details: list[NameValue] | None = None


class ContainerInfo(_Strict):
    containerId: str = ""
    state: str = ""
    error: str = ""


class Event(_Strict):
    # coordinated: a multi-instance instance; preparing…jobrelease: job preparation and release tasks;
    # nodeError: failureInfo of a node setup step
    type: Literal[
        "started",
        "completed",
        "nodeError",
        "startTaskStarted",
        "startTaskCompleted",
        "coordinated",
        "preparing",
        "prepfailed",
        "jobprep",
        "jobrelease",
    ]
    ref: str
    seq: int = 0
    time: str | None = None
    exitCode: int | None = None
    startTime: str | None = None
    endTime: str | None = None
    timedOut: bool = False
    usage: Usage | None = None
    failureInfo: FailureInfo | None = None
    noRetry: bool = False  # a data-staging failure: completed without a retry
    retryCount: int = 0  # start task attempts (service.starttask), job preparation retries (service.jobprep)
    # jobprep / jobrelease events (service.jobprep): running or completed
    state: Literal["running", "completed"] | None = None
    lastRetryTime: str | None = None
    containerInfo: ContainerInfo | None = None  # a container task's container (decision 0170)


class NodeError(_Strict):
    code: str = ""
    message: str = ""
    errorDetails: list[NameValue] | None = None


class NodeStats(_Strict):
    """Cumulative resource figures of the agent process `boot` (agent.usage, service.usage)."""

    boot: str = ""
    seconds: float = 0.0
    cpuSeconds: float = 0.0
    coreSeconds: float = 0.0
    memGiBSeconds: float = 0.0
    memPeakGiB: float = 0.0
    diskGiBSeconds: float = 0.0
    diskPeakGiB: float = 0.0
    diskReadOps: float = 0.0
    diskWriteOps: float = 0.0
    diskReadBytes: float = 0.0
    diskWriteBytes: float = 0.0
    netReadBytes: float = 0.0
    netWriteBytes: float = 0.0


class MountReport(_Strict):
    """The agent's mounting of its pool's mountConfiguration (agent.mounts, service.nodemounts)."""

    state: Literal["unknown", "pending", "ok", "failed"] = "unknown"
    errors: list[NodeError] = msgspec.field(default_factory=list)  # each as a node errors[] entry


class SyncBody(_Strict):
    nodeId: str
    pid: int | None = None
    events: list[Event] = msgspec.field(default_factory=list)
    running: list[str] = msgspec.field(default_factory=list)
    wait: float = 0.0
    boot: str | None = None  # the agent process's boot id: a new one is a node (re)start
    needStartTask: bool = False  # the agent has not received its boot's start task yet
    nodeErrors: list[NodeError] | None = None  # sent once after start-up: [] = joined cleanly
    stats: NodeStats | None = None  # sent every few seconds, not on every sync
    mounts: MountReport | None = None  # only until the node has mounted its pool's file systems


_decoder = msgspec.json.Decoder(SyncBody)


def decode_sync(data: bytes) -> SyncBody:
    """The sync body, or 400 InvalidRequestBody / InvalidPropertyValue / UnsupportedProperty.

    No nesting scan (it would cost more than the decode on a busy node's sync): every field is typed and
    unknown ones are refused, so the decoder stops at the first bracket that does not fit and never nests
    deeper than `SyncBody` does.
    """
    try:
        body = _decoder.decode(data)
    except RecursionError:  # cannot happen with this schema; a 400 all the same if it ever did
        raise errors.invalid_request_body(
            f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep."
        ) from None
    except msgspec.ValidationError as e:
        text = str(e).replace("`", "")
        reason, _, where = text.partition(" - at ")
        where = where.removeprefix("$.").removeprefix("$")
        if reason.startswith("Object contains unknown field "):
            name = reason.removeprefix("Object contains unknown field ")
            raise errors.unsupported_property(f"{where}.{name}" if where else name) from None
        if where:
            return _raise(errors.invalid_property_value(where, "", reason))
        return _raise(errors.invalid_request_body(reason))
    except msgspec.DecodeError as e:
        return _raise(errors.invalid_request_body(str(e).replace("`", "")))
    if body.pid is not None and not 0 < body.pid < 2**31:
        raise errors.invalid_property_value("pid", str(body.pid), "Not a process id.")
    if body.stats is not None:
        figures = msgspec.to_builtins(body.stats)
        for k, v in figures.items():
            if k != "boot" and not 0 <= v < 1e18:  # also refuses NaN and infinities
                raise errors.invalid_property_value(
                    f"stats.{k}", str(v), "Resource figures are finite and >= 0."
                )
    if not body.wait >= 0:  # also refuses NaN
        raise errors.invalid_property_value("wait", str(body.wait), "The wait must be >= 0 seconds.")
    return body


def _note_stats(ctx: Ctx, node_id: str, stats: NodeStats) -> None:
    usage.note_stats(ctx, node_id, msgspec.to_builtins(stats))


def _raise(err: errors.BatchError) -> SyncBody:
    raise err


class TokenCheck:
    """Node id -> token of nodes that authenticated before: repeat syncs cost a dict lookup, not a query.

    A stale entry (the node was deleted) only lets a request past this pre-check; `agents.sync` checks the
    token against the store again in its own transaction.
    """

    def __init__(self, ctx: Ctx, max_entries: int = 100_000) -> None:
        self.ctx = ctx
        self.known: dict[str, str] = {}
        self.max_entries = max_entries

    def verify(self, node_id: str, token: str) -> None:
        cached = self.known.get(node_id)
        if cached is not None and hmac.compare_digest(cached, token):
            return
        with self.ctx.store.tx() as tx:
            agents.authenticate(tx, node_id, token)
        if len(self.known) >= self.max_entries:
            self.known.clear()
        self.known[node_id] = token


async def sync(ctx: Ctx, check: TokenCheck, headers: Any, read_body: Any) -> dict[str, Any]:
    """Authenticate, read and validate the body, apply it, and (long-)poll for work: the agent's reply."""
    token = headers.get(TOKEN_HEADER)
    if not token:
        raise errors.missing_authentication()
    header_node = headers.get(NODE_ID_HEADER)
    if header_node is not None:
        check.verify(header_node, token)
    body = decode_sync(await read_body())
    if header_node is not None and body.nodeId != header_node:
        raise errors.invalid_property_value(
            "nodeId", body.nodeId, f"The {NODE_ID_HEADER} header names another node."
        )
    node_id = body.nodeId
    events: list[dict[str, Any]] = msgspec.to_builtins(body.events)
    wait = min(body.wait, MAX_WAIT)
    ev = ctx.hub.node_event(node_id)
    ev.clear()
    boot = (body.boot, body.needStartTask)
    node_errors = None
    if body.nodeErrors is not None:
        node_errors = [
            {k: v for k, v in e.items() if v is not None} for e in msgspec.to_builtins(body.nodeErrors)
        ]
    mounts = msgspec.to_builtins(body.mounts) if body.mounts is not None else None
    out = agents.sync(ctx, node_id, token, events, body.running, body.pid, boot, node_errors, mounts)
    if body.stats is not None:  # after agents.sync authenticated the node
        _note_stats(ctx, node_id, body.stats)
    answer_now = "startTask" in out or "mountConfiguration" in out
    quiet = not out["run"] and not out["kill"] and not out["release"] and not answer_now
    if not events and quiet and wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout=wait)
        out.update(agents.plan(ctx, node_id, body.running))
        if _maybe_removed(ctx, node_id, ev) and not agents.node_exists(ctx, node_id):
            ctx.hub.forget_node(node_id)
            out["stop"] = True
    return out


def _maybe_removed(ctx: Ctx, node_id: str, ev: asyncio.Event) -> bool:
    """Whether the node may have left the pool while its poll waited (then the store says; decision 0186).

    Every removal of a node with an agent (`PoolManager._remove_node`) drops the node's wake-up event after
    setting it, so a poll still holding the node's current event knows without a query that it is there.
    """
    return ctx.hub.closing or ctx.hub.node_event(node_id) is not ev
