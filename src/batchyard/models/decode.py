"""Decoding request bodies into the generated wire structs, and the service's duration/time text forms.

Public API:

* `decode_body(data, model, *, max_bytes=None, required=True)`: JSON bytes -> wire struct, every failure
  mapped to a Batch error (`InvalidRequestBody`, `UnsupportedProperty`, `MissingRequiredProperty`,
  `InvalidPropertyValue`, `RequestBodyTooLarge`). Property names in errors are the client's camelCase wire
  paths (`startTask.userIdentity.foo`, `value[3].id`).
* `validate_enums(obj)` / `normalise_enums(obj)` / `validate_durations(obj)` / `validate_body(obj)`: the
  checks msgspec cannot do from the types alone (enums are accepted in any case, durations are strings).
* `to_wire(obj)`: struct -> JSON-ready dict (unset fields omitted, datetimes in the service's 7-digit form).
* `parse_duration` / `format_duration` / `INFINITE_DURATION(_TEXT)`: ISO-8601 durations as the service
  (.NET `TimeSpan`, `XmlConvert`) reads and writes them.
* `parse_time` / `format_time`: ISO-8601 timestamps, always UTC, written with exactly 7 fractional digits.

Leniency, matching what real clients send (see shared/reference/azure-batch-api/az_cli.md §3.4):
numbers and booleans given as JSON strings (`"targetDedicatedNodes": "1"`, `"waitForSuccess": "true"`) are
accepted (msgspec `strict=False`), explicit JSON `null` for an object property counts as absent, OData
annotations (`odata.metadata`, `x@odata.type`) are ignored, a UTF-8 byte-order mark is skipped, and
timestamps without an offset are taken as UTC.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec

from batchyard.models import errors
from batchyard.models.clock import format_time, parse_time
from batchyard.models.wire import DURATION_FIELDS, ENUM_CANONICAL, ENUMS, FIELD_ENUMS

__all__ = [
    "INFINITE_DURATION",
    "INFINITE_DURATION_TEXT",
    "decode_body",
    "format_duration",
    "format_time",
    "normalise_enums",
    "parse_duration",
    "parse_time",
    "to_wire",
    "validate_body",
    "validate_durations",
    "validate_enums",
]

T = TypeVar("T", bound=msgspec.Struct)

_UTC = datetime.UTC
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MAX_VALUE_TEXT = 1024  # longest PropertyValue echoed back in an error
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects a request body may have (Json.NET's default MaxDepth; no Batch model
nests half as deep). Checked without recursion, so a body of `[` x 100000 is a 400, not a RecursionError."""

# --- decoding ----------------------------------------------------------------------------------------------

_MISSING_RE = re.compile(
    r"^Object missing required field `(?P<field>[^`]*)`(?: - at `(?P<path>[^`]*)`)?$", re.S
)
_UNKNOWN_RE = re.compile(
    r"^Object contains unknown field `(?P<field>[^`]*)`(?: - at `(?P<path>[^`]*)`)?$", re.S
)
_GENERIC_RE = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_PATH_PART_RE = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")


def decode_body(data: bytes, model: type[T], *, max_bytes: int | None = None, required: bool = True) -> T:
    """Decode a JSON request body into `model`, raising `BatchError` for anything the service would reject.

    `required=False` is for operations whose body is optional (node reboot/reimage/deallocate, disable
    scheduling, job terminate): an empty body then decodes as `{}`. Datetimes in the result are always
    timezone-aware (UTC when the client gave no offset).
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise errors.request_body_too_large(f"The request body exceeds the maximum of {max_bytes} bytes.")
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    if not data.strip():
        if required:
            raise errors.invalid_request_body("The request body is empty.")
        data = b"{}"
    try:
        obj = msgspec.json.decode(data, type=model, strict=False)
    except msgspec.ValidationError as exc:
        check_json_depth(data)  # the lenient retry walks the raw JSON in Python
        obj = _retry_lenient(data, model, exc)
    except msgspec.DecodeError as exc:
        raise errors.invalid_request_body(_clean(str(exc))) from None
    except RecursionError:  # msgspec's own guard, inside a free-form (`Any`) property
        check_json_depth(data)
        raise errors.invalid_request_body(_too_deep()) from None
    _post_process(obj, "")
    return obj


def _too_deep() -> str:
    return f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep."


_JSON_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS_ONLY = (bytes.maketrans(b"{}", b"[]"), bytes(b for b in range(256) if b not in b"[]{}"))


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays/objects in the JSON text `data` nest deeper than `limit`, found by one iterative
    scan of the brackets outside string literals (never by recursion). Malformed text is judged by its
    unclosed brackets, so `[` x 100000 is too deep even without its closing half."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING_RE.sub(b"", data).translate(*_BRACKETS_ONLY)
    depth = 0
    for b in brackets:
        if b == 0x5B:  # "["
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def check_json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise InvalidRequestBody when `data` nests deeper than `limit` (see `json_depth_exceeds`)."""
    if json_depth_exceeds(data, limit):
        raise errors.invalid_request_body(_too_deep())


