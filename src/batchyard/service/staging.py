"""Task-add checks of `resourceFiles` and `outputFiles`, with the storage package's rules.

The same parser the agent uses runs here, so a task the API accepted never fails on the node for a malformed
spec: a bad value is a 400 naming the property (``resourceFiles[0].filePath``), a valid property batchyard cannot
honour (``identityReference``: no managed identities) a 501 (decision 0003).
"""

from __future__ import annotations

import re
from typing import Any

from batchyard.models import errors
from batchyard.storage import SpecError, parse_output_files, parse_resource_files

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _value_at(body: Any, prop: str) -> object:
    """The value a property path such as ``outputFiles[0].destination.container.path`` names (or None)."""
    cur = body
    for name, index in _STEP.findall(prop):
        if name:
            cur = cur.get(name) if isinstance(cur, dict) else None
        else:
            i = int(index)
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
    return cur


def check_staging(body: dict[str, Any]) -> None:
    """400/501 for a task's invalid or unsupported resource/output files. The only change to a valid body:
    `uploadCondition` is stored in the wire enum's spelling (``taskSuccess`` -> ``tasksuccess``), as the
    service returns its enums."""
    try:
        parse_resource_files(body.get("resourceFiles"))
        mis = body.get("multiInstanceSettings")
        if isinstance(mis, dict):  # downloaded by every instance (service.subtasks)
            parse_resource_files(mis.get("commonResourceFiles"), "multiInstanceSettings.commonResourceFiles")
        outputs = parse_output_files(body.get("outputFiles"))
    except SpecError as e:
        if e.unsupported:
            raise errors.not_implemented(e.prop) from None
        value = _value_at(body, e.prop)
        shown = value if isinstance(value, (str, int, float)) else ""
        raise errors.invalid_property_value(e.prop, shown, e.reason) from None
    for raw, parsed in zip(body.get("outputFiles") or [], outputs, strict=True):
        raw.setdefault("uploadOptions", {})["uploadCondition"] = parsed.upload_condition.value
