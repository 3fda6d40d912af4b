"""Applications and their package versions: batchyard's management surface, the data plane's read view, the
checks of pool references and what agents fetch.

Azure manages packages through ARM; here the server owns them (``/batchyard/applications``, decision 0150).
One store row per application holds its versions in the body; each version's zip lives under
``<data dir>/applications/<app key>/`` (never inside a node root, so tasks only ever see deployed copies), named
with its content hash so a replaced version never changes the bytes a node is still downloading.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchyard.models import errors
from batchyard.models.ids import check_id, key_of
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.service.listing import MAX_RESULTS, decode_token, encode_token
from batchyard.storage.packages import BadPackage, check_package
from batchyard.store import schema
from batchyard.store.sql import DuplicateKey, Row, Tx

_VERSION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: A pool may reference at most this many packages (the service's quota).
MAX_POOL_REFERENCES = 10
#: The time format of a version's folder name on the node (``blender2.72019-01-15-09-19`` on a real node).
FOLDER_TIME = "%Y-%m-%d-%H-%M"


def check_app_id(value: object, prop: str = "applicationId") -> str:
    return check_id(value, prop)


def check_version(value: object, prop: str = "version") -> str:
    """Versions: 1-64 letters, digits, '-', '_' or '.' (case-insensitive like ids)."""
    if not isinstance(value, str) or not value:
        raise errors.missing_required_property(prop)
    if not _VERSION_RE.match(value) or value in (".", ".."):
        raise errors.invalid_property_value(prop, value, "A version is 1-64 letters, digits, '-', '_' or '.'")
    return value


def app_id_of_reference(value: str) -> str:
    """A reference names the application by id, or (newer pool API text) by its ARM resource id."""
    low = value.lower()
    marker = "/applications/"
    if value.startswith("/") and marker in low:
        return value[low.rindex(marker) + len(marker) :].strip("/")
    return value


def packages_root(ctx: Ctx) -> Path:
    return ctx.data_dir / "applications"


# --- views ---------------------------------------------------------------------------------------------------


def _active(body: Body) -> list[Body]:
    vs = [v for v in (body.get("versions") or {}).values() if v.get("state") == "active"]
    return sorted(vs, key=lambda v: str(v["version"]).lower())


def data_plane_view(body: Body) -> Body:
    """The data plane's `BatchApplication`: id, displayName and the versions usable on nodes (no default)."""
    return {
        "id": body["id"],
        "displayName": body.get("displayName") or body["id"],
        "versions": [v["version"] for v in _active(body)],
    }


def managed_view(body: Body) -> Body:
    """batchyard's management view: like ARM's application plus its packages."""
    out: Body = {
        "id": body["id"],
        "displayName": body.get("displayName"),
        "allowUpdates": bool(body.get("allowUpdates", True)),
        "defaultVersion": body.get("defaultVersion"),
        "packages": [
            {k: v[k] for k in ("version", "state", "lastActivationTime", "size", "sha256") if k in v}
            for v in _active(body)
        ],
        "eTag": body.get("eTag"),
        "lastModified": body.get("lastModified"),
    }
    return {k: v for k, v in out.items() if v is not None}


# --- data plane ----------------------------------------------------------------------------------------------


def list_applications(
    ctx: Ctx, max_results: int = MAX_RESULTS, skiptoken: str | None = None
) -> tuple[list[Body], str | None]:
    """One page of applications with at least one active package, in id order (case-insensitive)."""
    after = decode_token(skiptoken) if skiptoken else None
    limit = max(1, min(max_results, MAX_RESULTS))
    t = schema.applications
    out: list[Body] = []
    keys: list[str] = []
    with ctx.store.tx() as tx:
        while True:
            where = t.c.key > after if after is not None else None
            batch = tx.select(t, where, order_by=[t.c.key], limit=limit + 1)
            for r in batch:
                after = r["key"]
                if not _active(r["body"]):
                    continue
                out.append(data_plane_view(r["body"]))
                keys.append(r["key"])
                if len(out) > limit:
                    return out[:limit], encode_token(keys[limit - 1])
            if len(batch) <= limit:
                return out, None


def get_application(ctx: Ctx, app_id: str) -> Body:
    with ctx.store.tx() as tx:
        row = tx.get(schema.applications, key=key_of(app_id))
    if row is None or not _active(row["body"]):
        raise errors.application_not_found()
    return dict(data_plane_view(row["body"]), eTag=row["etag"], lastModified=row["last_modified"])


# --- references ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A reference resolved to one stored package version."""

    application_id: str  # as the application was created (case preserved)
    version: str
    defaulted: bool  # the reference named no version: the default version was used
    activated: str  # lastActivationTime (wire text)
    sha256: str
    size: int
    file: str

    def to_wire(self) -> Body:
        return {
            "applicationId": self.application_id,
            "version": self.version,
            "defaulted": self.defaulted,
            "activated": self.activated,
            "sha256": self.sha256,
            "size": self.size,
        }


