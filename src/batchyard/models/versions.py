"""Per-api-version request and response shapes, from the generated table in `versions_data`.

The service stores and works on the newest shape. A request in an older api-version is checked against
that version's properties (anything it did not have is 400 `UnsupportedProperty`, as the service answers)
and its renamed properties are moved to their current names (`maxTasksPerNode` -> `taskSlotsPerNode`);
a response is cut back to the properties the client's version has, with the old names and the defaults
that version materialises (`certificateReferences: []` on pools and nodes up to 2024-07-01.20.0).

Pure functions on JSON-ready dicts; roots are the names in `versions_data.SHAPES` (`pool.create`, `pool`).
"""

from __future__ import annotations

import functools
from typing import Any

from batchyard.models import errors
from batchyard.models.versions_data import SHAPES, VERSIONS

Body = dict[str, Any]

NEWEST = VERSIONS[-1]
# api-version strings clients send that are spelled differently from the spec folder's name
ALIASES = {"2025-06-01": "2025-06-01.21.0"}
ACCEPTED: frozenset[str] = frozenset(VERSIONS) | frozenset(ALIASES)

# Properties a later version renamed (last path segment, old -> new); the rest of the path is unchanged.
RENAMES = {"maxTasksPerNode": "taskSlotsPerNode", "blobSource": "httpUrl"}

# Properties older versions accept for features Azure has since retired: refused as the service does today.
RETIRED = {
    "cloudServiceConfiguration": (
        "Cloud Services Configuration pools were retired on 29 February 2024; "
        "use virtualMachineConfiguration."
    ),
}

# Properties a version materialises as an empty list when unset: {root: (property, ...)}.
EMPTY_LISTS = {"pool": ("certificateReferences",), "node": ("certificateReferences",)}


def canonical(version: str) -> str:
    """The spec version an accepted api-version string names; raises UnsupportedRequestVersion."""
    v = ALIASES.get(version, version)
    if v not in _INDEX:
        raise errors.unsupported_request_version(version)
    return v


_INDEX = {v: i for i, v in enumerate(VERSIONS)}


def _parse_ranges(text: str) -> frozenset[str]:
    majors = {v.rsplit(".", 2)[-2]: i for i, v in enumerate(VERSIONS)}
    out: set[str] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(VERSIONS[majors[lo] : majors[hi or lo] + 1])
    return frozenset(out)


@functools.cache
def _table(root: str) -> dict[str, frozenset[str]]:
    """{path: versions} from the indented tree text of `root`."""
    out: dict[str, frozenset[str]] = {}
    stack: list[str] = []
    for line in SHAPES[root].splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        name, spec = line.split()
        del stack[depth:]
        stack.append(name)
        out[".".join(stack)] = _parse_ranges(spec)
    return out


@functools.cache
def allowed(root: str, version: str) -> frozenset[str]:
    """The property paths of `root` in `version` (list items transparent, `x.*` = free-form map `x`)."""
    v = canonical(version)
    return frozenset(p for p, vs in _table(root).items() if v in vs)


@functools.cache
def _parents(root: str) -> frozenset[str]:
    """Paths that have known children in some version (so a dict there is walked, not taken whole)."""
    return frozenset(p.rsplit(".", 1)[0] for p in _table(root) if "." in p)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_annotation(key: str) -> bool:
    return key.startswith("odata.") or "@odata." in key


# --- requests ----------------------------------------------------------------------------------------------


def check_request(root: str, version: str, body: Body) -> None:
    """Raise UnsupportedProperty for the first property `body` has that `version` did not have."""
    ok = allowed(root, version)
    if not ok:  # the operation is newer than `version`: nothing to hold the body against
        return
    parents = _parents(root)

    def walk(value: Any, path: str, shown: str) -> None:
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, path, f"{shown}[{i}]")
            return
        if not isinstance(value, dict) or (path and (path not in parents or f"{path}.*" in ok)):
            return
        for k, v in value.items():
            if _is_annotation(k) or v is None:
                continue
            p = _join(path, k)
            if p not in ok:
                raise errors.unsupported_property(_join(shown, k))
            walk(v, p, _join(shown, k))

    walk(body, "", "")


def upgrade_request(root: str, version: str, body: Body) -> Body:
    """`body` in `version`'s shape -> the newest shape: checked (`check_request`), retired features refused,
    renamed properties moved to their current names (a new dict; `body` is left as it is)."""
    check_request(root, version, body)
    for name, reason in RETIRED.items():
        if body.get(name) is not None:
            raise errors.invalid_property_value(name, "", reason)
    if canonical(version) == NEWEST:
        return body
    ok = allowed(root, version)
    renamed: Body = _rename(body, "", ok)
    if "networkConfiguration.publicIPs" in ok:
        _public_ips_forward(renamed)
    return renamed


def _public_ips_forward(body: Body) -> None:
    """2019-08-01.10.0's `networkConfiguration.publicIPs` became `publicIPAddressConfiguration` with
    `provision: usermanaged` and the same `ipAddressIds` in 2020-03-01.11.0."""
    nc = body.get("networkConfiguration")
    if isinstance(nc, dict) and nc.get("publicIPs") is not None:
        nc = dict(nc)
        ips = nc.pop("publicIPs")
        nc["publicIPAddressConfiguration"] = {"provision": "usermanaged", "ipAddressIds": ips}
        body["networkConfiguration"] = nc