def _retry_lenient(data: bytes, model: type[T], exc: msgspec.ValidationError) -> T:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as malformed:  # the typed decode stopped before the syntax error
        raise errors.invalid_request_body(_clean(str(malformed))) from None
    cleaned = _lenient(raw)
    if cleaned is not raw:
        try:
            return msgspec.convert(cleaned, model, strict=False)
        except msgspec.ValidationError as again:
            raise _map_validation_error(str(again), cleaned) from None
    raise _map_validation_error(str(exc), raw) from None


def _is_annotation(key: str) -> bool:
    """OData JSON annotations such as `odata.metadata` or `name@odata.type`."""
    return key.startswith("odata.") or "@odata." in key


def _lenient(value: Any) -> Any:
    """`value` without null object members and OData annotations; the same object if it has none.

    Null counts as absent. Annotations arrive when a client GETs an entity and sends it back: the SDK keeps
    `odata.metadata` from the response and `replace_job(job_id, job)` re-sends it.
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        changed = False
        for k, v in value.items():
            if v is None or _is_annotation(k):
                changed = True
                continue
            nv = _lenient(v)
            changed = changed or nv is not v
            out[k] = nv
        return out if changed else value
    if isinstance(value, list):
        items = [_lenient(v) for v in value]
        if any(n is not o for n, o in zip(items, value, strict=True)):
            return items
        return value
    return value


def _map_validation_error(message: str, raw: Any) -> errors.BatchError:
    m = _MISSING_RE.match(message)
    if m:
        return errors.missing_required_property(_join(_wire_path(m.group("path")), m.group("field")))
    m = _UNKNOWN_RE.match(message)
    if m:
        return errors.unsupported_property(_join(_wire_path(m.group("path")), m.group("field")))
    m = _GENERIC_RE.match(message)
    reason = _clean(m.group("reason") if m else message)
    path = m.group("path") if m else None
    if not path or path == "$":
        # e.g. the body is a JSON array or string instead of an object
        return errors.invalid_request_body(reason)
    found, value = _lookup(raw, path)
    return errors.invalid_property_value(_wire_path(path), _value_text(value) if found else "", reason)


def _wire_path(path: str | None) -> str:
    """msgspec's `$.startTask.resourceFiles[0]` -> `startTask.resourceFiles[0]` (dict keys dropped)."""
    if not path or path == "$":
        return ""
    out = ""
    for m in _PATH_PART_RE.finditer(path[1:]):
        if m.group(1) is not None:
            out = _join(out, m.group(1))
        elif m.group(2) is not None:
            out += f"[{m.group(2)}]"
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    cur = raw
    for m in _PATH_PART_RE.finditer(path[1:]):
        if m.group(1) is not None and isinstance(cur, dict) and m.group(1) in cur:
            cur = cur[m.group(1)]
        elif m.group(2) is not None and isinstance(cur, list) and int(m.group(2)) < len(cur):
            cur = cur[int(m.group(2))]
        else:
            return False, None
    return True, cur


