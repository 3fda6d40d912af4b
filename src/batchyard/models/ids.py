"""Identifier rules shared by pools, jobs, schedules and tasks."""

from __future__ import annotations

import hashlib
import re

from batchyard.models import errors

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(value: object, prop: str = "id") -> str:
    """Ids are 1-64 letters, digits, '-' or '_'; they compare case-insensitively."""
    if not isinstance(value, str) or not value:
        raise errors.missing_required_property(prop)
    if not _ID_RE.match(value):
        reason = "The id exceeds 64 characters" if len(value) > 64 else "The id contains invalid characters"
        raise errors.invalid_property_value(prop, value, reason)
    return value


def key_of(value: str) -> str:
    """Storage key: ids are case-preserving but unique case-insensitively."""
    return value.lower()


def node_id(pool_id: str, index: int, dedicated: bool = True, salt: str = "") -> str:
    """Node ids shaped like the service's: tvmps_<64 hex>_d (or _p for low-priority)."""
    digest = hashlib.sha256(f"{pool_id}/{index}/{salt}".encode()).hexdigest()
    return f"tvmps_{digest}_{'d' if dedicated else 'p'}"


def node_is_dedicated(node_id: str) -> bool:
    """A node's kind, read back from its id (`node_id` ends it in `_d` or `_p`)."""
    return not node_id.endswith("_p")
