"""Issue 8: accept what Azure accepts and answer the shapes it answers (pools, images, nodes, counts, routes).

Fixtures here are written from what the production recordings show (image names the official tests create
pools with, the recorded error texts and node endpoint shapes); the recordings themselves are not copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body

pytestmark = pytest.mark.slow

WINDOWS_AGENT = "batch.node.windows amd64"
CERT = "/certificates(thumbprintAlgorithm=sha1,thumbprint=cff2ab63c8c955aaf71989efa641b906558d9fb7)"


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield Raw(live)


def _vm(publisher: str, offer: str, sku: str, agent: str) -> dict[str, Any]:
    return {
        "imageReference": {"publisher": publisher, "offer": offer, "sku": sku},
        "nodeAgentSKUId": agent,
    }


def _windows_pool(client: BatchClient, pool_id: str, nodes: int) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="STANDARD_D1_v2",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=m.BatchVmImageReference(
                    publisher="MicrosoftWindowsServer", offer="WindowsServer", sku="2019-datacenter-smalldisk"
                ),
                node_agent_sku_id=WINDOWS_AGENT,
            ),
            target_dedicated_nodes=nodes,
        )
    )


# --- pools without a target -----------------------------------------------------------------------------


def test_pool_without_targets_is_an_empty_pool(client: BatchClient, raw: Raw, uid: str) -> None:
    pool_id = f"empty-{uid}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=m.BatchVmImageReference(
                    publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
                ),
                node_agent_sku_id="batch.node.ubuntu 22.04",
            ),
        )
    )
    pool = wait_for(lambda: (p := client.get_pool(pool_id)).allocation_state == "steady" and p, 30)
    assert pool.target_dedicated_nodes == 0 and pool.target_low_priority_nodes == 0
    assert pool.current_dedicated_nodes == 0 and pool.current_low_priority_nodes == 0
    body = raw.json(f"/pools/{pool_id}")
    assert "currentNodeCommunicationMode" not in body  # the service reports it only once nodes exist
    assert "networkConfiguration" not in body  # nor a network configuration nobody asked for


# --- images ---------------------------------------------------------------------------------------------


def test_supported_images_list_windows_and_end_of_life(client: BatchClient, raw: Raw) -> None:
    images = list(client.list_supported_images())
    windows = [i for i in images if i.os_type == "windows"]
    assert windows and {i.node_agent_sku_id for i in windows} == {WINDOWS_AGENT}
    assert any(i.batch_support_end_of_life is not None for i in windows)
    assert {i.os_type for i in images} == {"linux", "windows"}
    containers = [i for i in windows if i.capabilities]
    assert containers and all("DockerCompatible" in i.capabilities for i in containers)
    only = list(client.list_supported_images(filter="osType eq 'windows'"))
    assert len(only) == len(windows)
    for img in raw.json("/supportedimages")["value"]:
        assert img.get("capabilities", ["x"]) != [], img  # the service omits an empty capability list


@pytest.mark.parametrize(
    "publisher,offer,sku,agent",
    [
        ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter-smalldisk", WINDOWS_AGENT),
        ("MicrosoftWindowsServer", "WindowsServer", "2019-datacenter-smalldisk", WINDOWS_AGENT),
        ("microsoftwindowsserver", "windowsserver", "2022-datacenter", WINDOWS_AGENT),
        ("microsoftwindowsserver", "windowsserver", "2022-datacenter-g2", WINDOWS_AGENT),
        ("canonical", "0001-com-ubuntu-server-focal", "20_04-lts", "batch.node.ubuntu 20.04"),
        ("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 22.04"),
        ("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04"),
    ],
)
def test_images_the_official_tests_use_are_accepted(
    raw: Raw, uid: str, publisher: str, offer: str, sku: str, agent: str
) -> None:
    pool_id = f"img-{uid}"
    body = {
        "id": pool_id,
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": _vm(publisher, offer, sku, agent),
    }
    r = raw.post("/pools", body)
    assert r.status_code == 201, r.text()
    got = raw.json(f"/pools/{pool_id}")["virtualMachineConfiguration"]["imageReference"]
    assert got == {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"}
    assert raw.delete(f"/pools/{pool_id}").status_code == 202


@pytest.mark.parametrize(
    "publisher,offer,sku,agent",
    [
        ("Canonical", "UbuntuServer", "18.04-LTS", "batch.node.ubuntu 18.04"),
        ("Canonical", "UbuntuServer", "16.04.0-LTS", "batch.node.ubuntu 16.04"),
        ("MicrosoftWindowsServer", "WindowsServer", "2012-R2-Datacenter", WINDOWS_AGENT),
        ("a", "b", "c", WINDOWS_AGENT),
    ],
)
def test_retired_and_unknown_images_get_the_services_error(
    raw: Raw, uid: str, publisher: str, offer: str, sku: str, agent: str
) -> None:
    body = {
        "id": f"old-{uid}",
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": _vm(publisher, offer, sku, agent),
    }
    err = assert_error(
        raw.post("/pools", body),
        400,
        "InvalidPropertyValue",
        PropertyName="imageReference",
        Reason=f"The specified imageReference with publisher {publisher} offer {offer} sku {sku} is not supported.",
    )
    assert "PropertyValue" not in {v["key"] for v in err["values"]}
    assert raw.get(f"/pools/old-{uid}").status_code == 404


def test_image_with_another_agent_sku_is_refused(raw: Raw, uid: str) -> None:
    vm = _vm("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", WINDOWS_AGENT)
    body = {"id": f"mix-{uid}", "vmSize": "standard_d2s_v3", "virtualMachineConfiguration": vm}
    assert_error(raw.post("/pools", body), 400, "InvalidPropertyValue", PropertyName="nodeAgentSKUId")


def test_cloud_service_pools_are_retired(raw: Raw, uid: str) -> None:
    body = {
        "id": f"csc-{uid}",
        "vmSize": "small",
        "cloudServiceConfiguration": {"osFamily": "4", "osVersion": "*"},
    }
    assert_error(
        raw.post("/pools", body, api_version="2024-02-01.19.0"),
        400,
        "InvalidPropertyValue",
        PropertyName="cloudServiceConfiguration",
    )


# --- Windows pools run here -------------------------------------------------------------------------------


def test_windows_pool_node_runs_on_this_host(client: BatchClient, raw: Raw, uid: str) -> None:
    pool_id, job_id = f"win-{uid}", f"winjob-{uid}"
    _windows_pool(client, pool_id, 1)
    node = wait_idle_nodes(client, pool_id, 1)[0]
    ep = node.endpoint_configuration.inbound_endpoints
    assert [(e.name, e.protocol, e.backend_port) for e in ep] == [("SSHRule.0", "tcp", 3389)]  # RDP
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="cmd", command_line="cmd /c echo hello"))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="sh", command_line="/bin/sh -c 'echo hello'"))
    t = wait_task_state(client, job_id, "cmd", "completed")
    # a Windows-only program is a program this node cannot find: the agent's CommandProgramNotFound
    assert t.execution_info.result == "failure"
    assert t.execution_info.exit_code is None
    fi = t.execution_info.failure_info
    assert (fi.category, fi.code) == ("usererror", "CommandProgramNotFound")
    assert fi.message == "The specified command program is not found."
    sh = wait_task_state(client, job_id, "sh", "completed")
    assert sh.execution_info.exit_code == 0  # the node is this (Linux) host
    recent = wait_for(lambda: client.get_node(pool_id, node.id).recent_tasks, 30, what="recentTasks")
    assert sorted(r.task_id for r in recent) == ["cmd", "sh"]
    for r in recent:
        assert r.job_id == job_id and r.task_state == "completed"
        assert r.task_url.endswith(f"/jobs/{job_id}/tasks/{r.task_id}") and r.task_url.startswith("http")
    assert {r.task_id: r.execution_info.result for r in recent} == {"cmd": "failure", "sh": "success"}
    listed = raw.json(f"/pools/{pool_id}/nodes")["value"][0]["recentTasks"]
    assert [t["taskId"] for t in listed] == [r.task_id for r in recent]
    raw.delete(f"/jobs/{job_id}")
    raw.delete(f"/pools/{pool_id}")


# --- node shape -------------------------------------------------------------------------------------------


def test_linux_node_shape(client: BatchClient, raw: Raw, uid: str) -> None:
    pool_id = f"node-{uid}"
    create_pool(client, pool_id, nodes=2)
    wait_idle_nodes(client, pool_id, 2)
    nodes = raw.json(f"/pools/{pool_id}/nodes")["value"]
    assert all("recentTasks" not in n for n in nodes)  # absent until a task has run there
    assert all(n["nodeAgentInfo"]["lastUpdateTime"] for n in nodes)
    names = sorted(n["endpointConfiguration"]["inboundEndpoints"][0]["name"] for n in nodes)
    assert names == ["SSHRule.0", "SSHRule.1"]
    for n in nodes:
        (e,) = n["endpointConfiguration"]["inboundEndpoints"]
        assert set(e) == {"name", "protocol", "publicIPAddress", "publicFQDN", "frontendPort", "backendPort"}
        assert (e["protocol"], e["backendPort"]) == ("tcp", 22)
        assert e["frontendPort"] != 22  # the server's forwarder to the node's port 22 (decision 0132)
        assert e["publicIPAddress"] == "127.0.0.1"  # the server's address (it listens on 127.0.0.1)
        ref = n["virtualMachineInfo"]["imageReference"]
        assert ref["exactVersion"] == "latest" and ref["version"] == "latest"
        # nodes went creating/starting -> idle, yet the service's node model has no state history
        assert "previousState" not in n and "previousStateTransitionTime" not in n
    one = raw.json(f"/pools/{pool_id}/nodes/{nodes[0]['id']}")
    assert one["endpointConfiguration"] == nodes[0]["endpointConfiguration"]
    pool = raw.json(f"/pools/{pool_id}")
    assert pool["currentNodeCommunicationMode"] == "simplified"
    raw.delete(f"/pools/{pool_id}")


def test_nat_pool_endpoints_and_network_defaults(client: BatchClient, raw: Raw, uid: str) -> None:
    pool_id = f"nat-{uid}"
    nat = {
        "name": "TestEndpointConfig",
        "protocol": "udp",
        "backendPort": 64444,
        "frontendPortRangeStart": 60000,
        "frontendPortRangeEnd": 61000,
        "networkSecurityGroupRules": [{"priority": 150, "access": "allow", "sourceAddressPrefix": "*"}],
    }
    body = pool_body(pool_id, 1, networkConfiguration={"endpointConfiguration": {"inboundNATPools": [nat]}})
    assert raw.post("/pools", body).status_code == 201
    net = raw.json(f"/pools/{pool_id}")["networkConfiguration"]
    assert net["dynamicVNetAssignmentScope"] == "none" and net["enableAcceleratedNetworking"] is False
    (got,) = net["endpointConfiguration"]["inboundNATPools"]
    assert got["networkSecurityGroupRules"][0]["sourcePortRanges"] == ["*"]
    wait_idle_nodes(client, pool_id, 1)
    (node,) = raw.json(f"/pools/{pool_id}/nodes")["value"]
    (e,) = node["endpointConfiguration"]["inboundEndpoints"]  # the NAT pool replaces the SSH rule
    assert (e["name"], e["protocol"], e["backendPort"]) == ("TestEndpointConfig.0", "udp", 64444)
    sdk = client.get_pool(pool_id).network_configuration
    assert sdk.dynamic_vnet_assignment_scope == "none" and sdk.enable_accelerated_networking is False
    raw.delete(f"/pools/{pool_id}")


def test_accelerated_networking_is_kept(raw: Raw, uid: str) -> None:
    pool_id = f"acc-{uid}"
    assert (
        raw.post(
            "/pools", pool_body(pool_id, networkConfiguration={"enableAcceleratedNetworking": True})
        ).status_code
        == 201
    )
    net = raw.json(f"/pools/{pool_id}")["networkConfiguration"]
    assert net == {"dynamicVNetAssignmentScope": "none", "enableAcceleratedNetworking": True}


@pytest.mark.parametrize(
    "extra,operation",
    [
        (
            {
                "networkConfiguration": {
                    "subnetId": "/subscriptions/0/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
                }
            },
            "networkConfiguration.subnetId on pools",
        ),
        (
            {
                "networkConfiguration": {
                    "endpointConfiguration": {
                        "inboundNATPools": [
                            {
                                "name": "r",
                                "protocol": "tcp",
                                "backendPort": 22,
                                "frontendPortRangeStart": 1,
                                "frontendPortRangeEnd": 100,
                                "networkSecurityGroupRules": [
                                    {"priority": 150, "access": "deny", "sourceAddressPrefix": "*"}
                                ],
                            }
                        ]
                    }
                }
            },
            "networkSecurityGroupRules with access deny on pools",
        ),
        (
            {"networkConfiguration": {"publicIPAddressConfiguration": {"provision": "nopublicipaddresses"}}},
            "networkConfiguration.publicIPAddressConfiguration on pools",
        ),
        (
            {
                "virtualMachineConfiguration": {
                    "imageReference": {
                        "publisher": "canonical",
                        "offer": "0001-com-ubuntu-server-jammy",
                        "sku": "22_04-lts",
                    },
                    "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                    "extensions": [{"name": "e", "publisher": "p", "type": "t"}],
                }
            },
            "virtualMachineConfiguration.extensions on pools",
        ),
        (
            {
                "virtualMachineConfiguration": {
                    "imageReference": {
                        "publisher": "canonical",
                        "offer": "0001-com-ubuntu-server-jammy",
                        "sku": "22_04-lts",
                    },
                    "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                    "containerConfiguration": {"type": "dockerCompatible"},
                }
            },
            "virtualMachineConfiguration.containerConfiguration on pools",
        ),
    ],
)
def test_pool_properties_a_local_node_cannot_honour_are_refused(
    raw: Raw, uid: str, extra: dict[str, Any], operation: str
) -> None:
    pool_id = f"no-{uid}"
    assert_error(raw.post("/pools", pool_body(pool_id, **extra)), 501, "NotImplemented", Operation=operation)
    assert raw.get(f"/pools/{pool_id}").status_code == 404


def test_application_licenses_are_refused(raw: Raw, uid: str) -> None:
    body = pool_body(f"lic-{uid}", applicationLicenses=["maya"])
    r = raw.post("/pools", body, api_version="2024-02-01.19.0")
    assert_error(r, 501, "NotImplemented", Operation="applicationLicenses on pools")


@pytest.mark.parametrize(
    "extra,operation",
    [
        ({"allowTaskPreemption": True}, "allowTaskPreemption on jobs"),
        ({"networkConfiguration": {"subnetId": "/subscriptions/0/x"}}, "networkConfiguration on jobs"),
    ],
)
def test_job_properties_not_honoured_are_refused(
    raw: Raw, uid: str, extra: dict[str, Any], operation: str
) -> None:
    body = {"id": f"j-{uid}", "poolInfo": {"poolId": "any"}, **extra}
    assert_error(raw.post("/jobs", body), 501, "NotImplemented", Operation=operation)


# --- counts, routes -----------------------------------------------------------------------------------------


def test_task_counts_metadata(client: BatchClient, raw: Raw, uid: str) -> None:
    job_id = f"tc-{uid}"
    create_pool(client, f"tcpool-{uid}", nodes=0)
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=f"tcpool-{uid}")))
    body = raw.json(f"/jobs/{job_id}/taskcounts")
    assert body["odata.metadata"].endswith("/$metadata#taskcountsresult/@Element")
    assert client.get_job_task_counts(job_id).task_counts.active == 0


@pytest.mark.parametrize(
    "method,path",
    [("GET", CERT), ("DELETE", CERT), ("POST", CERT + "/canceldelete")],
)
def test_certificate_entity_uris_are_routed(raw: Raw, method: str, path: str) -> None:
    # the recorded certificate is not in this account: the entity URI is routed and answers as the service would
    assert_error(raw.request(method, path), 404, "CertificateNotFound")


def test_certificate_entity_uri_bad_input(raw: Raw) -> None:
    assert_error(raw.request("PATCH", CERT), 405, "UnsupportedHttpVerb")
    assert_error(raw.request("GET", CERT + "/canceldelete"), 405, "UnsupportedHttpVerb")
    assert_error(raw.get("/certificates(sha1)"), 400, "InvalidUri")
    assert_error(raw.get("/certificates(thumbprint=abc)"), 400, "InvalidUri")


def test_pool_etag_changes_only_on_client_writes(client: BatchClient, raw: Raw, uid: str) -> None:
    """Allocation progress (resizing -> steady, nodes joining) keeps the pool's ETag; stopresize returns it."""
    path = f"/pools/etag-{uid}"
    created = raw.post("/pools", pool_body(f"etag-{uid}")).headers["ETag"]
    steady = wait_for(lambda: (b := raw.json(path))["allocationState"] == "steady" and b, 30)
    assert steady["eTag"] == created
    resized = raw.post(f"{path}/resize", {"targetDedicatedNodes": 1}).headers["ETag"]
    assert resized != created
    wait_idle_nodes(client, f"etag-{uid}", 1)
    grown = wait_for(lambda: (b := raw.json(path))["allocationState"] == "steady" and b, 30)
    assert (grown["currentDedicatedNodes"], grown["eTag"]) == (1, resized)
    r = raw.post(f"{path}/stopresize")
    assert r.status_code == 202 and r.headers["ETag"] == resized
    raw.delete(path)


