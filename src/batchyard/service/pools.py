"""Pool operations: create, read, list, update, resize and delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchyard.models import errors, images, mounts, odata
from batchyard.models.ids import check_id, key_of
from batchyard.models.resources import (
    check_resize_timeout,
    check_user_accounts,
    network_configuration,
    new_pool,
    pool_view,
    refuse_unsupported,
    vm_configuration_defaults,
)
from batchyard.service import autoscale, certificates
from batchyard.service import starttask as start_task
from batchyard.service.applications import check_pool_references
from batchyard.service.common import Body, public, stamp_body
from batchyard.service.context import NO_CONDITIONS, Conditions, Ctx, Written
from batchyard.service.listing import ListQuery, page_rows
from batchyard.store import schema
from batchyard.store.sql import DuplicateKey, Row, Tx


def _item(row: Row) -> Body:
    return pool_view(public(row["body"]))


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    t = schema.pools
    return {
        "id": ColumnMap(t.c.key, casefold=True),
        "state": ColumnMap(t.c.state, casefold=True),
        "allocationState": ColumnMap(t.c.alloc_state, casefold=True),
        "creationTime": ColumnMap(t.c.creation_time),
        "lastModified": ColumnMap(t.c.last_modified),
    }


def _load(tx: Tx, pool_id: str) -> Row:
    row = tx.get_for_update(schema.pools, key=key_of(pool_id))
    if row is None:
        raise errors.pool_not_found()
    return row


def _save(tx: Tx, row: Row, body: Body, ctx: Ctx) -> Written:
    _, now_text, etag = ctx.stamp()
    stamp_body(body, etag, now_text)
    tx.update(
        schema.pools,
        {
            "body": body,
            "etag": etag,
            "last_modified": now_text,
            "state": body["state"],
            "alloc_state": body["allocationState"],
        },
        key=row["key"],
    )
    return Written(etag, now_text, f"/pools/{body['id']}")


def create_pool(ctx: Ctx, spec: Body) -> Written:
    pool_id = check_id(spec.get("id"))
    certificates.check_references(ctx, spec.get("certificateReferences"))
    program = autoscale.check_create(ctx, spec)
    body = new_pool(spec, "")
    start_task.check(body)
    with ctx.store.tx() as tx:
        check_pool_references(tx, body.get("applicationPackageReferences"))
        etag, now_text = insert_pool(ctx, tx, pool_id, body, program)
    ctx.hub.wake_pools()
    return Written(etag, now_text, f"/pools/{pool_id}")


def insert_pool(ctx: Ctx, tx: Tx, pool_id: str, body: Body, program: Any = None) -> tuple[str, str]:
    """Insert a checked pool body (from `new_pool`) inside the caller's transaction (an auto pool is
    created in its job's); returns the new ETag and time."""
    _, now_text, etag = ctx.stamp()
    if "id" not in body:
        body = {"id": pool_id, **body}
    for k in ("stateTransitionTime", "allocationStateTransitionTime", "creationTime"):
        body[k] = now_text
    stamp_body(body, etag, now_text)
    try:
        tx.insert(
            schema.pools,
            {
                "key": key_of(pool_id),
                "id": pool_id,
                "state": "active",
                "alloc_state": "resizing",
                "etag": etag,
                "last_modified": now_text,
                "creation_time": now_text,
                "body": body,
            },
        )
    except DuplicateKey:
        raise errors.pool_exists() from None
    if program is not None:
        row = tx.get_for_update(schema.pools, key=key_of(pool_id))
        assert row is not None
        autoscale.run_now(ctx, tx, row, program)
    return etag, now_text


def _shaper(ctx: Ctx, tx: Tx, expand: list[str] | None) -> Callable[[Row], Body]:
    """The pool body a read returns; with `$expand=stats`, its usage and resource statistics."""
    from batchyard.service import usage

    wanted = [e.lower() for e in expand or []]
    if any(e != "stats" for e in wanted):
        raise errors.invalid_query_parameter("$expand", ",".join(expand or []), "Only stats can be expanded")

    def shape(row: Row) -> Body:
        body = _item(row)
        if wanted:
            body["stats"] = usage.pool_stats(ctx, tx, row, f"/pools/{row['id']}")
        return body

    return shape


def get_pool(
    ctx: Ctx, pool_id: str, cond: Conditions = NO_CONDITIONS, expand: list[str] | None = None
) -> Body:
    with ctx.store.tx() as tx:
        row = tx.get(schema.pools, key=key_of(pool_id))
        if row is None:
            raise errors.pool_not_found()
        cond.check(row, write=False)
        return _shaper(ctx, tx, expand)(row)


