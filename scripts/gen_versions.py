#!/usr/bin/env python3
"""Generate ``src/batchyard/models/versions_data.py``: which wire properties each Batch api-version has.

For every request body and response entity batchyard handles (a "root", e.g. ``pool.create`` or ``node``) the
table lists each property path (``virtualMachineConfiguration.imageReference.publisher``; list items are
transparent, ``name.*`` marks a free-form map) with the api-versions whose spec has it.

Inputs (downloaded into ``.cache/gen_versions/`` with ``pip download --no-deps``, never checked in):

* 2018-08-01.7.0 ... 2024-02-01.19.0: the official msrest ``azure-batch`` wheels 5.1.1 ... 14.2.0, each generated
  from its version's ``BatchService.json``; the models carry ``_attribute_map`` (wire name, type) and
  ``_validation`` (read-only). Read with ``ast``, never imported.
* 2024-07-01.20.0: ``azure-batch`` 15.0.0b2 and 2025-06-01.21.0: ``azure-batch`` 15.1.0, TypeSpec-generated;
  the models carry ``rest_field(name=..., visibility=...)``.
* ``SPEC_ONLY`` below: request properties the 2024-07-01.20.0 / 2025-06-01.21.0 specs keep but the Python
  client hides (the Python ``client.tsp`` customisations), so that other clients sending them are not refused.

Usage::

    python scripts/gen_versions.py            # rewrite src/batchyard/models/versions_data.py
    python scripts/gen_versions.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "gen_versions"
OUTPUT = REPO / "src" / "batchyard" / "models" / "versions_data.py"

# api-version -> the official azure-batch release generated from its spec
SOURCES: list[tuple[str, str]] = [
    ("2018-08-01.7.0", "5.1.1"),
    ("2018-12-01.8.0", "6.0.0"),
    ("2019-06-01.9.0", "7.0.0"),
    ("2019-08-01.10.0", "8.0.0"),
    ("2020-03-01.11.0", "9.0.0"),
    ("2020-09-01.12.0", "10.0.0"),
    ("2021-06-01.14.0", "11.0.0"),
    ("2022-01-01.15.0", "12.0.0"),
    ("2022-10-01.16.0", "13.0.0"),
    ("2023-05-01.17.0", "14.0.0"),
    ("2023-11-01.18.0", "14.1.0"),
    ("2024-02-01.19.0", "14.2.0"),
    ("2024-07-01.20.0", "15.0.0b2"),
    ("2025-06-01.21.0", "15.1.0"),
]

# root -> (is a request body, model names to try: msrest/Swagger names first, then TypeSpec names)
ROOTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "pool.create": (True, ("PoolAddParameter", "BatchPoolCreateContent", "BatchPoolCreateOptions")),
    "pool.patch": (True, ("PoolPatchParameter", "BatchPoolUpdateContent", "BatchPoolUpdateOptions")),
    "pool.replace": (
        True,
        ("PoolUpdatePropertiesParameter", "BatchPoolReplaceContent", "BatchPoolReplaceOptions"),
    ),
    "pool.resize": (True, ("PoolResizeParameter", "BatchPoolResizeContent", "BatchPoolResizeOptions")),
    "job.create": (True, ("JobAddParameter", "BatchJobCreateContent", "BatchJobCreateOptions")),
    "job.patch": (True, ("JobPatchParameter", "BatchJobUpdateContent", "BatchJobUpdateOptions")),
    "job.update": (True, ("JobUpdateParameter", "BatchJob")),
    "job.terminate": (
        True,
        ("JobTerminateParameter", "BatchJobTerminateContent", "BatchJobTerminateOptions"),
    ),
    "job.disable": (True, ("JobDisableParameter", "BatchJobDisableContent", "BatchJobDisableOptions")),
    "task.create": (True, ("TaskAddParameter", "BatchTaskCreateContent", "BatchTaskCreateOptions")),
    "task.collection": (True, ("TaskAddCollectionParameter", "BatchTaskGroup")),
    "task.update": (True, ("TaskUpdateParameter", "BatchTask")),
    # operations batchyard does not implement yet: their shapes are ready for when it does
    "pool.enableautoscale": (
        True,
        (
            "PoolEnableAutoScaleParameter",
            "BatchPoolEnableAutoScaleContent",
            "BatchPoolEnableAutoScaleOptions",
        ),
    ),
    "pool.evaluateautoscale": (
        True,
        (
            "PoolEvaluateAutoScaleParameter",
            "BatchPoolEvaluateAutoScaleContent",
            "BatchPoolEvaluateAutoScaleOptions",
        ),
    ),
    "pool.removenodes": (True, ("NodeRemoveParameter", "BatchNodeRemoveContent", "BatchNodeRemoveOptions")),
    "node.reboot": (True, ("NodeRebootParameter", "BatchNodeRebootContent", "BatchNodeRebootOptions")),
    "node.reimage": (True, ("NodeReimageParameter", "BatchNodeReimageContent", "BatchNodeReimageOptions")),
    "node.disablescheduling": (
        True,
        (
            "NodeDisableSchedulingParameter",
            "BatchNodeDisableSchedulingContent",
            "BatchNodeDisableSchedulingOptions",
        ),
    ),
    "node.deallocate": (
        True,
        ("NodeDeallocateParameter", "BatchNodeDeallocateContent", "BatchNodeDeallocateOptions"),
    ),
    "node.user.create": (
        True,
        ("ComputeNodeUser", "BatchNodeUserCreateContent", "BatchNodeUserCreateOptions"),
    ),
    "node.user.replace": (
        True,
        ("NodeUpdateUserParameter", "BatchNodeUserUpdateContent", "BatchNodeUserReplaceOptions"),
    ),
    "node.uploadlogs": (
        True,
        (
            "UploadBatchServiceLogsConfiguration",
            "UploadBatchServiceLogsContent",
            "UploadBatchServiceLogsOptions",
        ),
    ),
    "jobschedule.create": (
        True,
        ("JobScheduleAddParameter", "BatchJobScheduleCreateContent", "BatchJobScheduleCreateOptions"),
    ),
    "jobschedule.patch": (
        True,
        ("JobSchedulePatchParameter", "BatchJobScheduleUpdateContent", "BatchJobScheduleUpdateOptions"),
    ),
    "jobschedule.update": (True, ("JobScheduleUpdateParameter", "BatchJobSchedule")),
    "pool": (False, ("CloudPool", "BatchPool")),
    "job": (False, ("CloudJob", "BatchJob")),
    "task": (False, ("CloudTask", "BatchTask")),
    "node": (False, ("ComputeNode", "BatchNode")),
    "image": (False, ("ImageInformation", "BatchSupportedImage")),
    "nodecounts": (False, ("PoolNodeCounts", "BatchPoolNodeCounts")),
    "taskcounts": (False, ("TaskCountsResult", "BatchTaskCountsResult", "TaskCounts")),
    "file": (False, ("NodeFile", "BatchNodeFile")),
    "taskaddresult": (False, ("TaskAddResult", "BatchTaskAddResult", "BatchTaskCreateResult")),
    "jobschedule": (False, ("CloudJobSchedule", "BatchJobSchedule")),
    "application": (False, ("ApplicationSummary", "BatchApplication")),
    "poolusagemetrics": (False, ("PoolUsageMetrics", "BatchPoolUsageMetrics")),
    "autoscalerun": (False, ("AutoScaleRun",)),
    "remoteloginsettings": (
        False,
        ("ComputeNodeGetRemoteLoginSettingsResult", "BatchNodeRemoteLoginSettings"),
    ),
    "uploadlogsresult": (False, ("UploadBatchServiceLogsResult",)),
    "extension": (False, ("NodeVMExtension", "BatchNodeVMExtension")),
    "preparationandreleasestatus": (
        False,
        ("JobPreparationAndReleaseTaskExecutionInformation", "BatchJobPreparationAndReleaseTaskStatus"),
    ),
    "subtask": (False, ("SubtaskInformation", "BatchSubtask")),
}

# Request properties of the TypeSpec-era specs that the Python client customises away (evidence:
# shared/reference/azure-batch-api/rest_api.md §1.1: "the 15.1.0 Python client dropped certificates,
# targetNodeCommunicationMode, resourceTags, authenticationTokenSettings"; 15.0.0b1 still had them).
_POOL_EXTRA = ("certificateReferences", "targetNodeCommunicationMode", "resourceTags")
SPEC_ONLY: dict[str, dict[str, tuple[str, ...]]] = {
    "2025-06-01.21.0": {
        "pool.create": _POOL_EXTRA,
        "pool.patch": _POOL_EXTRA,
        "pool.replace": ("certificateReferences", "targetNodeCommunicationMode"),
        "job.create": ("jobManagerTask.authenticationTokenSettings",),
        "task.create": ("authenticationTokenSettings",),
        "pool": ("targetNodeCommunicationMode", "currentNodeCommunicationMode", "resourceTags"),
        "task": ("authenticationTokenSettings",),
        "task.collection": ("value.authenticationTokenSettings",),
    },
}
_SPEC_ONLY_SUBPATHS: dict[str, tuple[str, ...]] = {
    "certificateReferences": (
        "thumbprint",
        "thumbprintAlgorithm",
        "storeLocation",
        "storeName",
        "visibility",
    ),
    "authenticationTokenSettings": ("access",),
    "value.authenticationTokenSettings": ("access",),
    "jobManagerTask.authenticationTokenSettings": ("access",),
    "resourceTags": ("*",),
}


@dataclass(frozen=True)
class Prop:
    wire: str
    refs: tuple[str, ...]  # model names the type refers to
    opaque: bool  # a free-form map (dict[str, str])
    read_only: bool


Models = dict[str, list[Prop]]


def wheel(sdk: str) -> Path:
    """The cached wheel of azure-batch==sdk, downloaded on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"azure_batch-{sdk}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"]
            + ["--only-binary=:all:", "-d", str(CACHE), f"azure-batch=={sdk}"],
            check=True,
        )
        found = sorted(CACHE.glob(f"azure_batch-{sdk}-*.whl"))
    if not found:
        raise SystemExit(f"gen_versions: no wheel for azure-batch=={sdk}")
    return found[0]


