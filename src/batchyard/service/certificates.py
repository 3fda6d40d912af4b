"""Account certificates: add, get, list, delete and cancel a failed deletion (decision 0130).

A deleted certificate stays `deleting` for a moment, as on the service, and is then gone. Pools never hold
references to certificates here (they are refused, see `check_references`), so a deletion never fails and
`deletefailed` (the only state canceldelete acts on) is not reached.
"""

from __future__ import annotations

import datetime
from typing import Any

from batchyard.models import certificates as certs
from batchyard.models import errors, odata
from batchyard.models.certificates import CertificateState
from batchyard.models.clock import parse_time
from batchyard.service.common import Body
from batchyard.service.context import Ctx, Written
from batchyard.service.listing import ListQuery, page_rows
from batchyard.store import schema
from batchyard.store.sql import DuplicateKey, Row, Tx

#: How long a deleted certificate is listed as `deleting` before it is gone.
DELETING_FOR = datetime.timedelta(seconds=1)


def _item(row: Row) -> Body:
    body = dict(row["body"])
    body["_etag"], body["_lastModified"] = row["etag"], row["last_modified"]
    return body


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    t = schema.certificates
    return {
        "state": ColumnMap(t.c.state, casefold=True),
        "stateTransitionTime": ColumnMap(t.c.state_transition_time),
    }


def _purge(ctx: Ctx, tx: Tx) -> None:
    """Finish deletions whose `deleting` moment has passed (done lazily by every certificate operation)."""
    cutoff = ctx.clock() - DELETING_FOR
    for r in tx.select(schema.certificates, schema.certificates.c.state == CertificateState.DELETING.value):
        if parse_time(r["state_transition_time"]) <= cutoff:
            tx.delete(schema.certificates, key=r["key"])


def create_certificate(ctx: Ctx, spec: Body) -> Written:
    _, now_text, etag = ctx.stamp()
    body = certs.new_certificate(spec, now_text)
    key = certs.key_of("sha1", body["thumbprint"])
    with ctx.store.tx() as tx:
        _purge(ctx, tx)
        old = tx.get(schema.certificates, key=key)
        if old is not None:
            if old["state"] == CertificateState.DELETING.value:
                raise errors.certificate_being_deleted()
            raise errors.certificate_exists()
        try:
            tx.insert(
                schema.certificates,
                {
                    "key": key,
                    "state": body["state"],
                    "state_transition_time": now_text,
                    "etag": etag,
                    "last_modified": now_text,
                    "body": body,
                },
            )
        except DuplicateKey:
            raise errors.certificate_exists() from None
    # the service's DataServiceId spells the key names capitalised (recorded)
    return Written(etag, now_text, f"/certificates(ThumbprintAlgorithm=sha1,Thumbprint={body['thumbprint']})")


def _load(ctx: Ctx, tx: Tx, algorithm: str, thumbprint: str) -> Row:
    alg, tp = certs.check_path(algorithm, thumbprint)
    _purge(ctx, tx)
    row = tx.get(schema.certificates, key=certs.key_of(alg, tp))
    if row is None:
        raise errors.certificate_not_found()
    return row


def get_certificate(ctx: Ctx, algorithm: str, thumbprint: str) -> Body:
    with ctx.store.tx() as tx:
        return _item(_load(ctx, tx, algorithm, thumbprint))


def list_certificates(ctx: Ctx, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        _purge(ctx, tx)
        return page_rows(tx, schema.certificates, "key", None, q, odata.CERTIFICATES, _columns(), _item)


def _move(ctx: Ctx, tx: Tx, row: Row, state: CertificateState) -> None:
    body = dict(row["body"])
    certs.check_transition(body["state"], state.value)
    _, now_text, etag = ctx.stamp()
    body["previousState"] = body["state"]
    body["previousStateTransitionTime"] = body["stateTransitionTime"]
    body["state"] = state.value
    body["stateTransitionTime"] = now_text
    if state is CertificateState.ACTIVE:
        body.pop("deleteCertificateError", None)
    tx.update(
        schema.certificates,
        {
            "state": state.value,
            "state_transition_time": now_text,
            "etag": etag,
            "last_modified": now_text,
            "body": body,
        },
        key=row["key"],
    )


def delete_certificate(ctx: Ctx, algorithm: str, thumbprint: str) -> None:
    with ctx.store.tx() as tx:
        row = _load(ctx, tx, algorithm, thumbprint)
        if row["state"] == CertificateState.DELETING.value:
            raise errors.certificate_being_deleted()
        _move(ctx, tx, row, CertificateState.DELETING)


def cancel_deletion(ctx: Ctx, algorithm: str, thumbprint: str) -> None:
    with ctx.store.tx() as tx:
        row = _load(ctx, tx, algorithm, thumbprint)
        if row["state"] == CertificateState.ACTIVE.value:
            raise errors.certificate_state_active()
        if row["state"] == CertificateState.DELETING.value:
            raise errors.certificate_being_deleted()
        _move(ctx, tx, row, CertificateState.ACTIVE)


def check_references(ctx: Ctx, refs: object) -> None:
    """A pool's `certificateReferences` (older api-versions): unknown certificates get the service's 409;
    known ones are refused with 501, because local nodes do not install certificates (decision 0130)."""
    if refs in (None, []):
        return
    if not isinstance(refs, list):
        raise errors.invalid_property_value("certificateReferences", "(not a list)")
    missing: list[str] = []
    with ctx.store.tx() as tx:
        _purge(ctx, tx)
        for ref in refs:
            if not isinstance(ref, dict):
                raise errors.invalid_property_value("certificateReferences", "(not an object)")
            name = certs.reference_name(ref)
            row = tx.get(schema.certificates, key=name)
            if row is None or row["state"] != CertificateState.ACTIVE.value:
                missing.append(name)
    if missing:
        raise errors.invalid_certificate_references(missing)
    raise errors.not_implemented(
        "certificateReferences on pools (local nodes do not install account certificates, which Azure "
        "retired on 29 February 2024; pass secrets with resource files or environment settings)"
    )
