"""Which OS user a task runs as on a local node, and which uids belong to a node (decision 0010).

When the server runs as root, every local node gets its own block of ``BLOCK`` numeric uids that have no
passwd entries; the node's primary gid is the first uid of the block (its *base*) and the node's root
directory is group-owned by it, which is how the server finds the block again after a restart. Inside the
block:

* ``base``: the pool's auto-user (``autoUser`` scope ``pool``, ``nonadmin``; ``_azbatch`` on Azure);
* ``base + 1 + i``: the pool's ``userAccounts[i]`` (nonadmin, without an explicit ``linuxUserConfiguration``);
* ``base + TASK_SCOPE_FIRST + n % …``: a fresh auto-user per task for ``autoUser`` scope ``task``.

``elevationLevel: admin`` (auto-user or user account) runs as root, as on Azure. A user account with
``linuxUserConfiguration`` uid/gid runs as exactly that uid/gid, with the node's gid as a supplementary group.
When the server is not root, every task runs as the server's own user (``base`` is ``None``).

Pure: no system calls here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: First uid used for task users; far above ordinary accounts and the usual subordinate-uid ranges.
UID_BASE = 1_800_000_000
#: uids per node.
BLOCK = 4096
#: Named user accounts a pool may have (uids ``base+1 … base+MAX_USER_ACCOUNTS``).
MAX_USER_ACCOUNTS = 63
#: First uid offset used for task-scoped auto-users.
TASK_SCOPE_FIRST = 64
#: Node slots available: the highest uid stays below 2**31 (some tools treat uids as signed).
MAX_SLOTS = (2**31 - 1 - UID_BASE) // BLOCK

#: Names of files the agent or server keeps in a node root: never listed, served or deleted by the API.
INTERNAL_PREFIXES = (".agent", ".batchyard")

AUTO_USER_NAME = "_azbatch"


def base_of_slot(slot: int) -> int:
    return UID_BASE + slot * BLOCK


def slot_of_gid(gid: int) -> int | None:
    """The node slot whose base is ``gid``, or ``None`` when ``gid`` is not a node base."""
    off = gid - UID_BASE
    if off < 0 or off % BLOCK or off // BLOCK >= MAX_SLOTS:
        return None
    return off // BLOCK


def node_uids(base: int) -> range:
    return range(base, base + BLOCK)


def is_internal(first_part: str) -> bool:
    """True for a node-root entry that belongs to batchyard, not to tasks."""
    return first_part.startswith(INTERNAL_PREFIXES)


@dataclass(frozen=True)
class TaskUser:
    """The OS identity of one task process. ``uid`` ``None``: run as the agent's own user."""

    name: str
    label: str  # AZ_BATCH_TASK_USER_IDENTITY
    uid: int | None
    gid: int | None
    extra_groups: tuple[int, ...] = ()


class UnknownUser(LookupError):
    """The task names a user account the pool does not have."""


def _label(scope: str, elevation: str) -> str:
    return ("Task" if scope == "task" else "Pool") + ("Admin" if elevation == "admin" else "NonAdmin")


def resolve(
    identity: Mapping[str, Any] | None,
    accounts: Sequence[Mapping[str, Any]],
    base: int | None,
    task_serial: int,
) -> TaskUser:
    """The user a task with ``identity`` (its stored ``userIdentity``) runs as on a node with ``base``.

    ``accounts`` are the pool's ``userAccounts``; ``task_serial`` numbers task-scoped auto-users on the node.
    """
    identity = identity or {}
    username = identity.get("username")
    if username:
        for i, acct in enumerate(accounts):
            if acct.get("name") == username:
                return _named(i, acct, base)
        raise UnknownUser(str(username))
    auto = identity.get("autoUser") or {}
    scope = str(auto.get("scope") or "pool").lower()
    elevation = str(auto.get("elevationLevel") or "nonadmin").lower()
    label = _label(scope, elevation)
    if elevation == "admin":
        return TaskUser("root", label, None if base is None else 0, None if base is None else 0)
    if base is None:
        return TaskUser(AUTO_USER_NAME, label, None, None)
    if scope == "task":
        uid = base + TASK_SCOPE_FIRST + task_serial % (BLOCK - TASK_SCOPE_FIRST)
        return TaskUser(f"{AUTO_USER_NAME}{uid - base}", label, uid, base)
    return TaskUser(AUTO_USER_NAME, label, base, base)


def _named(index: int, acct: Mapping[str, Any], base: int | None) -> TaskUser:
    name = str(acct["name"])
    admin = str(acct.get("elevationLevel") or "nonadmin").lower() == "admin"
    label = name
    if base is None:
        return TaskUser(name, label, None, None)
    if admin:
        return TaskUser(name, label, 0, 0)
    linux = acct.get("linuxUserConfiguration") or {}
    if linux.get("uid") is not None:
        return TaskUser(name, label, int(linux["uid"]), int(linux["gid"]), (base,))
    return TaskUser(name, label, base + 1 + index, base)


def explicit_uids(accounts: Sequence[Mapping[str, Any]]) -> set[int]:
    """uids the pool's accounts pin with ``linuxUserConfiguration`` (they own files on its nodes too)."""
    out: set[int] = set()
    for acct in accounts:
        linux = acct.get("linuxUserConfiguration") or {}
        if linux.get("uid") is not None:
            out.add(int(linux["uid"]))
    return out