def resolve(tx: Tx, ref: Body) -> Resolved | None:
    """The package a reference names (its version, else the default), or None."""
    app = ref.get("applicationId")
    if not isinstance(app, str) or not app:
        return None
    row = tx.get(schema.applications, key=key_of(app_id_of_reference(app)))
    if row is None:
        return None
    body = row["body"]
    version = ref.get("version")
    defaulted = version in (None, "")
    if defaulted:
        version = body.get("defaultVersion")
        if not version:
            return None
    v = (body.get("versions") or {}).get(str(version).lower())
    if v is None or v.get("state") != "active":
        return None
    return Resolved(
        body["id"], v["version"], defaulted, v["lastActivationTime"], v["sha256"], int(v["size"]), v["file"]
    )


def check_pool_references(tx: Tx, refs: Any, prop: str = "applicationPackageReferences") -> None:
    """Pool create/patch/updateproperties: every reference must name an active package (else 409)."""
    if refs in (None, []):
        return
    if not isinstance(refs, list):
        raise errors.invalid_property_value(prop, refs)
    if len(refs) > MAX_POOL_REFERENCES:
        raise errors.invalid_property_value(
            prop, len(refs), f"A pool can reference at most {MAX_POOL_REFERENCES} application packages"
        )
    bad: list[str] = []
    for i, ref in enumerate(refs):
        app = ref.get("applicationId") if isinstance(ref, dict) else None
        if not isinstance(app, str) or not app:
            raise errors.missing_required_property(f"{prop}[{i}].applicationId")
        if resolve(tx, ref) is None:
            bad.append(app)
    if bad:
        raise errors.invalid_application_package_references(bad)


def pool_packages(ctx: Ctx, node_id: str) -> Body:
    """What a joining node installs: its pool's references, resolved, and the ones that cannot be."""
    with ctx.store.tx() as tx:
        node = tx.get(schema.nodes, id=node_id)
        if node is None:
            raise errors.node_not_found()
        pool = tx.get(schema.pools, key=node["pool_key"])
        refs = list((pool or {"body": {}})["body"].get("applicationPackageReferences") or [])
        packages, failed = [], []
        for ref in refs:
            r = resolve(tx, ref)
            if r is None:
                failed.append({"applicationId": ref.get("applicationId"), "version": ref.get("version")})
            else:
                packages.append(r.to_wire())
    return {"packages": packages, "errors": failed}


def resolve_one(ctx: Ctx, app_id: str, version: str | None) -> Body:
    with ctx.store.tx() as tx:
        r = resolve(tx, {"applicationId": app_id, "version": version})
    if r is None:
        raise errors.application_package_not_found()
    return r.to_wire()


def package_file(ctx: Ctx, app_id: str, version: str) -> tuple[Path, Resolved]:
    """The stored zip of one version, for an agent."""
    with ctx.store.tx() as tx:
        r = resolve(tx, {"applicationId": app_id, "version": version})
    if r is None:
        raise errors.application_package_not_found()
    return packages_root(ctx) / key_of(r.application_id) / r.file, r


# --- management ----------------------------------------------------------------------------------------------


def list_managed(ctx: Ctx) -> list[Body]:
    with ctx.store.tx() as tx:
        rows = tx.select(schema.applications, None, order_by=[schema.applications.c.key])
    return [managed_view(r["body"]) for r in rows]


def get_managed(ctx: Ctx, app_id: str) -> Body:
    with ctx.store.tx() as tx:
        row = tx.get(schema.applications, key=key_of(check_app_id(app_id, "applicationId")))
    if row is None:
        raise errors.application_not_found()
    return managed_view(row["body"])


def _apply_settings(body: Body, spec: Body) -> None:
    if "displayName" in spec:
        name = spec["displayName"]
        if name is not None and (not isinstance(name, str) or len(name) > 1024):
            raise errors.invalid_property_value("displayName", name, "At most 1024 characters")
        if name:
            body["displayName"] = name
        else:
            body.pop("displayName", None)
    if "allowUpdates" in spec:
        if not isinstance(spec["allowUpdates"], bool):
            raise errors.invalid_property_value("allowUpdates", spec["allowUpdates"])
        body["allowUpdates"] = spec["allowUpdates"]
    if "defaultVersion" in spec:
        dv = spec["defaultVersion"]
        if dv in (None, ""):
            body.pop("defaultVersion", None)
        else:
            check_version(dv, "defaultVersion")
            v = (body.get("versions") or {}).get(str(dv).lower())
            if v is None or v.get("state") != "active":
                raise errors.invalid_property_value(
                    "defaultVersion", dv, "The application has no package with this version"
                )
            body["defaultVersion"] = v["version"]