def test_patched_user_accounts_read_back_as_the_service_shows_them(
    client: BatchClient, raw: Raw, uid: str
) -> None:
    pool_id = f"users-{uid}"
    _windows_pool(client, pool_id, 0)
    accounts = [
        {"name": "test1", "password": "pw1"},
        {"name": "test3", "password": "pw3", "elevationLevel": "admin"},
        {"name": "test4", "password": "pw4", "linuxUserConfiguration": {"sshPrivateKey": "AAAA=="}},
    ]
    r = raw.request("PATCH", f"/pools/{pool_id}", json_body={"userAccounts": accounts})
    assert r.status_code == 200, r.text()
    got = raw.json(f"/pools/{pool_id}")["userAccounts"]
    assert got == [
        {"name": "test1", "elevationLevel": "nonadmin", "windowsUserConfiguration": {"loginMode": "batch"}},
        {"name": "test3", "elevationLevel": "admin", "windowsUserConfiguration": {"loginMode": "batch"}},
        {"name": "test4", "elevationLevel": "nonadmin", "windowsUserConfiguration": {"loginMode": "batch"}},
    ]
    assert "pw1" not in raw.get(f"/pools?$filter=id eq '{pool_id}'").text()
    raw.delete(f"/pools/{pool_id}")


def test_data_disk_defaults(raw: Raw, uid: str) -> None:
    pool_id = f"disk-{uid}"
    body = pool_body(pool_id)
    body["virtualMachineConfiguration"]["dataDisks"] = [{"lun": 0, "diskSizeGB": 50}]
    assert raw.post("/pools", body).status_code == 201
    (disk,) = raw.json(f"/pools/{pool_id}")["virtualMachineConfiguration"]["dataDisks"]
    assert disk == {
        "lun": 0,
        "caching": "none",
        "diskSizeGB": 50,
        "managedDisk": {"storageAccountType": "standard_lrs"},
    }
    raw.delete(f"/pools/{pool_id}")