def _model_sources(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.startswith("azure/batch/models/") and n.endswith(".py")]
        return [z.read(n).decode("utf-8") for n in sorted(names)]


def _msrest_type_refs(t: str) -> tuple[tuple[str, ...], bool]:
    inner = t.strip("[]")
    if inner.startswith("{"):
        return (), True
    return (inner,), False


def msrest_models(path: Path) -> Models:
    """Models of an msrest wheel: `_attribute_map` {attr: {key, type}} and `_validation` {attr: {readonly}}."""
    out: Models = {}
    for src in _model_sources(path):
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.ClassDef):
                continue
            amap: dict[str, dict[str, str]] | None = None
            valid: dict[str, dict[str, object]] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    if stmt.targets[0].id == "_attribute_map":
                        amap = ast.literal_eval(stmt.value)
                    elif stmt.targets[0].id == "_validation":
                        valid = ast.literal_eval(stmt.value)
            if amap is None:
                continue
            props = []
            for attr, spec in amap.items():
                refs, opaque = _msrest_type_refs(spec["type"])
                ro = bool(valid.get(attr, {}).get("readonly"))
                props.append(Prop(spec["key"], refs, opaque, ro))
            out[node.name] = props
    return out


def typespec_models(path: Path) -> Models:
    """Models of a TypeSpec-generated wheel: `attr: Annotation = rest_field(name="wire", visibility=[...])`."""
    srcs = [s for s in _model_sources(path) if "rest_field(" in s]
    out: Models = {}
    for src in srcs:
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.ClassDef):
                continue
            props = []
            for stmt in node.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.value, ast.Call)):
                    continue
                call = stmt.value
                if not (
                    isinstance(call.func, ast.Name) and call.func.id in ("rest_field", "rest_discriminator")
                ):
                    continue
                kw = {k.arg: k.value for k in call.keywords}
                if not isinstance(stmt.target, ast.Name):
                    continue
                # without name=, the wire name is the attribute's own (one-word) name
                wire = ast.literal_eval(kw["name"]) if "name" in kw else stmt.target.id
                vis = ast.literal_eval(kw["visibility"]) if "visibility" in kw else []
                ann = ast.unparse(stmt.annotation)
                refs = tuple(_typespec_refs(ann))
                opaque = "Dict[" in ann or "dict[" in ann
                props.append(Prop(wire, refs, opaque, vis == ["read"]))
            if props:
                out[node.name] = props
    return out