def _value_text(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= _MAX_VALUE_TEXT else text[:_MAX_VALUE_TEXT] + "..."


def _clean(reason: str) -> str:
    """msgspec's "Expected `int`, got `str`" -> "Expected int, got str"."""
    return reason.replace("`", "")


def _post_process(obj: msgspec.Struct, path: str) -> None:
    """Make datetimes timezone-aware (UTC) and reject integers no Batch property can hold (beyond int64)."""
    for fld, value, fpath in _iter_fields(obj, path):
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                setattr(obj, fld.name, value.replace(tzinfo=_UTC))
        elif isinstance(value, int) and not isinstance(value, bool):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise errors.invalid_property_value(fpath, value, "The value is out of range.")
        elif isinstance(value, msgspec.Struct):
            _post_process(value, fpath)
        elif isinstance(value, dict):  # free-form JSON (extension settings): bound its depth here
            if _nests_deeper(value, MAX_JSON_DEPTH):
                raise errors.invalid_property_value(fpath, "", _too_deep())
        elif isinstance(value, list):
            for i, item in enumerate(value):
                ipath = f"{fpath}[{i}]"
                if isinstance(item, msgspec.Struct):
                    _post_process(item, ipath)
                elif isinstance(item, int) and not isinstance(item, bool):
                    if not _INT64_MIN <= item <= _INT64_MAX:
                        raise errors.invalid_property_value(ipath, item, "The value is out of range.")


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether decoded JSON `value` nests deeper than `limit` (iterative, so it cannot overflow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values() if isinstance(x, dict | list))
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v if isinstance(x, dict | list))
    return False


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(cls)


def _iter_fields(obj: msgspec.Struct, path: str) -> Iterator[tuple[msgspec.structs.FieldInfo, Any, str]]:
    """(field, value, wire path) for every set field of `obj`."""
    for fld in _fields(type(obj)):
        value = getattr(obj, fld.name)
        if value is msgspec.UNSET:
            continue
        yield fld, value, _join(path, fld.encode_name)


# --- enum and duration validation --------------------------------------------------------------------------


def _walk(
    obj: msgspec.Struct, path: str
) -> Iterator[tuple[msgspec.Struct, msgspec.structs.FieldInfo, Any, str]]:
    """(struct, field, value, wire path) for every set field of `obj` and of the structs nested in it."""
    for fld, value, fpath in _iter_fields(obj, path):
        yield obj, fld, value, fpath
        if isinstance(value, msgspec.Struct):
            yield from _walk(value, fpath)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    yield from _walk(item, f"{fpath}[{i}]")


def _enum_error(path: str, value: object, enum_name: str) -> errors.BatchError:
    allowed = ", ".join(ENUM_CANONICAL[enum_name].values())
    return errors.invalid_property_value(path, value, f"The value must be one of: {allowed}.")


def _check_enums(obj: msgspec.Struct, rewrite: bool) -> None:
    for owner, fld, value, path in _walk(obj, ""):
        enum_name = FIELD_ENUMS.get((type(owner).__name__, fld.encode_name))
        if enum_name is None:
            continue
        allowed = ENUMS[enum_name]
        canonical = ENUM_CANONICAL[enum_name]
        if isinstance(value, str):
            if value.lower() not in allowed:
                raise _enum_error(path, value, enum_name)
            if rewrite:
                setattr(owner, fld.name, canonical[value.lower()])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str) or item.lower() not in allowed:
                    raise _enum_error(f"{path}[{i}]", item, enum_name)
                if rewrite:
                    value[i] = canonical[item.lower()]


def validate_enums(obj: msgspec.Struct) -> None:
    """Raise InvalidPropertyValue for an enum property whose value (compared case-insensitively) is unknown.

    Leaves the values as the client sent them; use `normalise_enums` to also rewrite them to the SDK
    spelling (`"SPREAD"` -> `"spread"`, `"TASKWORKINGDIRECTORY"` -> `"taskWorkingDirectory"`).
    """
    _check_enums(obj, rewrite=False)


def normalise_enums(obj: msgspec.Struct) -> None:
    """Validate like `validate_enums`, then rewrite every enum value in place to the SDK's spelling."""
    _check_enums(obj, rewrite=True)


def validate_durations(obj: msgspec.Struct, rewrite: bool = False) -> None:
    """Raise InvalidPropertyValue for a duration property that is not a non-negative ISO-8601 duration; with
    `rewrite`, store each one in the service's form (`PT15M00S` -> `PT15M`, years and months as days)."""
    for owner, fld, value, path in _walk(obj, ""):
        if (type(owner).__name__, fld.encode_name) in DURATION_FIELDS and isinstance(value, str):
            try:
                td = parse_duration(value)
            except ValueError as exc:
                raise errors.invalid_property_value(path, value, str(exc)) from None
            if td < datetime.timedelta(0) or _negative_ticks(value):
                raise errors.invalid_property_value(path, value, "The duration must not be negative.")
            if rewrite:
                setattr(owner, fld.name, format_duration(td))