def test_vm_configuration_casing_and_defaults(raw: Raw, client: BatchClient, uid: str) -> None:
    """What the service echoes differently from what was sent (recorded with az and the Python SDK)."""
    pool_id = f"vmc-{uid}"
    body = pool_body(pool_id)
    body["virtualMachineConfiguration"].update(
        {
            "osDisk": {
                "caching": "readwrite",
                "managedDisk": {"securityProfile": {"securityEncryptionType": "VMGuestStateOnly"}},
            },
            "securityProfile": {
                "securityType": "trustedLaunch",
                "encryptionAtHost": True,
                "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
            },
            "nodePlacementConfiguration": {"policy": "zonal"},
        }
    )
    assert raw.post("/pools", body).status_code == 201, body
    vm = raw.json(f"/pools/{pool_id}")["virtualMachineConfiguration"]
    assert vm["osDisk"] == {
        "caching": "ReadWrite",
        "managedDisk": {
            "securityProfile": {"securityEncryptionType": "VMGuestStateOnly"},
            "storageAccountType": "standard_lrs",
        },
        "ephemeralOSDiskSettings": {},
    }
    assert vm["securityProfile"]["securityType"] == "trustedlaunch"
    assert vm["nodePlacementConfiguration"] == {"policy": "Zonal"}
    sdk = client.get_pool(pool_id).virtual_machine_configuration
    assert sdk.security_profile.security_type.lower() == "trustedlaunch"  # SDK enums are case-insensitive
    raw.delete(f"/pools/{pool_id}")