def _typespec_refs(ann: str) -> list[str]:
    import re

    return re.findall(r"_models\.(\w+)", ann)


def paths_of(models: Models, root: str, request: bool) -> set[str]:
    """Every property path under model `root` (read-only properties left out of request bodies)."""
    out: set[str] = set()

    def walk(name: str, prefix: str, stack: tuple[str, ...]) -> None:
        for p in models.get(name, []):
            if request and p.read_only:
                continue
            path = f"{prefix}{p.wire}"
            out.add(path)
            if p.opaque:
                out.add(path + ".*")
            for ref in p.refs:
                if ref in models and ref not in stack:
                    walk(ref, path + ".", (*stack, ref))

    walk(root, "", (root,))
    return out


def version_paths(version: str, sdk: str) -> dict[str, set[str]]:
    path = wheel(sdk)
    models = typespec_models(path) if sdk.startswith("15.") else msrest_models(path)
    result: dict[str, set[str]] = {}
    for root, (request, names) in ROOTS.items():
        name = next((n for n in names if n in models), None)
        if name is None:  # the operation is newer than this api-version (e.g. supportedimages)
            result[root] = set()
            continue
        paths = paths_of(models, name, request)
        for extra in SPEC_ONLY.get(version, {}).get(root, ()):
            paths.add(extra)
            paths.update(f"{extra}.{sub}" for sub in _SPEC_ONLY_SUBPATHS.get(extra, ()))
        result[root] = paths
    return result


