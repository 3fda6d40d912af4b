"""Remote login settings, inbound endpoints, the upload of a node's service logs and node extensions, through the
official SDK (decisions 0132, 0133): answers in the recorded shapes, and the reported endpoints really reach the
node (the forwarding itself is tested end to end in tests/e2e/test_endpoint_forwarding.py)."""

from __future__ import annotations

import datetime
import random
import socket
import uuid
from collections.abc import Iterator

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from tests.support.azurite import Azurite, azurite_server  # noqa: F401 - provides the azurite fixture
from tests.support.batch import IMAGE, SKU, wait_idle_nodes
from tests.support.live import LiveServer, free_port
from tests.support.raw import Raw, assert_error, pool_body


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


def free_range(size: int = 40) -> int:
    """A start port whose `size` ports are all free on this host now."""
    for _ in range(200):
        start = random.randrange(20000, 32000)
        socks = []
        try:
            for p in range(start, start + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


@pytest.fixture(scope="module")
def linux_node(client: BatchClient) -> Iterator[tuple[str, str]]:
    pool_id = f"rl-{uuid.uuid4().hex[:8]}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=1,
        )
    )
    (n,) = wait_idle_nodes(client, pool_id, 1)
    yield pool_id, n.id
    client.begin_delete_pool(pool_id)


def test_remote_login_is_the_ssh_endpoint(client: BatchClient, linux_node: tuple[str, str], raw: Raw) -> None:
    pool_id, node_id = linux_node
    node = client.get_node(pool_id, node_id)
    (ep,) = node.endpoint_configuration.inbound_endpoints
    assert (ep.name, ep.protocol, ep.backend_port) == ("SSHRule.0", "tcp", 22)
    assert ep.frontend_port != 22, "the frontend is the server's forwarder, not the backend port itself"
    rl = client.get_node_remote_login_settings(pool_id, node_id)
    assert (rl.remote_login_ip_address, rl.remote_login_port) == (ep.public_ip_address, ep.frontend_port)
    body = raw.json(f"/pools/{pool_id}/nodes/{node_id}/remoteloginsettings")
    assert list(body) == ["odata.metadata", "remoteLoginIPAddress", "remoteLoginPort"]
    assert body["odata.metadata"].endswith(
        "/$metadata#Microsoft.Azure.Batch.Protocol.Entities.RemoteLoginSettings"
    )
    # the port is really open (the forwarder listens; what answers is the host's sshd, if one runs)
    with socket.create_connection((rl.remote_login_ip_address, rl.remote_login_port), timeout=5):
        pass
    # stable: the same node keeps its port
    assert client.get_node_remote_login_settings(pool_id, node_id).remote_login_port == rl.remote_login_port


def test_nat_pool_endpoints_as_recorded(client: BatchClient, raw: Raw) -> None:
    """The recorded pool: one NAT rule to 3389 from a range at 15000 on a Linux pool; nodes get start+ordinal and
    remote login reports that endpoint. Here the range is a free one."""
    pool_id = f"nat-{uuid.uuid4().hex[:8]}"
    start = free_range()
    nat = m.BatchInboundNatPool(
        name="ruleName",
        protocol="tcp",
        backend_port=3389,
        frontend_port_range_start=start,
        frontend_port_range_end=start + 39,
    )
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=2,
            network_configuration=m.NetworkConfiguration(
                endpoint_configuration=m.BatchPoolEndpointConfiguration(inbound_nat_pools=[nat])
            ),
        )
    )
    try:
        nodes = wait_idle_nodes(client, pool_id, 2)
        seen = {}
        for n in nodes:
            (ep,) = n.endpoint_configuration.inbound_endpoints
            ordinal = int(ep.name.split(".")[1])
            assert ep.name == f"ruleName.{ordinal}"
            assert start <= ep.frontend_port <= start + 39
            assert ep.frontend_port == start + ordinal
            seen[n.id] = ep.frontend_port
            rl = client.get_node_remote_login_settings(pool_id, n.id)
            assert rl.remote_login_port == ep.frontend_port
        assert len(set(seen.values())) == 2
    finally:
        client.begin_delete_pool(pool_id)


