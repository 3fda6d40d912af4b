"""A pool's `mountConfiguration`: the rules a create or update must pass, and the view reads return (decision
0142). Pure. Nodes mount the entries themselves (agent.mounts); this module never touches a file system."""

from __future__ import annotations

import copy
from typing import Any

from batchyard.models import errors

Body = dict[str, Any]

#: The service's limit on mounts per node.
MAX_MOUNTS = 10
KINDS = (
    "azureBlobFileSystemConfiguration",
    "nfsMountConfiguration",
    "cifsMountConfiguration",
    "azureFileShareConfiguration",
)
#: Credentials the service accepts but never returns (a recorded pool GET omits the blobfuse accountKey).
SECRETS = ("accountKey", "sasKey", "password")


def _check_path(value: object, at: str) -> str:
    """`relativeMountPath`: a relative path inside the node's mounts directory."""
    if not isinstance(value, str) or not value.strip():
        raise errors.missing_required_property(f"{at}.relativeMountPath")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or any(p in ("..", ".") for p in parts) or "\x00" in value:
        raise errors.invalid_property_value(
            f"{at}.relativeMountPath", value, "The path must stay inside the node's mounts directory"
        )
    return relative_path(value)


def relative_path(value: str) -> str:
    """A checked relativeMountPath without empty segments (the directory under the mounts directory)."""
    return "/".join(p for p in value.replace("\\", "/").split("/") if p)


def check(mounts: object, prop: str = "mountConfiguration") -> list[Body]:
    """Validate a mount configuration; returns it as sent (a copy), to be stored and read back as such."""
    if mounts is None:
        return []
    if not isinstance(mounts, list):
        raise errors.invalid_property_value(prop, mounts)
    if len(mounts) > MAX_MOUNTS:
        raise errors.invalid_property_value(prop, len(mounts), f"A pool has at most {MAX_MOUNTS} mounts")
    out: list[Body] = []
    seen: set[str] = set()
    for i, entry in enumerate(mounts):
        at = f"{prop}[{i}]"
        if not isinstance(entry, dict):
            raise errors.invalid_property_value(at, entry)
        kinds = [k for k in KINDS if entry.get(k) is not None]
        if len(kinds) != 1:
            raise errors.invalid_property_value(
                at, ",".join(kinds) or "none", "Exactly one file system type must be specified"
            )
        kind = kinds[0]
        conf = copy.deepcopy(entry[kind])
        where = f"{at}.{kind}"
        rel = _check_path(conf.get("relativeMountPath"), where)
        if rel.lower() in seen or any(
            rel.lower().startswith(s + "/") or s.startswith(rel.lower() + "/") for s in seen
        ):
            raise errors.invalid_property_value(
                f"{where}.relativeMountPath", rel, "Two mounts cannot share or nest their paths"
            )
        seen.add(rel.lower())
        if kind == "azureBlobFileSystemConfiguration":
            creds = [k for k in ("accountKey", "sasKey", "identityReference") if conf.get(k)]
            if len(creds) > 1:
                raise errors.invalid_property_value(
                    where, ",".join(creds), "accountKey, sasKey and identityReference are mutually exclusive"
                )
            if conf.get("identityReference"):
                raise errors.not_implemented(
                    f"{where}.identityReference (nodes have no managed identity here)"
                )
        if kind == "azureFileShareConfiguration":
            url = str(conf.get("azureFileUrl", ""))
            if not url.startswith(("https://", "http://")) or len(url.split("/")) < 4:
                raise errors.invalid_property_value(f"{where}.azureFileUrl", url)
        out.append(copy.deepcopy(entry))
    return out


def view(mounts: list[Body]) -> list[Body]:
    """The configuration as reads return it: as sent, without credentials."""
    return [{k: {n: v for n, v in conf.items() if n not in SECRETS} for k, conf in m.items()} for m in mounts]