def _public_ips_back(body: Body) -> Body:
    nc = body.get("networkConfiguration")
    if not isinstance(nc, dict):
        return body
    pac = nc.get("publicIPAddressConfiguration")
    if not isinstance(pac, dict) or str(pac.get("provision", "")).lower() != "usermanaged":
        return body
    out = {k: v for k, v in nc.items() if k != "publicIPAddressConfiguration"}
    out["publicIPs"] = pac.get("ipAddressIds") or []
    return dict(body, networkConfiguration=out)


def _rename(value: Any, path: str, old: frozenset[str]) -> Any:
    """Move keys `old` names by an old name to their `RENAMES` name; paths keep the old spelling."""
    if isinstance(value, list):
        return [_rename(v, path, old) for v in value]
    if not isinstance(value, dict):
        return value
    out: Body = {}
    for k, v in value.items():
        p = _join(path, k)
        out[RENAMES[k] if k in RENAMES and p in old else k] = _rename(v, p, old)
    return out


_REVERSE = {new: old for old, new in RENAMES.items()}
# where to look up whether a version still had the old name: new name -> (root, path of the new name)
_RENAMED_WHERE = {
    "taskSlotsPerNode": ("pool.create", "taskSlotsPerNode"),
    "httpUrl": ("task.create", "resourceFiles.httpUrl"),
}


def old_property_name(version: str, name: str) -> str:
    """An error's property path in the client's words: `taskSlotsPerNode` is `maxTasksPerNode` before
    2020-09-01.12.0 (the service renamed the client's property on the way in)."""
    head, _, last = name.rpartition(".")
    where = _RENAMED_WHERE.get(last)
    if where is None or version not in ACCEPTED or where[1] in allowed(where[0], version):
        return name
    return _join(head, _REVERSE[last])


def error_in_version(version: str, err: errors.BatchError) -> errors.BatchError:
    """`err` with its PropertyName in `version`'s spelling (the same object when nothing changes)."""
    values = [(k, old_property_name(version, v) if k == "PropertyName" else v) for k, v in err.values]
    if values == err.values:
        return err
    return errors.BatchError(err.status, err.code, err.message, values)


# --- responses ---------------------------------------------------------------------------------------------


@functools.cache
def _plan(root: str, version: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(paths to drop, prefixes worth walking into, paths renamed back) for rendering `root` in `version`."""
    ok = allowed(root, version)
    newest = allowed(root, NEWEST)
    drop = frozenset(p for p in _table(root) if p not in ok)
    back = frozenset(
        p for p in newest if p.rsplit(".", 1)[-1] in _REVERSE and p not in ok and _old_name(p) in ok
    )
    walk: set[str] = set()
    for p in drop | back:
        parts = p.split(".")
        walk.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return drop, frozenset(walk), back


def _old_name(path: str) -> str:
    head, _, last = path.rpartition(".")
    return _join(head, _REVERSE[last])


def render(root: str, version: str, body: Body) -> Body:
    """A stored (newest-shape) body as `version` returns it. Properties no version of the spec knows
    (batchyard extensions) are left alone."""
    ok = allowed(root, version)
    if not ok:  # the operation is newer than `version` (supportedimages at 2018-08-01.7.0): current shape
        return body
    drop, walk, back = _plan(root, version)
    if root == "taskcounts" and "taskCounts" not in ok and isinstance(body.get("taskCounts"), dict):
        flat = {k: v for k, v in body.items() if _is_annotation(k)}
        flat.update(body["taskCounts"])
        body = flat
    if root == "pool" and "networkConfiguration.publicIPs" in ok:
        body = _public_ips_back(body)
    out = _cut(body, "", drop, walk, back) if drop or back else dict(body)
    for name in EMPTY_LISTS.get(root, ()):
        if name in ok and out.get(name) is None:
            out[name] = []
    return out


@functools.cache
def render_keys(root: str, version: str) -> frozenset[str] | None:
    """The property names whose presence anywhere in a body makes `render(root, version, ·)` change it;
    a body with none of them comes back equal. None when render may change any body (defaults it adds,
    reshaped roots). Lets a list serve stored JSON as it is."""
    ok = allowed(root, version)
    if not ok:
        return frozenset()
    if root in ("taskcounts", "pool") or EMPTY_LISTS.get(root):
        return None
    drop, _, back = _plan(root, version)
    return frozenset(p.rsplit(".", 1)[-1] for p in drop | back)


def _cut(value: Any, path: str, drop: frozenset[str], walk: frozenset[str], back: frozenset[str]) -> Any:
    if isinstance(value, list):
        return [_cut(v, path, drop, walk, back) for v in value]
    if not isinstance(value, dict):
        return value
    out: Body = {}
    for k, v in value.items():
        p = _join(path, k)
        if p in back:
            out[_REVERSE[k]] = v
        elif p in drop:
            continue
        elif p in walk:
            out[k] = _cut(v, p, drop, walk, back)
        else:
            out[k] = v
    return out