def test_bad_nat_pools(raw: Raw, uid: str) -> None:
    def nat(**kw: object) -> dict[str, object]:
        d: dict[str, object] = {
            "name": "r",
            "protocol": "tcp",
            "backendPort": 8080,
            "frontendPortRangeStart": 20000,
            "frontendPortRangeEnd": 20039,
        }
        d.update(kw)
        return d

    at = "networkConfiguration.endpointConfiguration.inboundNATPools"
    cases = [
        ([nat(name="-bad")], f"{at}[0].name"),
        ([nat(name="a" * 78)], f"{at}[0].name"),
        ([nat(backendPort=29876)], f"{at}[0].backendPort"),
        ([nat(backendPort=0)], f"{at}[0].backendPort"),
        ([nat(frontendPortRangeStart=50000, frontendPortRangeEnd=50039)], f"{at}[0].frontendPortRangeStart"),
        ([nat(frontendPortRangeEnd=20010)], f"{at}[0].frontendPortRangeEnd"),
        ([nat(frontendPortRangeStart=65500, frontendPortRangeEnd=65535)], f"{at}[0].frontendPortRangeEnd"),
        (
            [
                nat(),
                nat(name="s", backendPort=8081, frontendPortRangeStart=20020, frontendPortRangeEnd=20100),
            ],
            f"{at}[1].frontendPortRangeStart",
        ),
        ([nat(), nat(name="R", frontendPortRangeStart=21000, frontendPortRangeEnd=21039)], f"{at}[1].name"),
        (
            [nat(), nat(name="s", frontendPortRangeStart=21000, frontendPortRangeEnd=21039)],
            f"{at}[1].backendPort",
        ),
        (
            [
                nat(
                    name=f"n{i}",
                    backendPort=8000 + i,
                    frontendPortRangeStart=20000 + 100 * i,
                    frontendPortRangeEnd=20039 + 100 * i,
                )
                for i in range(6)
            ],
            at,
        ),
    ]
    for nats, prop in cases:
        body = pool_body(
            f"badnat-{uid}", networkConfiguration={"endpointConfiguration": {"inboundNATPools": nats}}
        )
        assert_error(raw.post("/pools", body), 400, "InvalidPropertyValue", PropertyName=prop)
    assert raw.get(f"/pools/badnat-{uid}").status_code == 404


def test_remote_login_bad_input(raw: Raw, linux_node: tuple[str, str]) -> None:
    pool_id, node_id = linux_node
    assert_error(raw.get(f"/pools/{pool_id}/nodes/nosuchnode/remoteloginsettings"), 404, "NodeNotFound")
    assert_error(raw.get(f"/pools/nosuchpool/nodes/{node_id}/remoteloginsettings"), 404, "PoolNotFound")
    assert_error(
        raw.delete(f"/pools/{pool_id}/nodes/{node_id}/remoteloginsettings"), 405, "UnsupportedHttpVerb"
    )


def test_node_extensions_as_for_a_pool_without_extensions(
    client: BatchClient, linux_node: tuple[str, str], raw: Raw
) -> None:
    pool_id, node_id = linux_node
    assert list(client.list_node_extensions(pool_id, node_id)) == []
    body = raw.json(f"/pools/{pool_id}/nodes/{node_id}/extensions")
    assert body["value"] == [] and body["odata.metadata"].endswith("/$metadata#extensions")
    with pytest.raises(HttpResponseError) as ei:
        client.get_node_extension(pool_id, node_id, "batchNodeExtension")
    assert ei.value.status_code == 404
    assert_error(raw.get(f"/pools/{pool_id}/nodes/nosuch/extensions"), 404, "NodeNotFound")
    assert_error(raw.get(f"/pools/nosuch/nodes/{node_id}/extensions/x"), 404, "PoolNotFound")
    assert_error(
        raw.get(f"/pools/{pool_id}/nodes/{node_id}/extensions", params={"maxresults": "0"}),
        400,
        "OutOfRangeQueryParameterValue",
    )
    # and a pool asking for extensions is still refused: they cannot be installed here (decision 0062)
    vm = {
        "imageReference": dict(raw_image()),
        "nodeAgentSKUId": SKU,
        "extensions": [
            {"name": "secretext", "type": "KeyVaultForLinux", "publisher": "Microsoft.Azure.KeyVault"}
        ],
    }
    r = raw.post("/pools", pool_body(f"ext-{uuid.uuid4().hex[:6]}", virtualMachineConfiguration=vm))
    assert_error(r, 501, "NotImplemented")


def raw_image() -> dict[str, str]:
    return {"publisher": IMAGE.publisher, "offer": IMAGE.offer, "sku": IMAGE.sku}