def list_pools(ctx: Ctx, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        return page_rows(
            tx, schema.pools, "key", None, q, odata.POOLS, _columns(), _shaper(ctx, tx, q.expand)
        )


def delete_pool(ctx: Ctx, pool_id: str, cond: Conditions) -> None:
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        cond.check(row, write=True)
        begin_delete(ctx, tx, row)
    ctx.hub.wake_pools()


def begin_delete(ctx: Ctx, tx: Tx, row: Row) -> None:
    """Mark a pool `deleting` inside the caller's transaction; the pool manager removes its nodes."""
    body = row["body"]
    if body["state"] != "deleting":
        _, now_text, _ = ctx.stamp()
        body["state"] = "deleting"
        body["stateTransitionTime"] = now_text
        body["allocationState"] = "resizing"
        body["allocationStateTransitionTime"] = now_text
        _save(tx, row, body, ctx)


def _writable(row: Row) -> Body:
    body: Body = row["body"]
    if body["state"] == "deleting":
        raise errors.pool_being_deleted()
    return body


_PATCHABLE = {
    "startTask",
    "metadata",
    "applicationPackageReferences",
    "displayName",
    "targetNodeCommunicationMode",
}
_PATCHABLE_WHEN_EMPTY = {
    "vmSize",
    "enableInterNodeCommunication",
    "virtualMachineConfiguration",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "networkConfiguration",
    "userAccounts",
    "mountConfiguration",
    "upgradePolicy",
    "resourceTags",
    "certificateReferences",
}


def patch_pool(ctx: Ctx, pool_id: str, spec: Body, cond: Conditions) -> Written:
    refuse_unsupported(spec, "pool")
    certificates.check_references(ctx, spec.get("certificateReferences"))
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        cond.check(row, write=True)
        body = _writable(row)
        empty = body.get("currentDedicatedNodes", 0) == 0 and body.get("currentLowPriorityNodes", 0) == 0
        for k, v in spec.items():
            if k in _PATCHABLE_WHEN_EMPTY and not empty:
                raise errors.operation_invalid_for_current_state(
                    f"{k} can be updated only when the pool is empty"
                )
            if k == "networkConfiguration" and v is not None:
                v = network_configuration(v)
            if k == "vmSize" and isinstance(v, str):
                v = v.lower()  # the service reports VM sizes in lower case
            if k == "mountConfiguration" and v is not None:
                v = mounts.check(v)
            if k == "virtualMachineConfiguration" and v is not None:
                images.check_image(v)
                vm_configuration_defaults(v)
            if k in _PATCHABLE or k in _PATCHABLE_WHEN_EMPTY:
                body[k] = v
        if "userAccounts" in spec:
            check_user_accounts(body)
        if "startTask" in spec:
            start_task.check(body)  # applies to nodes at their next boot (decision 0110)
        if "applicationPackageReferences" in spec:
            check_pool_references(tx, spec["applicationPackageReferences"])
        if "taskSchedulingPolicy" in spec:
            fill = str(body["taskSchedulingPolicy"].get("nodeFillType", "spread")).lower()
            body["taskSchedulingPolicy"]["nodeFillType"] = "Pack" if fill == "pack" else "Spread"
            body["taskSchedulingPolicy"].setdefault("jobDefaultOrder", "none")
        return _save(tx, row, body, ctx)


def replace_pool_properties(ctx: Ctx, pool_id: str, spec: Body) -> Written:
    refuse_unsupported(spec, "pool")
    certificates.check_references(ctx, spec.get("certificateReferences"))
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        body = _writable(row)
        for k in ("applicationPackageReferences", "metadata"):
            if k not in spec:
                raise errors.missing_required_property(k)
        check_pool_references(tx, spec["applicationPackageReferences"])
        for k in ("startTask", "applicationPackageReferences", "metadata", "certificateReferences"):
            if k in spec and spec[k] not in (None, []):
                body[k] = spec[k]
            else:
                body.pop(k, None)
        start_task.check(body)  # replaced or removed; nodes see it at their next boot (decision 0110)
        return _save(tx, row, body, ctx)


def resize_pool(ctx: Ctx, pool_id: str, spec: Body, cond: Conditions) -> Written:
    check_resize_timeout(spec.get("resizeTimeout"))  # a bad request is refused before the pool's state
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        cond.check(row, write=True)
        body = _writable(row)
        if body.get("enableAutoScale"):
            raise errors.autoscale_enabled()
        if body["allocationState"] != "steady":
            raise errors.pool_being_resized()
        _, now_text, _ = ctx.stamp()
        for k in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if k in spec:
                v = int(spec[k])
                if v < 0:
                    raise errors.invalid_property_value(k, v)
                body[k] = v
        if "resizeTimeout" in spec:
            body["resizeTimeout"] = spec["resizeTimeout"]
        opt = str(spec.get("nodeDeallocationOption", "requeue")).lower()
        if opt not in ("requeue", "terminate", "taskcompletion", "retaineddata"):
            raise errors.invalid_property_value("nodeDeallocationOption", spec.get("nodeDeallocationOption"))
        body["_deallocation"] = opt
        body["allocationState"] = "resizing"
        body["allocationStateTransitionTime"] = now_text
        body.pop("resizeErrors", None)
        w = _save(tx, row, body, ctx)
    ctx.hub.wake_pools()
    return w


def stop_resize(ctx: Ctx, pool_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        cond.check(row, write=True)
        body = _writable(row)
        if body["allocationState"] == "resizing":
            _, now_text, _ = ctx.stamp()
            body["allocationState"] = "stopping"
            body["allocationStateTransitionTime"] = now_text
            tx.update(schema.pools, {"body": body, "alloc_state": "stopping"}, key=row["key"])
        # the service answers stopresize with the ETag the resize set, unchanged (recorded)
        w = Written(row["etag"], row["last_modified"], f"/pools/{body['id']}")
    ctx.hub.wake_pools()
    return w


def public_pool(body: Body) -> Body:
    return public(body)