def test_patched_vm_size_is_lower_case(raw: Raw, uid: str) -> None:
    pool_id = f"size-{uid}"
    assert raw.post("/pools", pool_body(pool_id)).status_code == 201
    r = raw.request(
        "PATCH",
        f"/pools/{pool_id}",
        json_body={"vmSize": "STANDARD_D2S_V3", "taskSchedulingPolicy": {"nodeFillType": "pack"}},
    )
    assert r.status_code == 200, r.text()
    got = raw.json(f"/pools/{pool_id}")
    assert (got["vmSize"], got["taskSchedulingPolicy"]["nodeFillType"]) == ("standard_d2s_v3", "Pack")
    raw.delete(f"/pools/{pool_id}")


def test_supported_images_page_through_every_image(client: BatchClient, raw: Raw) -> None:
    everything = raw.json("/supportedimages")["value"]
    paged = list(client.list_supported_images(max_results=3))  # the SDK follows odata.nextLink
    assert len(paged) == len(everything) > 3
    key = [(i.node_agent_sku_id, i.image_reference.offer, i.image_reference.sku) for i in paged]
    assert len(set(key)) == len(key)


def test_resize_timeout_under_five_minutes_is_refused(raw: Raw, uid: str) -> None:
    pool_id = f"rt-{uid}"
    bad = raw.post("/pools", pool_body(pool_id, resizeTimeout="PT4M59S"))
    assert_error(bad, 400, "InvalidPropertyValue", PropertyName="resizeTimeout", PropertyValue="PT4M59S")
    assert raw.post("/pools", pool_body(pool_id, resizeTimeout="PT5M")).status_code == 201
    r = raw.post(f"/pools/{pool_id}/resize", {"targetDedicatedNodes": 0, "resizeTimeout": "PT1M"})
    assert_error(r, 400, "InvalidPropertyValue", PropertyName="resizeTimeout")
    assert raw.json(f"/pools/{pool_id}")["resizeTimeout"] == "PT5M"
    raw.delete(f"/pools/{pool_id}")
