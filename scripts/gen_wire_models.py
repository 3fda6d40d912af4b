#!/usr/bin/env python3
"""Generate ``src/batchyard/models/wire.py`` from the azure-batch 15.1.0 model definitions.

The official SDK (``azure.batch.models._models``) declares every wire shape of the Batch data-plane API
as a class whose attributes are ``rest_field(name="wireName", visibility=[...])`` descriptors with type
annotations. This script introspects those classes (and ``azure.batch.models._enums`` and the client's
operations) and writes one strict ``msgspec.Struct`` per model, plus lookup tables the service layer uses
for validation that msgspec cannot do by type alone (enum values are accepted in any case; durations are
plain strings parsed by ``batchyard.models.decode.parse_duration``).

Rules (documented again in the generated file's docstring):

* every struct subclasses ``WireModel`` (``forbid_unknown_fields=True, omit_defaults=True, kw_only=True``);
* attributes are the SDK's snake_case names, each with ``field(name="<exact wire name>")``;
* a field is required (no default) iff the SDK annotation is not ``Optional`` and the field is not
  read-only (``visibility == ["read"]``; the SDK never sends those, see ``exclude_readonly=True``);
  every other field defaults to ``UNSET`` and is typed ``T | UnsetType``;
* ``str``/``int``/``float``/``bool`` map to themselves, ``datetime`` to ``datetime.datetime``,
  ``timedelta`` (durations) to ``str``, enums to ``str`` (see ``ENUMS`` / ``FIELD_ENUMS``), lists and
  nested models to themselves, ``dict[str, str]`` to itself;
* properties that older api-versions (still sent by az 2.91.0 / azure-batch 15.0.0b1 and the legacy
  14.2.0 client, api-version 2024-02-01.19.0) allow but 15.1.0 dropped are added as optional fields,
  listed in ``OLDER_VERSION_FIELDS`` below.

Usage::

    python scripts/gen_wire_models.py            # rewrite src/batchyard/models/wire.py
    python scripts/gen_wire_models.py --output /tmp/wire.py         # write elsewhere
    python scripts/gen_wire_models.py --check                       # exit 1 if wire.py is stale

The output is emitted already in ``ruff format`` style (line length 110) so that formatting it is a no-op.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import importlib.metadata
import inspect
import keyword
import re
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTED_SDK_VERSION = "15.1.0"
LINE_LENGTH = 110
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "src" / "batchyard" / "models" / "wire.py"

# --- properties of older api-versions -------------------------------------------------------------------
#
# Evidence: wire paths of every request body of azure-batch 14.2.0 (msrest, api-version 2024-02-01.19.0)
# and 15.0.0b1 (pinned by az 2.91.0, same api-version) compared with 15.1.0 (2025-06-01). Nothing that an
# older client can send became required, and no shared path changed its JSON type (except VM extension
# settings, widened below). The extra paths, by the 15.1.0 model they attach to:

# Evidence labels: "14.2.0" = azure-batch 14.2.0 (msrest); "15.0.0b1" = azure-batch 15.0.0b1 as pinned by
# az 2.91.0. Both send api-version 2024-02-01.19.0. "requested" = asked for by the project for parity, no
# client seen sending it on that operation.

_CERTS = ("certificateReferences", "certificate_references", "list[CertificateReference]", "")
_COMM = ("targetNodeCommunicationMode", "target_node_communication_mode", "str", "NodeCommunicationMode")
_TAGS = ("resourceTags", "resource_tags", "dict[str, str]", "")
_CSC = ("cloudServiceConfiguration", "cloud_service_configuration", "CloudServiceConfiguration", "")
_LIC = ("applicationLicenses", "application_licenses", "list[str]", "")
_SAT = ("storageAccountType", "storage_account_type", "str", "StorageAccountType")
_ATS = ("authenticationTokenSettings", "authentication_token_settings", "AuthenticationTokenSettings", "")

# (struct, (wire name, attribute, annotation, enum name), evidence)
_LEGACY_SPEC: list[tuple[str, tuple[str, str, str, str], str]] = [
    ("BatchPoolCreateOptions", _CERTS, "14.2.0 PoolAddParameter"),
    ("BatchPoolCreateOptions", _COMM, "14.2.0 PoolAddParameter; 15.0.0b1 BatchPoolCreateContent"),
    ("BatchPoolCreateOptions", _TAGS, "14.2.0 PoolAddParameter; 15.0.0b1 BatchPoolCreateContent"),
    ("BatchPoolCreateOptions", _CSC, "14.2.0 PoolAddParameter"),
    ("BatchPoolCreateOptions", _LIC, "14.2.0 PoolAddParameter"),
    ("BatchPoolUpdateOptions", _CERTS, "14.2.0 PoolPatchParameter"),
    ("BatchPoolUpdateOptions", _COMM, "14.2.0 PoolPatchParameter; 15.0.0b1 BatchPoolUpdateContent"),
    ("BatchPoolUpdateOptions", _TAGS, "requested (2024-07-01.20.0 added it to PATCH)"),
    ("BatchPoolUpdateOptions", _CSC, "requested"),
    ("BatchPoolReplaceOptions", _CERTS, "14.2.0 PoolUpdatePropertiesParameter; 15.0.0b1 (az sends [])"),
    ("BatchPoolReplaceOptions", _COMM, "14.2.0 PoolUpdatePropertiesParameter"),
    ("BatchPoolReplaceOptions", _TAGS, "requested"),
    ("BatchPoolReplaceOptions", _CSC, "requested"),
    ("BatchPoolSpecification", _CERTS, "14.2.0 PoolSpecification"),
    ("BatchPoolSpecification", _COMM, "14.2.0 PoolSpecification; 15.0.0b1 BatchPoolSpecification"),
    ("BatchPoolSpecification", _TAGS, "14.2.0 PoolSpecification; 15.0.0b1 BatchPoolSpecification"),
    ("BatchPoolSpecification", _CSC, "14.2.0 PoolSpecification"),
    ("BatchPoolSpecification", _LIC, "14.2.0 PoolSpecification"),
    ("DataDisk", _SAT, "14.2.0 DataDisk; 15.0.0b1 DataDisk (2025-06-01 moved it into managedDisk)"),
    ("BatchTaskCreateOptions", _ATS, "14.2.0 TaskAddParameter; 15.0.0b1 BatchTaskCreateContent"),
    ("BatchJobManagerTask", _ATS, "14.2.0 JobManagerTask; 15.0.0b1 BatchJobManagerTask"),
]


@dataclass
class Field:
    attr: str
    wire: str
    ann: str  # annotation without "| UnsetType"
    required: bool
    read_only: bool = False
    enum_name: str = ""
    duration: bool = False
    string_int: bool = False


@dataclass
class Model:
    name: str
    doc: str
    fields: list[Field] = field(default_factory=list)
    legacy: bool = False


# Structs of older api-versions that 15.1.0 no longer models (2024-02-01.19.0 shapes, from 14.2.0).
_LEGACY_MODELS: list[Model] = [
    Model(
        "AuthenticationTokenSettings",
        "Legacy (<= 2024-02-01.19.0): the settings for an authentication token that a Task can use.",
        [Field("access", "access", "list[str]", False, enum_name="AccessScope")],
        legacy=True,
    ),
    Model(
        "CertificateReference",
        "Legacy (<= 2024-02-01.19.0): a Certificate to install on the Compute Nodes of a Pool.",
        [
            Field("thumbprint", "thumbprint", "str", True),
            Field("thumbprint_algorithm", "thumbprintAlgorithm", "str", True),
            Field("store_location", "storeLocation", "str", False, enum_name="CertificateStoreLocation"),
            Field("store_name", "storeName", "str", False),
            Field("visibility", "visibility", "list[str]", False, enum_name="CertificateVisibility"),
        ],
        legacy=True,
    ),
    Model(
        "CloudServiceConfiguration",
        "Legacy (<= 2024-02-01.19.0): Compute Nodes based on the Azure Cloud Services platform.",
        [Field("os_family", "osFamily", "str", True), Field("os_version", "osVersion", "str", False)],
        legacy=True,
    ),
]

_LEGACY_ENUMS: dict[str, list[str]] = {
    "AccessScope": ["job"],
    "CertificateStoreLocation": ["currentuser", "localmachine"],
    "CertificateVisibility": ["starttask", "task", "remoteuser"],
    "NodeCommunicationMode": ["default", "classic", "simplified"],
}

# The 2025-06-01 SDK types VM extension settings as dict[str, str]; 2024-02-01.19.0 typed them as free JSON
# objects (14.2.0: 'type': 'object'), and real extension settings nest lists/objects. Accept any JSON value.
_TYPE_OVERRIDES: dict[tuple[str, str], str] = {
    ("VMExtension", "settings"): "dict[str, Any]",
    ("VMExtension", "protectedSettings"): "dict[str, Any]",
}


# --- introspection ----------------------------------------------------------------------------------------


@dataclass
class _Sdk:
    models: types.ModuleType  # azure.batch.models._models
    package: types.ModuleType  # azure.batch.models (the annotations refer to it as _models)
    enums: types.ModuleType  # azure.batch.models._enums
    operations: types.ModuleType  # azure.batch._operations._operations
    model_base: type  # every model's base class
    rest_field: type  # the rest_field() descriptor class
    unset: object  # rest_field's "no default" marker


def _sdk() -> _Sdk:
    version = importlib.metadata.version("azure-batch")
    if version != EXPECTED_SDK_VERSION:
        raise SystemExit(f"azure-batch {EXPECTED_SDK_VERSION} is required, found {version}")
    import azure.batch._operations._operations as ops
    import azure.batch._utils.model_base as model_base
    import azure.batch.models as package
    import azure.batch.models._enums as enums_mod
    import azure.batch.models._models as models_mod

    return _Sdk(
        models_mod, package, enums_mod, ops, model_base.Model, model_base._RestField, model_base._UNSET
    )


def _first_sentence(doc: str | None) -> str:
    if not doc:
        return ""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    m = re.match(r"(.+?\.)(\s|$)", para)
    text = m.group(1) if m else para
    return text.replace("\\", "/").replace('"""', "'''").rstrip('"')


