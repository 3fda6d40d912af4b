"""What an evaluation reads: the service-defined variable names, `Inputs`, and the per-run environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from batchyard.autoscale.functions import Context
from batchyard.autoscale.nodes import Pos
from batchyard.autoscale.values import EMPTY_SERIES, Metric, Option, Series, Timestamp, Value

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
NODE_DEALLOCATION = "$NodeDeallocationOption"
ALIASES = {"$TargetDedicated": TARGET_DEDICATED, "$TargetLowPriority": TARGET_LOW_PRIORITY}
TARGETS = (TARGET_DEDICATED, TARGET_LOW_PRIORITY, *ALIASES)

# Read-only service variables. Pool figures also have a current value usable as a double
# (the docs' examples compute `$CurrentDedicatedNodes * 1.1`); the others are sample sets only.
POOL_FIGURES = (
    "$CurrentDedicatedNodes",
    "$CurrentLowPriorityNodes",
    "$PreemptedNodeCount",
    "$UsableNodeCount",
    "$TaskSlotsPerNode",
)
SAMPLE_SETS = (
    "$CPUPercent",
    "$WallClockSeconds",
    "$MemoryBytes",
    "$DiskBytes",
    "$DiskReadBytes",
    "$DiskWriteBytes",
    "$DiskReadOps",
    "$DiskWriteOps",
    "$NetworkInBytes",
    "$NetworkOutBytes",
    "$SampleNodeCount",
    "$ActiveTasks",
    "$RunningTasks",
    "$PendingTasks",
    "$SucceededTasks",
    "$FailedTasks",
    # batchyard-only (decision 0090): task slots, for pools whose tasks take more than one slot
    "$ActiveTaskSlots",
    "$RunningTaskSlots",
    "$PendingTaskSlots",
)
# Older names still seen in formulas in the wild (doAzureParallel's MAX_CPU formula reads `$CurrentDedicated`).
READ_ONLY_ALIASES = {"$CurrentDedicated": "$CurrentDedicatedNodes"}
READ_ONLY = frozenset(POOL_FIGURES + SAMPLE_SETS)


@dataclass(frozen=True)
class Inputs:
    """Everything an evaluation reads: the clock, the pool's figures and the metrics' histories."""

    now: datetime
    target_dedicated: int = 0
    target_low_priority: int = 0
    current_dedicated: int = 0
    current_low_priority: int = 0
    preempted_nodes: int = 0
    usable_nodes: int = 0
    task_slots_per_node: int = 1
    metrics: Mapping[str, Series] = field(default_factory=dict)
    sample_period: timedelta = timedelta(seconds=30)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        unknown = set(self.metrics) - READ_ONLY
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {sorted(READ_ONLY)}")
        if self.sample_period <= timedelta(0):
            raise ValueError("sample_period must be positive")

    @cached_property
    def ticks(self) -> tuple[int, int]:
        """`now` and `sample_period` in 100 ns ticks, computed once per Inputs."""
        return Timestamp.of(self.now).ticks, self.sample_period // timedelta(microseconds=1) * 10


class Env:
    """One run's variables, clock and sample sets (built lazily: most formulas read few of them)."""

    __slots__ = ("vars", "ctx", "inputs", "metrics", "assigned")

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        now, period = inputs.ticks
        self.ctx = Context(now, period, inputs.seed)
        td, tl = float(inputs.target_dedicated), float(inputs.target_low_priority)
        self.vars: dict[str, Value] = {
            TARGET_DEDICATED: td,
            TARGET_LOW_PRIORITY: tl,
            NODE_DEALLOCATION: Option("requeue"),
            "$TargetDedicated": td,
            "$TargetLowPriority": tl,
        }
        self.metrics: dict[str, Metric] = {}
        self.assigned: dict[str, Pos] = {}

    def metric(self, name: str) -> Metric:
        found = self.metrics.get(name)
        if found is None:
            i = self.inputs
            current: float | None = None
            if name in POOL_FIGURES:
                current = float(
                    {
                        "$CurrentDedicatedNodes": i.current_dedicated,
                        "$CurrentLowPriorityNodes": i.current_low_priority,
                        "$PreemptedNodeCount": i.preempted_nodes,
                        "$UsableNodeCount": i.usable_nodes,
                        "$TaskSlotsPerNode": i.task_slots_per_node,
                    }[name]
                )
            found = Metric(name, i.metrics.get(name, EMPTY_SERIES), current)
            self.metrics[name] = found
        return found
