"""`az batch node user …` and `az batch node remote-login-settings show` (azure-cli 2.91.0) against a live
server. (azure-cli 2.91.0 has no `az batch certificate` commands any more: certificates are tested with the
azure-batch 14.2.0 client in test_certificates.py.)"""

from __future__ import annotations

import pwd

import pytest

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401 - the az fixture (and its live server)
from tests.support.live import wait_for
from tests.support.raw import Raw, pool_body

pytestmark = pytest.mark.az


def test_az_node_user_and_remote_login(az: Az, uid: str) -> None:  # noqa: F811
    raw = Raw(az.live)
    pool_id = f"azu-{uid}"
    assert raw.post("/pools", pool_body(pool_id, 1)).status_code == 201
    node = wait_for(
        lambda: [n for n in raw.json(f"/pools/{pool_id}/nodes")["value"] if n["state"] == "idle"],
        60,
        0.1,
        "idle",
    )[0]
    name = f"az{uid}"
    try:
        az.run(
            "batch", "node", "user", "create", "--pool-id", pool_id, "--node-id", node["id"],
            "--name", name, "--password", "Pa55word!", "-o", "json",
        )  # fmt: skip
        assert pwd.getpwnam(name).pw_gecos.endswith(node["id"])
        az.run(
            "batch", "node", "user", "reset", "--pool-id", pool_id, "--node-id", node["id"],
            "--user-name", name, "--password", "0ther!pw", "-o", "json",
        )  # fmt: skip
        rl = az.json(
            "batch", "node", "remote-login-settings", "show", "--pool-id", pool_id, "--node-id", node["id"]
        )
        assert rl["remoteLoginPort"] == node["endpointConfiguration"]["inboundEndpoints"][0]["frontendPort"]
        az.run(
            "batch", "node", "user", "delete", "--pool-id", pool_id, "--node-id", node["id"],
            "--user-name", name, "--yes",
        )  # fmt: skip
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    finally:
        raw.delete(f"/pools/{pool_id}")