def _negative_ticks(text: str) -> bool:
    """`-PT0.0000001S`: one negative tick, which timedelta (microseconds) rounds to zero."""
    return text.strip().startswith("-") and any(c in "123456789" for c in text)


def validate_body(obj: msgspec.Struct) -> None:
    """`validate_enums` + `validate_durations`."""
    validate_enums(obj)
    validate_durations(obj)


# --- encoding ----------------------------------------------------------------------------------------------


def to_wire(obj: msgspec.Struct) -> dict[str, Any]:
    """A wire struct as JSON-ready builtins: unset fields omitted, wire names, datetimes via `format_time`.

    Values are not rewritten otherwise (enum case is kept as decoded; call `normalise_enums` first for the
    SDK spelling).
    """
    out = msgspec.to_builtins(obj, builtin_types=(datetime.datetime,))
    if not isinstance(out, dict):
        raise TypeError(f"{type(obj).__name__} does not encode to a JSON object")
    result: dict[str, Any] = _format_times(out)
    return result


def _format_times(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {k: _format_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_format_times(v) for v in value]
    return value


# --- durations ---------------------------------------------------------------------------------------------

_TICKS_PER_SECOND = 10_000_000
_TICKS_PER_DAY = 86_400 * _TICKS_PER_SECOND
_TIMESPAN_MAX_TICKS = 2**63 - 1  # .NET TimeSpan.MaxValue

INFINITE_DURATION_TEXT = "P10675199DT2H48M5.4775807S"
"""How the service writes .NET `TimeSpan.MaxValue`, its "infinite"/"no limit" duration."""

INFINITE_DURATION = datetime.timedelta(microseconds=_TIMESPAN_MAX_TICKS // 10)
"""`TimeSpan.MaxValue` at timedelta precision; `format_duration` writes anything >= it as infinite."""

_DURATION_RE = re.compile(
    r"^(?P<sign>-)?P(?=\d|T\d)"
    r"(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)(?:[.,](?P<fraction>\d+))?S)?)?$",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=256)  # a few distinct values (constraints, retention) are parsed per task
def parse_duration(text: str) -> datetime.timedelta:
    """Parse an ISO-8601 duration as the service does: `PT15M`, `PT01H00M00S` (az), `P1D`, `PT0.5S`,
    `P10675199DT2H48M5.4775807S` (infinite). A year counts 365 days, a month 30 days; fractions are allowed on
    seconds only (7 digits = .NET ticks; finer digits are dropped). Raises ValueError."""
    m = _DURATION_RE.match(text.strip())
    if m is None:
        raise ValueError(f"The value '{text}' is not a valid ISO-8601 duration.")

    def part(name: str) -> int:
        v = m.group(name)
        return int(v) if v else 0

    days = part("years") * 365 + part("months") * 30 + part("weeks") * 7 + part("days")
    seconds = ((days * 24 + part("hours")) * 60 + part("minutes")) * 60 + part("seconds")
    fraction = (m.group("fraction") or "")[:7].ljust(7, "0")
    ticks = seconds * _TICKS_PER_SECOND + int(fraction)
    if ticks > _TIMESPAN_MAX_TICKS:
        raise ValueError(f"The duration '{text}' is out of range.")
    td = datetime.timedelta(microseconds=ticks // 10)
    return -td if m.group("sign") else td


def format_duration(td: datetime.timedelta) -> str:
    """A duration in the service's .NET form: `PT15M`, `P7D`, `PT1H`, `P1DT2H3M4.5S`, zero `PT0S`;
    anything >= `INFINITE_DURATION` is `INFINITE_DURATION_TEXT`."""
    if td >= INFINITE_DURATION:
        return INFINITE_DURATION_TEXT
    if td < datetime.timedelta(0):
        return "-" + format_duration(-td)
    ticks = (td.days * 86_400 + td.seconds) * _TICKS_PER_SECOND + td.microseconds * 10
    days, ticks = divmod(ticks, _TICKS_PER_DAY)
    hours, ticks = divmod(ticks, 3600 * _TICKS_PER_SECOND)
    minutes, ticks = divmod(ticks, 60 * _TICKS_PER_SECOND)
    seconds, frac = divmod(ticks, _TICKS_PER_SECOND)
    out = "P"
    if days:
        out += f"{days}D"
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if frac:
        time += f"{seconds}.{frac:07d}".rstrip("0") + "S"
    elif seconds:
        time += f"{seconds}S"
    if time:
        out += "T" + time
    return out if out != "P" else "PT0S"