def _new_row(ctx: Ctx, app_id: str) -> Row:
    _, now_text, _ = ctx.stamp()
    return {
        "key": key_of(app_id),
        "id": app_id,
        "creation_time": now_text,
        "body": {"id": app_id, "versions": {}},
    }


def _write(ctx: Ctx, tx: Tx, row: Row, created: bool) -> Body:
    _, now_text, etag = ctx.stamp()
    body: Body = row["body"]
    body["eTag"], body["lastModified"] = etag, now_text
    values = {"etag": etag, "last_modified": now_text, "body": body}
    if created:
        try:
            tx.insert(schema.applications, dict(row, **values))
        except DuplicateKey:  # created by a concurrent request: the caller retries on the row
            raise errors.server_busy() from None
    else:
        tx.update(schema.applications, values, key=row["key"])
    return body


def put_application(ctx: Ctx, app_id: str, spec: Body) -> tuple[Body, bool]:
    """Create the application, or update its settings; returns its view and whether it was created."""
    check_app_id(app_id)
    with ctx.store.tx() as tx:
        row = tx.get_for_update(schema.applications, key=key_of(app_id))
        created = row is None
        if row is None:
            row = _new_row(ctx, app_id)
        _apply_settings(row["body"], spec)
        return managed_view(_write(ctx, tx, row, created)), created


def patch_application(ctx: Ctx, app_id: str, spec: Body) -> Body:
    check_app_id(app_id)
    with ctx.store.tx() as tx:
        row = tx.get_for_update(schema.applications, key=key_of(app_id))
        if row is None:
            raise errors.application_not_found()
        _apply_settings(row["body"], spec)
        return managed_view(_write(ctx, tx, row, False))


def delete_application(ctx: Ctx, app_id: str) -> None:
    check_app_id(app_id)
    with ctx.store.tx() as tx:
        row = tx.get_for_update(schema.applications, key=key_of(app_id))
        if row is None:
            raise errors.application_not_found()
        tx.delete(schema.applications, key=row["key"])
    folder = packages_root(ctx) / row["key"]
    for v in (row["body"].get("versions") or {}).values():
        _unlink(folder / str(v.get("file", "")))
    with contextlib.suppress(OSError):
        folder.rmdir()


def delete_version(ctx: Ctx, app_id: str, version: str) -> None:
    check_app_id(app_id)
    check_version(version)
    with ctx.store.tx() as tx:
        row = tx.get_for_update(schema.applications, key=key_of(app_id))
        if row is None:
            raise errors.application_not_found()
        body = row["body"]
        gone = (body.get("versions") or {}).pop(version.lower(), None)
        if gone is None:
            raise errors.application_package_not_found()
        if str(body.get("defaultVersion", "")).lower() == version.lower():
            body.pop("defaultVersion", None)
        _write(ctx, tx, row, False)
    _unlink(packages_root(ctx) / row["key"] / str(gone.get("file", "")))


def _unlink(path: Path) -> None:
    if path.name.endswith(".zip"):
        with contextlib.suppress(OSError):
            path.unlink()


async def upload_version(
    ctx: Ctx, app_id: str, version: str, chunks: AsyncIterator[bytes]
) -> tuple[Body, bool]:
    """Store a package version from the request body (a zip, checked before it is kept)."""
    check_app_id(app_id)
    check_version(version)
    root = packages_root(ctx)
    incoming = root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = incoming / f"{secrets.token_hex(8)}.zip"
    digest = hashlib.sha256()
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buf = memoryview(chunk)
                while buf:
                    buf = buf[os.write(fd, buf) :]
        finally:
            os.close(fd)
        if size == 0:
            raise errors.invalid_application_package("The request body is empty; send the package's zip.")
        try:
            await asyncio.to_thread(check_package, tmp)
        except BadPackage as e:
            raise errors.invalid_application_package(e.reason) from None
        sha = digest.hexdigest()
        folder = root / key_of(app_id)
        folder.mkdir(exist_ok=True, mode=0o700)
        name = f"{version.lower()}-{sha[:16]}.zip"
        old_file: str | None = None
        with ctx.store.tx() as tx:
            row = tx.get_for_update(schema.applications, key=key_of(app_id))
            created = row is None
            if row is None:
                row = _new_row(ctx, app_id)
            body = row["body"]
            versions = body.setdefault("versions", {})
            old = versions.get(version.lower())
            if old is not None and not body.get("allowUpdates", True):
                raise errors.application_package_exists()
            if old is not None and old.get("file") != name:
                old_file = str(old.get("file"))
            os.replace(tmp, folder / name)
            _, now_text, _ = ctx.stamp()
            versions[version.lower()] = {
                "version": old["version"] if old is not None else version,
                "state": "active",
                "lastActivationTime": now_text,
                "sha256": sha,
                "size": size,
                "file": name,
            }
            view = managed_view(_write(ctx, tx, row, created))
        if old_file:
            _unlink(folder / old_file)
        return view, old is None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