def test_upload_service_logs_to_azurite(
    client: BatchClient, linux_node: tuple[str, str], azurite: Azurite, raw: Raw
) -> None:
    pool_id, node_id = linux_node
    container = f"logs{uuid.uuid4().hex[:8]}"
    azurite.create_container(container)
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    r = raw.post(
        f"/pools/{pool_id}/nodes/{node_id}/uploadbatchservicelogs",
        {"containerUrl": azurite.container_sas_url(container, "w"), "startTime": since.isoformat()},
    )
    assert r.status_code == 200, r.text()
    body = r.json()
    assert list(body) == ["odata.metadata", "virtualDirectoryName", "numberOfFilesUploaded"]
    assert body["odata.metadata"].endswith(
        "/$metadata#Microsoft.Azure.Batch.Protocol.Entities.UploadBatchServiceLogsResult"
    )
    tag, pool, node, rid = body["virtualDirectoryName"].split("/")
    assert tag.startswith("batch-") and (pool, node, rid) == (pool_id, node_id, r.headers["request-id"])
    assert body["numberOfFilesUploaded"] >= 1
    names = azurite.blob_names(container)
    assert len(names) == body["numberOfFilesUploaded"]
    assert all(n.startswith(body["virtualDirectoryName"] + "/") for n in names)
    assert f"{body['virtualDirectoryName']}/agent.log" in names
    # the SDK's own call and result model
    res = client.upload_node_logs(
        pool_id,
        node_id,
        m.UploadBatchServiceLogsOptions(
            container_url=azurite.container_sas_url(container, "w"), start_time=since
        ),
    )
    assert res.number_of_files_uploaded == body["numberOfFilesUploaded"]
    assert res.virtual_directory_name != body["virtualDirectoryName"]
    # nothing written since the start time: nothing uploaded, still a 200
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    res = client.upload_node_logs(
        pool_id,
        node_id,
        m.UploadBatchServiceLogsOptions(
            container_url=azurite.container_sas_url(container, "w"), start_time=later
        ),
    )
    assert res.number_of_files_uploaded == 0


def test_upload_service_logs_failures(linux_node: tuple[str, str], azurite: Azurite, raw: Raw) -> None:
    pool_id, node_id = linux_node
    path = f"/pools/{pool_id}/nodes/{node_id}/uploadbatchservicelogs"
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).isoformat()
    dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1/nothere?sv=x&sig=secret"
    body = assert_error(
        raw.post(path, {"containerUrl": dead, "startTime": since}),
        400,
        "InvalidPropertyValue",
        PropertyName="containerUrl",
    )
    values = {v["key"]: v["value"] for v in body["values"]}
    assert "could not upload" in values["Reason"]
    assert "secret" not in str(body), "the SAS never appears in an error"
    missing = azurite.container_sas_url(f"gone{uuid.uuid4().hex[:6]}", "w")
    assert_error(
        raw.post(path, {"containerUrl": missing, "startTime": since}),
        400,
        "InvalidPropertyValue",
        PropertyName="containerUrl",
    )
    read_only = f"ro{uuid.uuid4().hex[:6]}"
    azurite.create_container(read_only)
    assert_error(
        raw.post(path, {"containerUrl": azurite.container_sas_url(read_only, "r"), "startTime": since}),
        400,
        "InvalidPropertyValue",
        PropertyName="containerUrl",
    )
    assert azurite.blob_names(read_only) == []
    assert_error(
        raw.post(path, {"containerUrl": "ftp://x/y", "startTime": since}),
        400,
        "InvalidPropertyValue",
        PropertyName="containerUrl",
    )
    assert_error(
        raw.post(path, {"startTime": since}), 400, "MissingRequiredProperty", PropertyName="containerUrl"
    )
    assert_error(
        raw.post(path, {"containerUrl": azurite.container_sas_url(read_only, "w")}),
        400,
        "MissingRequiredProperty",
        PropertyName="startTime",
    )
    assert_error(
        raw.post(path, {"containerUrl": azurite.container_sas_url(read_only, "w"), "startTime": "yesterday"}),
        400,
        "InvalidPropertyValue",
        PropertyName="startTime",
    )
    end_before = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)).isoformat()
    assert_error(
        raw.post(
            path,
            {
                "containerUrl": azurite.container_sas_url(read_only, "w"),
                "startTime": since,
                "endTime": end_before,
            },
        ),
        400,
        "InvalidPropertyValue",
        PropertyName="endTime",
    )
    assert_error(
        raw.post(
            path,
            {
                "containerUrl": azurite.container_sas_url(read_only, "w"),
                "startTime": since,
                "identityReference": {"resourceId": "/x"},
            },
        ),
        501,
        "NotImplemented",
    )
    assert_error(
        raw.post(
            f"/pools/{pool_id}/nodes/nosuch/uploadbatchservicelogs",
            {"containerUrl": azurite.container_sas_url(read_only, "w"), "startTime": since},
        ),
        404,
        "NodeNotFound",
    )


def test_legacy_rdp_file(raw: Raw, linux_node: tuple[str, str]) -> None:
    """`GET …/rdp` exists up to 2024-02-01.19.0 for cloud service pools only (all retired); gone afterwards."""
    pool_id, node_id = linux_node
    old = "2024-02-01.19.0"
    r = raw.get(f"/pools/{pool_id}/nodes/{node_id}/rdp", api_version=old)
    assert_error(r, 409, "OperationNotValidOnPool")
    assert_error(raw.get(f"/pools/{pool_id}/nodes/nosuch/rdp", api_version=old), 404, "NodeNotFound")
    assert_error(
        raw.get(f"/pools/{pool_id}/nodes/{node_id}/rdp", api_version="2024-07-01.20.0"), 400, "InvalidUri"
    )
    assert_error(raw.get(f"/pools/{pool_id}/nodes/{node_id}/rdp"), 400, "InvalidUri")
