"""Task dependencies: which parent references a dependent waits on. Pure.

A reference is either a task key (an explicit `taskIds` entry, compared case-insensitively) or an integer
from a `taskIdRanges` entry; integer ids ignore leading zeros ("4", "04" and "004" are all 4, and the first
of them to complete satisfies the reference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from batchyard.models import errors

MAX_IDS_CHARS = 64000
MAX_RANGE_TOTAL = 1_000_000
_INT_RE = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class Dependencies:
    task_keys: frozenset[str]
    ranges: tuple[tuple[int, int], ...]

    @property
    def empty(self) -> bool:
        return not self.task_keys and not self.ranges

    def range_size(self) -> int:
        return sum(end - start + 1 for start, end in merge(self.ranges))


def numeric_id(task_id: str) -> int | None:
    """The integer value of an id made only of digits (leading zeros ignored), else None."""
    if _INT_RE.match(task_id):
        return int(task_id)
    return None


def merge(ranges: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def parse(depends_on: dict[str, Any] | None, own_id: str) -> Dependencies:
    """Validate `dependsOn` and normalise it; the errors are the service's."""
    if not depends_on:
        return Dependencies(frozenset(), ())
    ids = [str(i) for i in depends_on.get("taskIds") or []]
    if sum(len(i) for i in ids) > MAX_IDS_CHARS:
        raise errors.BatchError(
            400,
            "TaskDependencyListTooLong",
            "The task depends on too many other tasks; the combined length of the task ids exceeds 64000 "
            "characters. Use task id ranges instead.",
        )
    ranges: list[tuple[int, int]] = []
    for i, r in enumerate(depends_on.get("taskIdRanges") or []):
        start, end = int(r["start"]), int(r["end"])
        if start < 0 or end < start:
            raise errors.invalid_property_value(f"dependsOn.taskIdRanges[{i}]", f"{start}-{end}")
        ranges.append((start, end))
    deps = Dependencies(frozenset(i.lower() for i in ids), tuple(merge(tuple(ranges))))
    if deps.range_size() > MAX_RANGE_TOTAL:
        raise errors.BatchError(
            400,
            "TaskDependencyRangesTooLong",
            f"The task dependency ranges cover more than {MAX_RANGE_TOTAL} task ids.",
        )
    own = own_id.lower()
    n = numeric_id(own_id)
    if own in deps.task_keys or (n is not None and any(s <= n <= e for s, e in deps.ranges)):
        raise errors.invalid_property_value("dependsOn", own_id, "A task cannot depend on itself")
    return deps


def unmet(deps: Dependencies, satisfied_keys: set[str], satisfied_nums: set[int]) -> int:
    """How many references are not yet satisfied (a number range counts each of its integers)."""
    n = sum(1 for k in deps.task_keys if k not in satisfied_keys)
    for s, e in deps.ranges:
        n += (e - s + 1) - sum(1 for v in satisfied_nums if s <= v <= e)
    return n