def _ranges(idx: list[int], majors: list[str]) -> str:
    parts: list[str] = []
    start = prev = idx[0]
    for i in idx[1:] + [-2]:
        if i != prev + 1:
            parts.append(majors[start] if start == prev else f"{majors[start]}-{majors[prev]}")
            start = i
        prev = i
    return ",".join(parts)


def render() -> str:
    versions = [v for v, _ in SOURCES]
    majors = [v.rsplit(".", 2)[-2] for v in versions]
    per_version = [version_paths(v, sdk) for v, sdk in SOURCES]
    for root in ROOTS:  # a free-form map in one release's typing is one in every release that has it
        maps = {p[:-2] for pv in per_version for p in pv[root] if p.endswith(".*")}
        for pv in per_version:
            pv[root].update(f"{p}.*" for p in maps if p in pv[root])
    lines = [
        '"""Generated by scripts/gen_versions.py from the official azure-batch releases; do not edit.',
        "",
        "SHAPES[root] is the property tree of a request body or response entity, one property a line,",
        "indented one space per level under its parent, with the api-versions whose spec has it as ranges of",
        "the versions' major numbers (`7-19` = 2018-08-01.7.0 through 2024-02-01.19.0; see VERSIONS). List",
        "items are transparent; a `*` child marks a free-form map.",
        '"""',
        "",
        "VERSIONS: tuple[str, ...] = (",
        *[f'    "{v}",' for v in versions],
        ")",
        "",
        "SHAPES: dict[str, str] = {",
    ]
    for root in ROOTS:
        every = sorted(set().union(*(pv[root] for pv in per_version)), key=lambda p: p.split("."))
        orphans = [p for p in every if "." in p and p.rsplit(".", 1)[0] not in every]
        if orphans:
            raise SystemExit(f"gen_versions: {root}: paths without their parent: {orphans}")
        lines.append(f'    "{root}": """')
        for path in every:
            idx = [i for i, pv in enumerate(per_version) if path in pv[root]]
            depth = path.count(".")
            lines.append(f"{' ' * depth}{path.rsplit('.', 1)[-1]} {_ranges(idx, majors)}")
        lines.append('""",')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in table is stale")
    ap.add_argument("--output", type=Path, default=OUTPUT)
    args = ap.parse_args()
    text = render()
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is stale: run python scripts/gen_versions.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