def _render_type(
    t: object, sdk_model: type, enum_names: dict[type, str], where: str
) -> tuple[str, bool, str, bool]:
    """Return (annotation, optional, enum name, is duration) for one SDK annotation."""
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) != len(args)
        enums = [a for a in non_none if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and str in non_none and len(non_none) == 2:
            return "str", optional, enum_names[enums[0]], False
        if len(non_none) != 1:
            raise SystemExit(f"unsupported union {t!r} at {where}")
        ann, _, en, dur = _render_type(non_none[0], sdk_model, enum_names, where)
        return ann, optional, en, dur
    if origin is list:
        inner, inner_opt, en, dur = _render_type(args[0], sdk_model, enum_names, where)
        if inner_opt or dur:
            raise SystemExit(f"unsupported list element {t!r} at {where}")
        return f"list[{inner}]", False, en, False
    if origin is dict:
        if args != (str, str):
            raise SystemExit(f"unsupported dict {t!r} at {where}")
        return "dict[str, str]", False, "", False
    if t in (str, int, float, bool):
        return typing.cast(type, t).__name__, False, "", False
    if t is datetime.datetime:
        return "datetime.datetime", False, "", False
    if t is datetime.timedelta:
        return "str", False, "", True
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "str", False, enum_names[t], False
    if isinstance(t, type) and issubclass(t, sdk_model):
        return t.__name__, False, "", False
    raise SystemExit(f"unsupported annotation {t!r} at {where}")


def collect() -> tuple[list[Model], dict[str, list[str]], list[tuple[str, str, str, str]]]:
    sdk = _sdk()
    models_mod, enums_mod, sdk_model = sdk.models, sdk.enums, sdk.model_base

    enum_classes = sorted(
        (
            c
            for _, c in inspect.getmembers(enums_mod, inspect.isclass)
            if issubclass(c, enum.Enum) and c.__module__ == enums_mod.__name__
        ),
        key=lambda c: c.__name__,
    )
    enum_names = {c: c.__name__ for c in enum_classes}
    enums: dict[str, list[str]] = {c.__name__: [str(m.value) for m in c] for c in enum_classes}
    for name, values in _LEGACY_ENUMS.items():
        if name in enums:
            raise SystemExit(f"legacy enum {name} now exists in the SDK")
        enums[name] = values

    classes = sorted(
        (
            c
            for _, c in inspect.getmembers(models_mod, inspect.isclass)
            if issubclass(c, sdk_model) and c is not sdk_model and c.__module__ == models_mod.__name__
        ),
        key=lambda c: c.__name__,
    )
    globalns = dict(vars(models_mod))
    globalns["_models"] = sdk.package
    models: list[Model] = []
    for cls in classes:
        if any(
            issubclass(b, sdk_model) and b is not sdk_model for b in cls.__mro__[1:] if isinstance(b, type)
        ):
            raise SystemExit(f"{cls.__name__}: model inheritance is not supported")
        hints = typing.get_type_hints(cls, globalns=globalns)
        model = Model(cls.__name__, _first_sentence(cls.__doc__))
        for attr, value in cls.__dict__.items():
            if not isinstance(value, sdk.rest_field):
                continue
            rf: Any = value
            if keyword.iskeyword(attr) or attr.startswith("_"):
                raise SystemExit(f"{cls.__name__}.{attr}: unusable attribute name")
            if rf._is_discriminator or rf._default is not sdk.unset:
                raise SystemExit(f"{cls.__name__}.{attr}: discriminators/defaults are not supported")
            wire = rf._rest_name_input or attr
            where = f"{cls.__name__}.{attr}"
            ann, optional, enum_name, duration = _render_type(hints[attr], sdk_model, enum_names, where)
            override = _TYPE_OVERRIDES.get((cls.__name__, wire))
            if override:
                ann = override
            read_only = rf._visibility == ["read"]
            model.fields.append(
                Field(
                    attr=attr,
                    wire=wire,
                    ann=ann,
                    required=not optional and not read_only,
                    read_only=read_only,
                    enum_name=enum_name,
                    duration=duration,
                    string_int=rf._format == "str",
                )
            )
        models.append(model)

    by_name = {m.name: m for m in models}
    for legacy_model in _LEGACY_MODELS:
        if legacy_model.name in by_name:
            raise SystemExit(f"legacy model {legacy_model.name} now exists in the SDK")
    for struct, (wire, attr, ann, enum_name), _ in _LEGACY_SPEC:
        target = by_name[struct]
        if any(f.wire == wire or f.attr == attr for f in target.fields):
            raise SystemExit(f"legacy field {struct}.{wire} now exists in the SDK")
        target.fields.append(Field(attr=attr, wire=wire, ann=ann, required=False, enum_name=enum_name))
    models = sorted(models + _LEGACY_MODELS, key=lambda m: m.name)

    return models, enums, _request_bodies(sdk.operations)


def _request_bodies(ops: types.ModuleType) -> list[tuple[str, str, str, str]]:
    """(operation, HTTP method, path template, body model) of each client operation that sends JSON."""
    mixin = ops._BatchClientOperationsMixin
    out: list[tuple[str, str, str, str]] = []
    for name, fn in inspect.getmembers(mixin, inspect.isfunction):
        src = inspect.getsource(fn)
        m = re.search(r"_content = json\.dumps\((\w+), cls=SdkJSONEncoder", src)
        if not m:
            continue
        param = inspect.signature(fn).parameters[m.group(1)]
        ann = param.annotation
        if isinstance(ann, str):
            names = re.findall(r"(\w+)\]?\s*$", ann.replace("Optional[", ""))
            model_name = names[-1].rstrip("]")
        else:
            args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
            model_name = args[0].__name__
        builder_name = re.search(r"_request = (build_batch_\w+_request)\(", src)
        if builder_name is None:
            raise SystemExit(f"no request builder in {name}")
        bsrc = inspect.getsource(getattr(ops, builder_name.group(1)))
        url = re.search(r'_url = "([^"]+)"', bsrc)
        method = re.search(r'method="(\w+)"', bsrc)
        if url is None or method is None:
            raise SystemExit(f"cannot read the route of {builder_name.group(1)}")
        op = re.sub(r"_internal$", "", name.lstrip("_"))
        out.append((op, method.group(1), url.group(1), model_name))
    return sorted(out)


_MODULE_DOC = '''"""Strict wire models of Azure Batch bodies, one msgspec struct per azure-batch 15.1.0 model.

* Every struct subclasses `WireModel` (`forbid_unknown_fields=True, omit_defaults=True`) and is declared
  `kw_only=True`: unknown JSON properties are rejected and unset fields are omitted on encode.
  Attributes are the SDK's snake_case names; `field(name="...")` gives the exact wire name.
* Required fields (no default) are the SDK's required, non-read-only fields. Read-only fields are never
  sent by the SDK (it serializes with `exclude_readonly=True`) and are optional; see `READ_ONLY_FIELDS`.
* Durations are `str` (ISO-8601 as sent; `batchyard.models.decode.parse_duration`), see `DURATION_FIELDS`.
  Enums are `str`: `FIELD_ENUMS` names the enum of such fields, `ENUMS` holds its lowercase values (the
  service accepts any case) and `ENUM_CANONICAL` maps them back to the SDK spelling.
* Fields known only to older api-versions (<= 2024-02-01.19.0) are optional extras, listed in
  `OLDER_VERSION_FIELDS`. `REQUEST_BODIES` and `REQUEST_BODY_ROUTES` name the body of each operation.
"""'''


# --- emission ---------------------------------------------------------------------------------------------


def _field_line(f: Field) -> list[str]:
    if f.required:
        ann = f.ann
        call = f'field(name="{f.wire}")'
    else:
        ann = f"{f.ann} | UnsetType"
        call = f'field(name="{f.wire}", default=UNSET)'
    line = f"    {f.attr}: {ann} = {call}"
    if len(line) <= LINE_LENGTH:
        return [line]
    inner = call[len("field(") : -1]
    return [f"    {f.attr}: {ann} = field(", f"        {inner}", "    )"]


def _docstring(text: str, indent: str) -> list[str]:
    width = LINE_LENGTH - len(indent) - 6
    if len(text) <= width:
        return [f'{indent}"""{text}"""']
    lines = textwrap.wrap(text, width)
    return [f'{indent}"""{lines[0]}', *(f"{indent}{ln}" for ln in lines[1:]), f'{indent}"""']


def _str_tuple(items: tuple[str, ...]) -> str:
    return "(" + ", ".join(f'"{i}"' for i in items) + ")"


def render(models: list[Model], enums: dict[str, list[str]], bodies: list[tuple[str, str, str, str]]) -> str:
    out: list[str] = []
    w = out.append
    w("# Code generated by scripts/gen_wire_models.py from azure-batch 15.1.0. DO NOT EDIT.")
    w("# Regenerate: python scripts/gen_wire_models.py   (check: --check)")
    out.extend(_MODULE_DOC.splitlines())
    w("")
    w("from __future__ import annotations")
    w("")
    w("import datetime")
    w("from typing import Any")
    w("")
    w("import msgspec")
    w("from msgspec import UNSET, UnsetType, field")
    w("")
    w('SDK_VERSION = "15.1.0"')
    w("")
    w("")
    w("class WireModel(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):")
    w('    """Base of every generated wire struct."""')
    for model in models:
        w("")
        w("")
        w(f"class {model.name}(WireModel, kw_only=True):")
        doc = model.doc or f"Wire model {model.name}."
        out.extend(_docstring(doc, "    "))
        if model.fields:
            w("")
        for f in model.fields:
            out.extend(_field_line(f))

    def dict_block(header: str, entries: list[str]) -> None:
        if not entries:
            w(header + "}")
            return
        w(header)
        out.extend(entries)
        w("}")

    w("")
    w("")
    w("# enum name -> {lowercase wire value: the SDK's spelling}")
    entries: list[str] = []
    for name in sorted(enums):
        entries.append(f'    "{name}": {{')
        for v in enums[name]:
            entries.append(f'        "{v.lower()}": "{v}",')
        entries.append("    },")
    dict_block("ENUM_CANONICAL: dict[str, dict[str, str]] = {", entries)
    w("")
    w("# enum name -> lowercase wire values")
    w("ENUMS: dict[str, frozenset[str]] = {name: frozenset(vals) for name, vals in ENUM_CANONICAL.items()}")

    field_enums = [(m.name, f.wire, f.enum_name) for m in models for f in m.fields if f.enum_name]
    w("")
    w("# (struct, wire field) -> enum name; list-of-enum fields included (each element is one enum value)")
    dict_block(
        "FIELD_ENUMS: dict[tuple[str, str], str] = {",
        [f'    ("{s}", "{wf}"): "{e}",' for s, wf, e in field_enums],
    )

    w("")
    w("# (struct, wire field) of every ISO-8601 duration field (typed str)")
    w("DURATION_FIELDS: frozenset[tuple[str, str]] = frozenset(")
    w("    {")
    for m in models:
        for f in m.fields:
            if f.duration:
                w(f'        ("{m.name}", "{f.wire}"),')
    w("    }")
    w(")")

    w("")
    w("# (struct, wire field) of int64 fields the service encodes as JSON strings (e.g. file contentLength)")
    w("STRING_ENCODED_INT_FIELDS: frozenset[tuple[str, str]] = frozenset(")
    w("    {")
    for m in models:
        for f in m.fields:
            if f.string_int:
                w(f'        ("{m.name}", "{f.wire}"),')
    w("    }")
    w(")")

    ro_entries: list[str] = []
    for m in models:
        ro = [f.wire for f in m.fields if f.read_only]
        if ro:
            ro_entries.append(f'    "{m.name}": frozenset(')
            ro_entries.append("        {")
            ro_entries.extend(f'            "{x}",' for x in ro)
            ro_entries.append("        }")
            ro_entries.append("    ),")
    w("")
    w("# struct -> wire names of its read-only fields (service-populated; ignored in request bodies)")
    dict_block("READ_ONLY_FIELDS: dict[str, frozenset[str]] = {", ro_entries)

    w("")
    w("# (struct, wire field, evidence) of optional fields accepted for older api-versions")
    w("OLDER_VERSION_FIELDS: list[tuple[str, str, str]] = [")
    for struct, (wire, *_), evidence in _LEGACY_SPEC:
        w("    (")
        w(f'        "{struct}",')
        w(f'        "{wire}",')
        w(f'        "{evidence}",')
        w("    ),")
    w("]")

    w("")
    w("# SDK operation (15.1.0 method name, without the leading '_' and '_internal' suffix) -> body struct")
    dict_block(
        "REQUEST_BODIES: dict[str, type[WireModel]] = {",
        [f'    "{op}": {model},' for op, _, _, model in bodies],
    )
    w("")
    w("# (HTTP method, path template) -> body struct")
    dict_block(
        "REQUEST_BODY_ROUTES: dict[tuple[str, str], type[WireModel]] = {",
        [f'    ("{method}", "{path}"): {model},' for _, method, path, model in bodies],
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="file to write (default wire.py)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is out of date; write nothing"
    )
    args = parser.parse_args(argv)
    text = render(*collect())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run scripts/gen_wire_models.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
