"""Node users (remote-login accounts on a compute node): validation and the record kept in the node body.

The accounts themselves are made on the host by the caller (`pools.hostusers`, decision 0131); this module
checks the request against the node and its pool, and keeps `_users` in the node body so that a restarted
server, a removed node and a repeated request all know which accounts belong to which node.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from batchyard.models import errors, images
from batchyard.models.clock import format_time
from batchyard.models.ids import key_of
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

#: Linux limits a login name to 32 characters; Windows (and the pool's user accounts) to 20.
MAX_NAME = {images.LINUX: 32, images.WINDOWS: 20}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SSH_KEY = re.compile(
    r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
)
MAX_PASSWORD = 256
MAX_SSH_KEY = 16 * 1024
#: A node user expires a day after it is created or updated unless told otherwise (the service's default).
DEFAULT_LIFETIME = datetime.timedelta(days=1)
_UP = ("idle", "running")


@dataclass(frozen=True)
class UserSpec:
    """A validated create/replace request: what the host account must look like."""

    name: str
    is_admin: bool
    expiry: datetime.datetime
    password: str | None
    ssh_public_key: str | None

    def record(self) -> Body:
        """What the node body keeps (never the password)."""
        return {
            "isAdmin": self.is_admin,
            "expiryTime": format_time(self.expiry),
            "hasPassword": self.password is not None,
            "hasSshPublicKey": self.ssh_public_key is not None,
        }


@dataclass(frozen=True)
class Target:
    pool_id: str
    node_id: str
    os_type: str


def _node(tx: Tx, pool_id: str, node_id: str) -> tuple[Row, Row]:
    pool = tx.get(schema.pools, key=key_of(pool_id))
    if pool is None:
        raise errors.pool_not_found()
    node = tx.get(schema.nodes, id=node_id)
    if node is None or node["pool_key"] != key_of(pool_id):
        raise errors.node_not_found()
    return pool, node


def target(ctx: Ctx, pool_id: str, node_id: str, need_up: bool = True) -> Target:
    """The node a request is about; 404 if absent, 409 when it is not up (node users need idle/running)."""
    with ctx.store.tx() as tx:
        pool, node = _node(tx, pool_id, node_id)
    if need_up and node["state"] not in _UP:
        raise errors.node_not_ready(node["state"])
    vmc = pool["body"].get("virtualMachineConfiguration") or {}
    return Target(pool["id"], node["id"], images.os_type_of(str(vmc.get("nodeAgentSKUId", ""))))


def users_of(ctx: Ctx, node_id: str) -> dict[str, Body]:
    with ctx.store.tx() as tx:
        row = tx.get(schema.nodes, id=node_id)
    return dict((row["body"].get("_users") or {}) if row else {})


def check_name(name: object, os_type: str) -> str:
    if not isinstance(name, str) or not name:
        raise errors.missing_required_property("name")
    if len(name) > MAX_NAME[os_type]:
        raise errors.invalid_property_value("name", name, f"The name exceeds {MAX_NAME[os_type]} characters")
    if not _NAME.match(name) or name.isdigit():
        raise errors.invalid_property_value(
            "name",
            name,
            "A user name starts with a letter or '_' and holds only letters, digits, '_', '.' and '-'",
        )
    return name


def _expiry(ctx: Ctx, value: object) -> datetime.datetime:
    now = ctx.clock()
    if value is None:
        return now + DEFAULT_LIFETIME
    if not isinstance(value, str):
        raise errors.invalid_property_value("expiryTime", value)
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.invalid_property_value("expiryTime", value) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    if when <= now:
        raise errors.invalid_property_value("expiryTime", value, "The expiry time is in the past")
    return when


def check_spec(ctx: Ctx, t: Target, name: str, spec: Body, is_admin: bool) -> UserSpec:
    """A create or replace request, checked for the node's operating system."""
    password = spec.get("password")
    key = spec.get("sshPublicKey")
    if password is not None:
        if not isinstance(password, str) or not password:
            raise errors.invalid_property_value("password", "", "The password is empty")
        if len(password) > MAX_PASSWORD or any(c in password for c in ":\r\n\x00"):
            raise errors.invalid_property_value(
                "password",
                "(hidden)",
                f"A password has at most {MAX_PASSWORD} characters and no ':' or line breaks",
            )
    if key is not None:
        if t.os_type == images.WINDOWS:
            raise errors.invalid_property_value(
                "sshPublicKey", "(set)", "An SSH public key can be given only for Linux nodes"
            )
        if not isinstance(key, str) or len(key) > MAX_SSH_KEY or not _SSH_KEY.match(key.strip()):
            raise errors.invalid_property_value(
                "sshPublicKey",
                "(key)",
                "The key is not one OpenSSH public key line (e.g. 'ssh-ed25519 AAAA…')",
            )
        key = key.strip()
    if t.os_type == images.WINDOWS and password is None:
        raise errors.missing_required_property("password")
    return UserSpec(name, is_admin, _expiry(ctx, spec.get("expiryTime")), password, key)


def record(ctx: Ctx, node_id: str, name: str, rec: Body | None) -> bool:
    """Keep (or with `rec=None` forget) a node user in the node body; False if the node is gone."""
    with ctx.store.tx() as tx:
        row = tx.get(schema.nodes, id=node_id)
        if row is None:
            return False
        body = row["body"]
        users: dict[str, Any] = dict(body.get("_users") or {})
        if rec is None:
            users.pop(name, None)
        else:
            users[name] = rec
        if users:
            body["_users"] = users
        else:
            body.pop("_users", None)
        tx.update(schema.nodes, {"body": body}, id=node_id)
    return True


def recorded_accounts(ctx: Ctx) -> dict[str, set[str]]:
    """Node id -> the node users recorded for it (what the host may keep; the rest is swept)."""
    with ctx.store.tx() as tx:
        rows = tx.select(schema.nodes, columns=["id", "body"])
    return {r["id"]: set((r["body"].get("_users") or {}).keys()) for r in rows}
