"""Resource-file and output-file specifications, parsed from their wire JSON and checked.

`SpecError` names the offending property so the API can answer a 400 at task-add time and the agent can
refuse the same input if it ever arrives (a task stored before the check existed). Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from batchyard.storage.glob import check_pattern
from batchyard.storage.paths import PathRefused, blob_path_segments, check_relative_path

#: The Linux node agent's mode for a resource file without ``fileMode``.
DEFAULT_FILE_MODE = 0o770


class SpecError(ValueError):
    """An invalid resource/output file: ``prop`` is the property path (``resourceFiles[0].filePath``)."""

    def __init__(self, prop: str, reason: str, *, unsupported: bool = False) -> None:
        super().__init__(f"{prop}: {reason}")
        self.prop = prop
        self.reason = reason
        #: True for a valid property batchyard cannot honour (``identityReference``): the API answers 501.
        self.unsupported = unsupported


class SourceKind(StrEnum):
    HTTP_URL = "httpUrl"
    STORAGE_CONTAINER_URL = "storageContainerUrl"
    AUTO_STORAGE_CONTAINER_NAME = "autoStorageContainerName"


@dataclass(frozen=True)
class ResourceFile:
    """One ``ResourceFile``: exactly one source, where it lands and its mode."""

    kind: SourceKind
    source: str
    file_path: str | None
    blob_prefix: str | None
    file_mode: int

    @property
    def is_container(self) -> bool:
        return self.kind is not SourceKind.HTTP_URL


class UploadCondition(StrEnum):
    TASK_SUCCESS = "tasksuccess"
    TASK_FAILURE = "taskfailure"
    TASK_COMPLETION = "taskcompletion"


@dataclass(frozen=True)
class OutputFile:
    """One ``OutputFile``: a pattern, a container destination and when to upload."""

    file_pattern: str
    container_url: str
    path: str | None
    upload_headers: tuple[tuple[str, str], ...]
    upload_condition: UploadCondition


IDENTITY_REASON = "managed identities are not available on batchyard; use a SAS URL instead"


def _str(m: Mapping[str, object], key: str, prop: str) -> str | None:
    v = m.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise SpecError(f"{prop}.{key}", "must be a string")
    return v


def parse_file_mode(value: str, prop: str) -> int:
    """``fileMode`` is an octal string such as ``0644`` or ``770``."""
    digits = value[1:] if len(value) == 4 and value.startswith("0") else value
    if not 1 <= len(digits) <= 3 or any(c not in "01234567" for c in digits):
        raise SpecError(prop, f"'{value}' is not an octal file mode such as 0644")
    return int(digits, 8)


def _check_url(url: str, prop: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() in ("http", "https"):
        if not parts.netloc:
            raise SpecError(prop, "the URL has no host")
        return
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise SpecError(prop, "a file URL must be file:///absolute/path on the server's host")
        return
    raise SpecError(prop, "the URL must be http, https or (batchyard only) file")


def parse_resource_file(m: Mapping[str, object], prop: str = "resourceFile") -> ResourceFile:
    if not isinstance(m, Mapping):
        raise SpecError(prop, "must be an object")
    if m.get("identityReference") is not None:
        raise SpecError(f"{prop}.identityReference", IDENTITY_REASON, unsupported=True)
    sources = [(k, v) for k in SourceKind if (v := _str(m, k.value, prop)) is not None]
    if len(sources) != 1:
        raise SpecError(
            prop,
            "exactly one of autoStorageContainerName, storageContainerUrl and httpUrl must be specified",
        )
    kind, source = sources[0]
    if kind is not SourceKind.AUTO_STORAGE_CONTAINER_NAME:
        _check_url(source, f"{prop}.{kind.value}")
    elif not source:
        raise SpecError(f"{prop}.{kind.value}", "must not be empty")
    blob_prefix = _str(m, "blobPrefix", prop)
    if blob_prefix is not None and kind is SourceKind.HTTP_URL:
        raise SpecError(f"{prop}.blobPrefix", "blobPrefix is only valid with a container source")
    file_path = _str(m, "filePath", prop)
    if file_path is not None and file_path != "":
        try:
            check_relative_path(file_path)
        except PathRefused as e:
            raise SpecError(f"{prop}.filePath", str(e)) from None
    elif kind is SourceKind.HTTP_URL:
        raise SpecError(f"{prop}.filePath", "filePath is required with httpUrl")
    else:
        file_path = None
    mode_s = _str(m, "fileMode", prop)
    mode = DEFAULT_FILE_MODE if mode_s is None else parse_file_mode(mode_s, f"{prop}.fileMode")
    return ResourceFile(kind, source, file_path, blob_prefix or None, mode)


def parse_output_file(m: Mapping[str, object], prop: str = "outputFile") -> OutputFile:
    if not isinstance(m, Mapping):
        raise SpecError(prop, "must be an object")
    pattern = _str(m, "filePattern", prop)
    if not pattern:
        raise SpecError(f"{prop}.filePattern", "filePattern is required")
    bad = check_pattern(pattern)
    if bad:
        raise SpecError(f"{prop}.filePattern", bad)
    dest = m.get("destination")
    if not isinstance(dest, Mapping):
        raise SpecError(f"{prop}.destination", "destination is required")
    cont = dest.get("container")
    if not isinstance(cont, Mapping):
        raise SpecError(f"{prop}.destination.container", "destination.container is required")
    cprop = f"{prop}.destination.container"
    if cont.get("identityReference") is not None:
        raise SpecError(f"{cprop}.identityReference", IDENTITY_REASON, unsupported=True)
    url = _str(cont, "containerUrl", cprop)
    if not url:
        raise SpecError(f"{cprop}.containerUrl", "containerUrl is required")
    _check_url(url, f"{cprop}.containerUrl")
    path = _str(cont, "path", cprop) or None
    if path is not None:
        try:
            blob_path_segments(path)
        except PathRefused as e:
            raise SpecError(f"{cprop}.path", str(e)) from None
    headers: list[tuple[str, str]] = []
    raw_headers = cont.get("uploadHeaders") or []
    if not isinstance(raw_headers, list):
        raise SpecError(f"{cprop}.uploadHeaders", "must be a list")
    for i, h in enumerate(raw_headers):
        hprop = f"{cprop}.uploadHeaders[{i}]"
        if not isinstance(h, Mapping) or not isinstance(h.get("name"), str) or not h.get("name"):
            raise SpecError(f"{hprop}.name", "name is required")
        value = h.get("value")
        if value is not None and not isinstance(value, str):
            raise SpecError(f"{hprop}.value", "must be a string")
        headers.append((str(h["name"]), value or ""))
    opts = m.get("uploadOptions")
    if not isinstance(opts, Mapping):
        raise SpecError(f"{prop}.uploadOptions", "uploadOptions is required")
    cond = _str(opts, "uploadCondition", f"{prop}.uploadOptions")
    try:
        condition = UploadCondition(cond.lower()) if cond else UploadCondition.TASK_COMPLETION
    except ValueError:
        raise SpecError(
            f"{prop}.uploadOptions.uploadCondition", "must be tasksuccess, taskfailure or taskcompletion"
        ) from None
    return OutputFile(pattern, url, path, tuple(headers), condition)


def parse_resource_files(value: object, prop: str = "resourceFiles") -> list[ResourceFile]:
    """A task body's ``resourceFiles`` list (``None`` = none); errors name ``resourceFiles[i].…``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(prop, "must be a list")
    return [parse_resource_file(v, f"{prop}[{i}]") for i, v in enumerate(value)]


def parse_output_files(value: object, prop: str = "outputFiles") -> list[OutputFile]:
    """A task body's ``outputFiles`` list (``None`` = none); errors name ``outputFiles[i].…``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(prop, "must be a list")
    return [parse_output_file(v, f"{prop}[{i}]") for i, v in enumerate(value)]
