"""Account core quotas: how many nodes a resize may add, the way Azure Batch bounds pools.

Azure counts the vCPUs of every node of the account against a dedicated and a low-priority core quota;
a resize that would pass it stops at the quota and reports `AccountCoreQuotaReached` (or
`AccountLowPriorityCoreQuotaReached`) in the pool's `resizeErrors`. Here a node is a local process whatever its
`vmSize`, but the count follows the VM size so that pools behave as on Azure: the cores of a size are the first
number in its name (`standard_d2s_v3` → 2, `standard_f72s_v2` → 72, `standard_e64-32s_v3` → 64), at least 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Defaults (Azure's per-account defaults are 90-900 dedicated and 10-100 low-priority cores).
DEFAULT_DEDICATED_CORES = 500
DEFAULT_LOW_PRIORITY_CORES = 100

_SIZE = re.compile(r"^[a-z]+_[a-z]+(\d+)", re.IGNORECASE)


def vm_cores(vm_size: str) -> int:
    m = _SIZE.match(vm_size.strip())
    return max(1, int(m.group(1))) if m else 1


@dataclass(frozen=True)
class Quotas:
    dedicated_cores: int = DEFAULT_DEDICATED_CORES
    low_priority_cores: int = DEFAULT_LOW_PRIORITY_CORES

    def limit(self, dedicated: bool) -> int:
        return self.dedicated_cores if dedicated else self.low_priority_cores


def nodes_allowed(wanted: int, cores_per_node: int, cores_in_use: int, quota: int) -> int:
    """How many of `wanted` new nodes fit in the quota."""
    free = max(0, quota - cores_in_use)
    return max(0, min(wanted, free // max(1, cores_per_node)))


def quota_error(dedicated: bool, quota: int, in_use: int, cores_per_node: int) -> dict[str, object]:
    """The pool's resizeErrors entry when a resize stopped at the quota."""
    kind = "dedicated" if dedicated else "low priority"
    return {
        "code": "AccountCoreQuotaReached" if dedicated else "AccountLowPriorityCoreQuotaReached",
        "message": f"Desired number of {kind} nodes could not be allocated as the account's {kind} core quota "
        "was reached",
        "values": [
            {"name": "CoreQuota", "value": str(quota)},
            {"name": "CoresInUse", "value": str(in_use)},
            {"name": "CoresPerNode", "value": str(cores_per_node)},
        ],
    }
